//! The Grafana dashboard: valid JSON, the panels the audit issue asks for plus everything the
//! official Agent Boundaries dashboard has (coder/observability v0.7.0, uid `agent-boundaries`:
//! filters for domain, owner, template id and template version id, a namespace selector, request
//! totals, top-20 allowed and denied domains, the most recent allowed and denied requests with
//! time, method, domain, path, owner, workspace name, template id and template version id), and
//! every LogQL query names only fields of coderd's `boundary_request` line (docs/interop.md §7),
//! plus labels its own `regexp` stage extracts. The domain/path regexp is run on real sink lines.

use std::collections::BTreeSet;

use boundary_audit::fields::{FIELD_ORDER, PROCESS_FIELDS};
use boundary_integration::coder::coderd::{fields_of, format_line, Format};
use boundary_proto::pb::{boundary_log, BoundaryLog, ReportBoundaryLogsRequest};
use regex::Regex;

const DASHBOARD: &str = include_str!("../../dashboards/boundary.json");

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    out.push(v.as_str().expect("expr is a string").to_string());
                } else {
                    exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("dashboards/boundary.json is valid JSON")
}

/// Label names a query reads after its parsers: filters, `by (...)`, `line_format` fields.
fn used_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let after_parse = expr
        .split_once("| logfmt")
        .expect("query parses with logfmt")
        .1;
    let filter = Regex::new(r"\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|==|=|>=|<=|>|<)").unwrap();
    for c in filter.captures_iter(after_parse) {
        names.insert(c[1].to_string());
    }
    let by = Regex::new(r"by\s*\(([^)]*)\)").unwrap();
    for c in by.captures_iter(expr) {
        for n in c[1].split(',') {
            names.insert(n.trim().to_string());
        }
    }
    let tmpl = Regex::new(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}").unwrap();
    for c in tmpl.captures_iter(expr) {
        names.insert(c[1].to_string());
    }
    names
}

/// Labels the query's own `regexp` stages create.
fn extracted(expr: &str) -> BTreeSet<String> {
    let cap = Regex::new(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>").unwrap();
    cap.captures_iter(expr).map(|c| c[1].to_string()).collect()
}

#[test]
fn dashboard_has_the_required_panels_and_filters() {
    let d = dashboard();
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Requests over time by decision",
        "Top denied hosts",
        "Top allowed hosts",
        "Recent denies",
        "Denied requests by owner and workspace",
        // The official dashboard's panels.
        "Request totals",
        "Top 20 allowed domains",
        "Top 20 denied domains",
        "Most recent allowed requests",
        "Most recent denied requests",
        // Issue 16: which program made the requests.
        "Requests and denies by process",
    ] {
        assert!(
            titles.contains(&want),
            "missing panel {want:?} in {titles:?}"
        );
    }
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in [
        "owner",
        "workspace",
        "template",
        "template_version",
        "domain",
        "namespace",
        "datasource",
    ] {
        assert!(vars.contains(v), "missing variable {v}");
    }
    for p in d["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["type"], "loki", "panel {}", p["title"]);
    }
    // Every query applies every filter, so the variables filter every panel.
    let mut all = Vec::new();
    exprs(&d, &mut all);
    assert!(all.len() >= 10);
    for e in &all {
        for v in [
            "owner=~\"$owner\"",
            "workspace_name=~\"$workspace\"",
            "template_id=~\"$template\"",
            "template_version_id=~\"$template_version\"",
            "host=~\"$domain\"",
            "namespace=~\"$namespace\"",
        ] {
            assert!(e.contains(v), "query does not filter with {v}: {e}");
        }
    }
    for (title, decision) in [
        ("Top 20 allowed domains", "allow"),
        ("Top 20 denied domains", "deny"),
    ] {
        let e = panel_expr(&d, title);
        assert!(e.starts_with("topk(20, sum by (host)"), "{e}");
        assert!(e.contains(&format!("decision=\"{decision}\"")), "{e}");
    }
    let e = panel_expr(&d, "Requests and denies by process");
    assert!(
        e.starts_with("sum by (process_name, decision) (count_over_time("),
        "{e}"
    );
    for (title, decision) in [
        ("Most recent allowed requests", "allow"),
        ("Most recent denied requests", "deny"),
    ] {
        let e = panel_expr(&d, title);
        assert!(e.contains(&format!("decision=\"{decision}\"")), "{e}");
        for field in [
            ".event_time",
            ".http_method",
            ".host",
            ".path",
            ".owner",
            ".workspace_name",
            ".template_id",
            ".template_version_id",
        ] {
            assert!(e.contains(field), "{title} lacks {field}: {e}");
        }
    }
}

fn panel_expr(d: &serde_json::Value, title: &str) -> String {
    let p = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title}"));
    p["targets"][0]["expr"].as_str().unwrap().to_string()
}

#[test]
fn every_query_names_only_section_7_fields() {
    // §7's fields, and our extension fields for the requesting process.
    let allowed: BTreeSet<&str> = FIELD_ORDER.iter().chain(&PROCESS_FIELDS).copied().collect();
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    for e in &all {
        let selector = "{namespace=~\"$namespace\", logger=\"coderd.agentrpc\"} |= \"boundary_request\" | logfmt";
        assert!(
            e.starts_with(selector) || e.contains(&format!("(count_over_time({selector}")),
            "query must select coderd.agentrpc boundary_request lines and parse logfmt: {e}"
        );
        let own = extracted(e);
        for name in used_names(e) {
            assert!(
                allowed.contains(name.as_str()) || own.contains(&name),
                "query uses {name:?}, which is not a §7 field: {e}"
            );
        }
    }
}

