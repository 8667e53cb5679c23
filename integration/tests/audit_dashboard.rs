//! The Grafana dashboard: valid JSON, the panels the audit issue asks for, and every LogQL
//! query names only fields of coderd's `boundary_request` line (docs/interop.md §7), plus labels
//! its own `regexp` stage extracts. The host regexp is run on real sink lines.

use std::collections::BTreeSet;

use boundary_audit::fields::FIELD_ORDER;
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
    for v in ["owner", "workspace", "template", "datasource"] {
        assert!(vars.contains(v), "missing variable {v}");
    }
    for p in d["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["type"], "loki", "panel {}", p["title"]);
    }
    // Every query applies all three filters, so the variables filter every panel.
    let mut all = Vec::new();
    exprs(&d, &mut all);
    assert!(all.len() >= 4);
    for e in &all {
        for v in ["$owner", "$workspace", "$template"] {
            assert!(e.contains(v), "query does not filter on {v}: {e}");
        }
    }
}

#[test]
fn every_query_names_only_section_7_fields() {
    let allowed: BTreeSet<&str> = FIELD_ORDER.iter().copied().collect();
    let mut all = Vec::new();
    exprs(&dashboard(), &mut all);
    for e in &all {
        assert!(
            e.starts_with("{logger=\"coderd.agentrpc\"} |= \"boundary_request\" | logfmt")
                || e.contains("(count_over_time({logger=\"coderd.agentrpc\"} |= \"boundary_request\" | logfmt"),
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
    for (url, host) in [
        ("https://dev.coder.com", "dev.coder.com"),
        ("https://api.github.com:8443/repos?x=1", "api.github.com"),
        ("http://example.com/a b", "example.com"),
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
    }
}
