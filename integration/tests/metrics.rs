//! `/metrics` during a jailed run, scraped from outside the jail and read with the Prometheus
//! text-format parser of the Python registry's `prometheus_client` (installed by
//! scripts/test.sh): one allowed request, one denied, one allowed whose origin refuses the
//! connection; the figures say exactly that, and every audit record is accounted for.
//!
//! Needs root (nsjail), `cargo build -p boundary`, curl, python3 with prometheus_client.

mod nsjail_common;
use nsjail_common::*;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// Scrapes `/metrics` on 127.0.0.1:port and parses it with prometheus_client: the samples as
/// `name{label="value",...}` (labels sorted) to value.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10) as r:
    ctype = r.headers["content-type"]
    text = r.read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps({"content_type": ctype, "samples": out}))
"#;

fn scrape(port: u16) -> (String, std::collections::BTreeMap<String, f64>) {
    let out = std::process::Command::new("python3")
        .args(["-c", SCRAPE, &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scraping /metrics failed (is prometheus_client installed? pip install \
         prometheus-client): {}",
        text(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = v["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    (v["content_type"].as_str().unwrap().to_string(), samples)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_count_what_a_jailed_run_did() {
    require_root().expect("this test needs root (CI runs as root): it starts nsjail");
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let pprof = free_port().to_string();
    // Nothing listens there: an allowed request to it fails to connect.
    let closed = free_port();
    let mut flags = fx.flags(&["domain=fixture.test", "domain=closed.test"]);
    flags.extend(
        [
            "--jail-type",
            "nsjail",
            "--resolve",
            "closed.test=127.0.0.1",
            "--pprof",
            "--pprof-port",
            &pprof,
        ]
        .map(String::from),
    );
    let script = format!(
        "curl -sS -o /dev/null --max-time 20 https://fixture.test:{https}/allowed.txt; \
         curl -sS -o /dev/null --max-time 20 http://denied.test/; \
         curl -sS -o /dev/null --max-time 20 http://closed.test:{closed}/; \
         echo READY; read done",
        https = fx.https_port
    );
    let mut child = boundary_cmd(As::Root, config.path(), &[])
        .args(&flags)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.any(|l| l.map(|l| l.trim() == "READY").unwrap_or(false));
    assert!(ready, "the jailed script did not get to READY");

    let port: u16 = pprof.parse().unwrap();
    // The endpoint listens on loopback only.
    let ss = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let listening = String::from_utf8_lossy(&ss.stdout).into_owned();
    let locals: Vec<&str> = listening
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(locals, [format!("127.0.0.1:{port}")], "{listening}");
    let accounted = |m: &std::collections::BTreeMap<String, f64>| {
        m["boundary_audit_records_queued{}"]
            + m["boundary_audit_records_spooled_total{}"]
            + m["boundary_audit_records_forwarded_total{}"]
            + m["boundary_audit_records_dropped_total{reason=\"queue_full\"}"]
            + m["boundary_audit_records_dropped_total{reason=\"spool_full_or_stopped\"}"]
    };
    // Audit records move from the queue to the spool a batch at a time: wait until all three
    // are in one place or the other (the sum is checked below either way).
    let (mut ctype, mut m) = scrape(port);
    for _ in 0..100 {
        if accounted(&m) == 3.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        (ctype, m) = scrape(port);
    }
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:#?}"));
    assert_eq!(
        get("boundary_requests_total{decision=\"allow\"}"),
        2.0,
        "{m:#?}"
    );
    assert_eq!(
        get("boundary_requests_total{decision=\"deny\"}"),
        1.0,
        "{m:#?}"
    );
    assert!(
        get("boundary_upstream_failures_total{kind=\"connect\"}") >= 1.0,
        "{m:#?}"
    );
    assert_eq!(get("boundary_upstream_failures_total{kind=\"tls\"}"), 0.0);
    assert_eq!(
        get("boundary_decision_duration_seconds_count{}"),
        3.0,
        "one decision latency per decided request"
    );
    assert_eq!(
        get("boundary_decision_duration_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert!(get("boundary_upstream_connect_duration_seconds_count{}") >= 1.0);
    assert!(get("boundary_client_connections{}") >= 0.0);
    assert!(get("boundary_upstream_connections{}") >= 0.0);
    assert_eq!(
        accounted(&m),
        3.0,
        "every audit record is queued, spooled, forwarded or dropped: {m:#?}"
    );
}

/// `--resolve NAME=127.0.0.1` lets a jail reach loopback services by that name; boundary's
/// own statistics endpoint is not one of them (it is refused like the proxy's own port),
/// while it keeps answering outside the jail.
#[test]
fn the_statistics_endpoint_is_not_reachable_from_the_jail() {
    require_root().expect("this test needs root (CI runs as root): it starts nsjail");
    let config = config_home(As::Root);
    let pprof = free_port();
    let script = format!(
        "curl -s -o /dev/null -w 'code %{{http_code}}\\n' --max-time 20 \
         http://stats.test:{pprof}/debug/stats; echo READY; read done"
    );
    let mut child = boundary_cmd(As::Root, config.path(), &[])
        .args(["--log-level", "error", "--resolve", "stats.test=127.0.0.1"])
        .args(["--allow", "domain=stats.test", "--pprof", "--pprof-port"])
        .arg(pprof.to_string())
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let printed = lines_until_ready(&mut child);
    let code = printed
        .iter()
        .find_map(|l| l.strip_prefix("code "))
        .map(str::trim);
    // The positive control: the endpoint is up and answers outside the jail.
    let (_, m) = scrape(pprof);
    assert!(m.contains_key("boundary_client_connections{}"), "{m:?}");
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(code, Some("403"), "the jail read boundary's statistics");
}
