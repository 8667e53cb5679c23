//! `--audit-log FILE`: every decision as one JSON object per line regardless of log level,
//! written per record, and reopened on SIGHUP so rotation loses nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use boundary_audit::{
    AuditOptions, AuditPipeline, AuditRecord, Identity, Requester, RunContext, TraceContext,
};

fn record(seq: i32) -> AuditRecord {
    let allowed = seq % 2 == 0;
    AuditRecord {
        allowed,
        time: chrono::Utc::now(),
        method: "PUT".into(),
        url: format!("https://example.com/{seq}?a=\"b\""),
        matched_rule: allowed.then(|| "domain=example.com".to_string()),
        sequence_number: seq,
        trace: TraceContext::from_traceparent(None),
        requester: None,
        policy_generation: 1 + seq as u64 / 3,
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn options(path: &Path) -> AuditOptions {
    let mut o = AuditOptions::new(RunContext::new(
        "claude",
        Identity {
            owner: Some("joe".into()),
            ..Default::default()
        },
    ));
    o.audit_log = Some(path.to_path_buf());
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_one_json_line_written_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let opts = options(&path);
    let session = opts.run.session_id.to_string();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut records: Vec<AuditRecord> = (0..20).map(record).collect();
    // Requests from a jail name their process; one that exited says so, without a pid.
    records[3].requester = Some(std::sync::Arc::new(Requester {
        pid: Some(7),
        name: "node".into(),
        exe: "/usr/bin/node".into(),
        args: "node -e x".into(),
        parent: "sh".into(),
    }));
    records[4].requester = Some(std::sync::Arc::new(Requester::unknown("unknown (exited)")));
    for r in &records {
        sink.record(r.clone());
    }
    // Written per record: visible before shutdown.
    assert!(wait_for(Duration::from_secs(10), || read_lines(&path)
        .len()
        == 20));
    let report = pipe.shutdown().await;
    assert_eq!(report.file_dropped, 0);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 20);
    for (l, r) in lines.iter().zip(&records) {
        assert_eq!(l["msg"], "boundary_request");
        assert_eq!(l["sequence_number"], r.sequence_number);
        assert_eq!(l["decision"], if r.allowed { "allow" } else { "deny" });
        assert_eq!(l["http_url"], r.url.as_str());
        assert_eq!(l["http_method"], "PUT");
        assert_eq!(l["owner"], "joe");
        assert_eq!(l["session_id"], session.as_str());
        assert_eq!(l["trace"], r.trace.trace_id_hex().as_str());
        assert_eq!(l["span"], r.trace.span_id_hex().as_str());
        assert_eq!(l.get("matched_rule").is_some(), r.allowed);
        assert_eq!(l["confined_process_name"], "claude");
        match r.requester.as_deref() {
            None => assert!(l.get("process_name").is_none(), "{l}"),
            Some(p) => {
                assert_eq!(
                    l.get("process_pid").and_then(|v| v.as_u64()),
                    p.pid.map(u64::from)
                );
                assert_eq!(l["process_name"], p.name.as_str());
                assert_eq!(l["process_exe"], p.exe.as_str());
                assert_eq!(l["process_args"], p.args.as_str());
                assert_eq!(l["process_parent_name"], p.parent.as_str());
            }
        }
        assert_eq!(l["policy_generation"], r.policy_generation);
    }
    assert_eq!(lines[4]["process_exe"], "unknown (exited)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file_for_rotation_without_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let pipe = AuditPipeline::start(options(&path)).unwrap();
    let sink = pipe.sink();
    let mut seq = 0;
    for _ in 0..5 {
        sink.record(record(seq));
        seq += 1;
    }
    assert!(wait_for(Duration::from_secs(10), || read_lines(&path)
        .len()
        == 5));
    std::fs::rename(&path, &rotated).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    // Keep recording until the writer has moved to the new file.
    let moved = wait_for(Duration::from_secs(10), || {
        sink.record(record(seq));
        seq += 1;
        path.exists()
    });
    assert!(
        moved,
        "SIGHUP did not make the writer reopen {}",
        path.display()
    );
    for _ in 0..5 {
        sink.record(record(seq));
        seq += 1;
    }
    pipe.shutdown().await;
    let old = read_lines(&rotated);
    let new = read_lines(&path);
    let mut all: Vec<i64> = old
        .iter()
        .chain(&new)
        .map(|l| l["sequence_number"].as_i64().unwrap())
        .collect();
    all.sort();
    assert_eq!(
        all,
        (0..seq as i64).collect::<Vec<_>>(),
        "every record exactly once"
    );
    assert!(
        new.len() >= 5,
        "records after the reopen go to the new file"
    );
    assert_eq!(
        old[..5]
            .iter()
            .map(|l| l["sequence_number"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[tokio::test]
async fn unwritable_audit_log_is_a_clear_error() {
    let opts = options(Path::new("/nonexistent-dir/audit.jsonl"));
    let err = AuditPipeline::start(opts)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("/nonexistent-dir/audit.jsonl"), "{err}");
}