#[test]
fn host_regexp_extracts_the_host_from_real_sink_lines() {
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    let e = all
        .iter()
        .find(|e| e.contains("regexp"))
        .expect("a host query");
    // The LogQL string literal after `regexp`, unescaped.
    let lit = e.split_once("regexp \"").unwrap().1;
    let mut pattern = String::new();
    let mut chars = lit.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => pattern.push(chars.next().unwrap()),
            '"' => break,
            c => pattern.push(c),
        }
    }
    let re = Regex::new(&pattern).unwrap();
    for (url, host, path) in [
        ("https://dev.coder.com", "dev.coder.com", None),
        (
            "https://api.github.com:8443/repos?x=1",
            "api.github.com",
            Some("/repos"),
        ),
        ("http://example.com/a b", "example.com", Some("/a")),
        (
            "https://x.test/v1/messages#f",
            "x.test",
            Some("/v1/messages"),
        ),
    ] {
        let req = ReportBoundaryLogsRequest {
            logs: vec![BoundaryLog {
                allowed: false,
                resource: Some(boundary_log::Resource::HttpRequest(
                    boundary_log::HttpRequest {
                        method: "GET".into(),
                        url: url.into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            owner: "joe".into(),
            ..Default::default()
        };
        let line = format_line(&fields_of(&req)[0], Format::Human, chrono::Utc::now());
        let caps = re
            .captures(&line)
            .unwrap_or_else(|| panic!("no match in {line}"));
        assert_eq!(&caps["host"], host, "{line}");
        assert_eq!(caps.name("path").map(|m| m.as_str()), path, "{line}");
    }
}

/// The process fields the panel groups by: after coderd's fields on the sink's line, parsed
/// back by logfmt exactly, however the jailed process named itself; and a command line that
/// imitates other fields changes neither them nor the host the panels extract.
#[test]
fn process_fields_on_sink_lines_parse_back_and_forge_nothing() {
    let args = "curl \"x\" decision=allow http_url=https://forged.test/";
    let req = ReportBoundaryLogsRequest {
        logs: vec![BoundaryLog {
            allowed: false,
            resource: Some(boundary_log::Resource::HttpRequest(
                boundary_log::HttpRequest {
                    method: "GET".into(),
                    url: "https://real.test/p".into(),
                    ..Default::default()
                },
            )),
            process_pid: 7,
            process_name: "my prog".into(),
            process_exe: "/usr/bin/curl".into(),
            process_args: args.into(),
            process_parent_name: "sh".into(),
            ..Default::default()
        }],
        owner: "joe".into(),
        ..Default::default()
    };
    let line = format_line(&fields_of(&req)[0], Format::Human, chrono::Utc::now());
    let parsed = boundary_integration::coder::logfmt::parse_human(&line).unwrap();
    let want: Vec<&str> = boundary_integration::coder::logfmt::SECTION7_FIELDS
        .iter()
        .copied()
        .filter(|k| *k != "matched_rule")
        .chain(PROCESS_FIELDS)
        .collect();
    assert_eq!(parsed.keys(), want, "{line}");
    assert_eq!(parsed.get("decision"), Some("deny"), "{line}");
    assert_eq!(parsed.get("process_pid"), Some("7"));
    assert_eq!(parsed.get("process_name"), Some("my prog"));
    assert_eq!(parsed.get("process_args"), Some(args));
    assert_eq!(parsed.get("process_parent_name"), Some("sh"));
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    let e = all.iter().find(|e| e.contains("regexp")).unwrap();
    let lit = e.split_once("regexp \"").unwrap().1;
    let mut pattern = String::new();
    let mut chars = lit.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => pattern.push(chars.next().unwrap()),
            '"' => break,
            c => pattern.push(c),
        }
    }
    let caps = Regex::new(&pattern).unwrap().captures(&line).unwrap();
    assert_eq!(&caps["host"], "real.test", "{line}");
    // A record without a process (boundary outside a jail, or an older one) has none of them.
    let mut bare = req.clone();
    bare.logs[0].process_name.clear();
    let line = format_line(&fields_of(&bare)[0], Format::Human, chrono::Utc::now());
    assert!(!line.contains("process_"), "{line}");
}

/// The policy generation rides after the process fields on the sink's line (human and JSON),
/// and a record without one (an older boundary) has no such field.
#[test]
fn policy_generation_follows_on_sink_lines() {
    let mut req = ReportBoundaryLogsRequest {
        logs: vec![BoundaryLog {
            allowed: true,
            resource: Some(boundary_log::Resource::HttpRequest(
                boundary_log::HttpRequest {
                    method: "GET".into(),
                    url: "https://real.test/p".into(),
                    matched_rule: "domain=real.test".into(),
                    ..Default::default()
                },
            )),
            process_name: "curl".into(),
            policy_generation: 3,
            ..Default::default()
        }],
        ..Default::default()
    };
    let f = &fields_of(&req)[0];
    let line = format_line(f, Format::Human, chrono::Utc::now());
    let parsed = boundary_integration::coder::logfmt::parse_human(&line).unwrap();
    assert_eq!(parsed.keys().last(), Some(&"policy_generation"), "{line}");
    assert_eq!(parsed.get("policy_generation"), Some("3"), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&format_line(f, Format::Json, chrono::Utc::now())).unwrap();
    assert_eq!(json["fields"]["policy_generation"], 3, "{json}");
    req.logs[0].policy_generation = 0;
    let line = format_line(&fields_of(&req)[0], Format::Human, chrono::Utc::now());
    assert!(!line.contains("policy_generation"), "{line}");
}
