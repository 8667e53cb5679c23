//! The audit forwarder against the real peer binaries: records pushed into
//! `AuditPipeline::sink()` (standing in for the proxy) → agent socket →
//! `boundary-agent-log-proxy` → DRPC → `boundary-coderd-sink`, whose lines are parsed with a
//! logfmt parser and checked field by field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundary_audit::fields::rfc3339_nano;
use boundary_audit::{
    AuditOptions, AuditPipeline, AuditProtocol, AuditRecord, AuditSink, Identity, RunContext,
    TraceContext,
};
use boundary_integration::coder::logfmt::{self, HumanLine};
use boundary_integration::coder::peers::{socket_in, LogProxyProcess, SinkProcess};

const SINK: &str = env!("CARGO_BIN_EXE_boundary-coderd-sink");
const PROXY: &str = env!("CARGO_BIN_EXE_boundary-agent-log-proxy");
const WAIT: Duration = Duration::from_secs(30);

fn identity() -> Identity {
    Identity {
        workspace_id: Some("f2bd4e9f-7e27-49fc-961e-be4d1c2aa987".into()),
        workspace_name: Some("some-task-c88d".into()),
        owner: Some("joe".into()),
        template_id: Some("0b8c2d4e-1111-4a5b-9c3d-222233334444".into()),
        template_version_id: Some("7a6b5c4d-5555-4e6f-8a9b-666677778888".into()),
        agent_name: Some("dev".into()),
    }
}

fn options(socket: Option<PathBuf>) -> AuditOptions {
    let mut o = AuditOptions::new(RunContext::new("claude", identity()));
    o.socket_path = socket;
    o.flush_interval = Duration::from_millis(200);
    o
}

/// A record like the proxy makes: even sequence numbers allowed, odd denied; every third
/// carries a caller `traceparent`.
fn record(seq: i32) -> AuditRecord {
    let allowed = seq % 2 == 0;
    let tp = format!(
        "00-{:032x}-{:016x}-01",
        0xabc000 + seq as u128,
        0x1000 + seq as u64
    );
    AuditRecord {
        allowed,
        time: chrono::Utc::now(),
        method: if seq % 3 == 0 { "POST" } else { "GET" }.into(),
        url: format!(
            "https://host{}.example.com:8443/v1/items/{seq}?q=a b&x=\"y\"",
            seq % 7
        ),
        matched_rule: allowed
            .then(|| format!("domain=host{}.example.com method=GET,POST", seq % 7)),
        sequence_number: seq,
        trace: TraceContext::from_traceparent((seq % 3 == 0).then_some(tp.as_str())),
        requester: None,
        policy_generation: 1,
    }
}

fn parse(lines: &[String]) -> Vec<HumanLine> {
    lines
        .iter()
        .map(|l| logfmt::parse_human(l).unwrap_or_else(|e| panic!("unparsable line {l:?}: {e}")))
        .collect()
}

/// Checks that `lines` are exactly the records `sent`, each once, every field right.
fn check_lines(lines: &[HumanLine], sent: &[AuditRecord], run: &RunContext) {
    let by_seq: BTreeMap<i32, &AuditRecord> = sent.iter().map(|r| (r.sequence_number, r)).collect();
    let mut seen = BTreeMap::new();
    for l in lines {
        assert_eq!(l.level, "info");
        assert_eq!(l.logger, "coderd.agentrpc");
        assert_eq!(l.message, "boundary_request");
        let seq: i32 = l.get("sequence_number").unwrap().parse().unwrap();
        *seen.entry(seq).or_insert(0) += 1;
        let r = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("unexpected sequence number {seq}"));
        let want_keys: Vec<&str> = boundary_integration::coder::logfmt::SECTION7_FIELDS
            .iter()
            .copied()
            .filter(|k| r.allowed || *k != "matched_rule")
            .chain(["policy_generation"])
            .collect();
        assert_eq!(l.keys(), want_keys, "field order of record {seq}");
        let generation = r.policy_generation.to_string();
        assert_eq!(l.get("policy_generation"), Some(generation.as_str()));
        let id = &run.identity;
        assert_eq!(l.get("owner"), id.owner.as_deref());
        assert_eq!(l.get("workspace_name"), id.workspace_name.as_deref());
        assert_eq!(l.get("agent_name"), id.agent_name.as_deref());
        assert_eq!(l.get("workspace_id"), id.workspace_id.as_deref());
        assert_eq!(l.get("template_id"), id.template_id.as_deref());
        assert_eq!(
            l.get("template_version_id"),
            id.template_version_id.as_deref()
        );
        assert_eq!(
            l.get("session_id"),
            Some(run.session_id.to_string().as_str())
        );
        assert_eq!(
            l.get("decision"),
            Some(if r.allowed { "allow" } else { "deny" })
        );
        assert_eq!(l.get("http_method"), Some(r.method.as_str()));
        assert_eq!(l.get("http_url"), Some(r.url.as_str()));
        assert_eq!(l.get("event_time"), Some(rfc3339_nano(r.time).as_str()));
        assert_eq!(l.get("matched_rule"), r.matched_rule.as_deref());
        assert_eq!(l.get("trace"), Some(r.trace.trace_id_hex().as_str()));
        assert_eq!(l.get("span"), Some(r.trace.span_id_hex().as_str()));
        uuid::Uuid::parse_str(l.get("request_id").unwrap()).expect("request_id is a UUID");
    }
    let missing: Vec<i32> = by_seq
        .keys()
        .filter(|s| !seen.contains_key(s))
        .copied()
        .collect();
    let dup: Vec<i32> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(dup.is_empty(), "records delivered twice: {dup:?}");
    assert_eq!(lines.len(), sent.len());
}

struct Rig {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    sink: SinkProcess,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    Rig {
        _dir: dir,
        socket,
        sink,
    }
}

fn proxy(r: &Rig, v1_only: bool) -> LogProxyProcess {
    LogProxyProcess::spawn(Path::new(PROXY), &r.socket, &r.sink.addr, v1_only, 100).unwrap()
}

async fn push_paced(
    sink: &Arc<dyn AuditSink>,
    range: std::ops::Range<i32>,
    out: &mut Vec<AuditRecord>,
) {
    for seq in range {
        let r = record(seq);
        out.push(r.clone());
        sink.record(r);
        if seq % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_once_with_every_field() {
    let r = rig();
    let _p = proxy(&r, false);
    let opts = options(Some(r.socket.clone()));
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut sent = Vec::new();
    push_paced(&sink, 0..500, &mut sent).await;
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (500, 0));
    assert!(!report.fell_back_to_v1);
    let lines = r.sink.wait_for_lines(500, WAIT);
    check_lines(&parse(&lines), &sent, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_agent_gets_every_record_after_auto_falls_back_to_v1() {
    let r = rig();
    let p = proxy(&r, true);
    let opts = options(Some(r.socket.clone()));
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut sent = Vec::new();
    push_paced(&sink, 0..300, &mut sent).await;
    let report = pipe.shutdown().await;
    assert!(report.fell_back_to_v1, "auto must detect the v1-only agent");
    assert_eq!((report.sent, report.dropped), (300, 0));
    let lines = r.sink.wait_for_lines(300, WAIT);
    check_lines(&parse(&lines), &sent, &run);
    // The v1-only agent closed exactly one connection (the probe), not one per frame.
    let closes = p
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("v1-only"))
        .count();
    assert_eq!(closes, 1, "{:?}", p.stderr_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_v1_never_sends_tag_2() {
    let r = rig();
    let p = proxy(&r, true);
    let mut opts = options(Some(r.socket.clone()));
    opts.protocol = AuditProtocol::V1;
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut sent = Vec::new();
    push_paced(&sink, 0..50, &mut sent).await;
    let report = pipe.shutdown().await;
    assert!(!report.fell_back_to_v1);
    let lines = r.sink.wait_for_lines(50, WAIT);
    check_lines(&parse(&lines), &sent, &run);
    assert!(p.stderr_lines().iter().all(|l| !l.contains("v1-only")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_created_two_seconds_late_is_used() {
    let r = rig();
    let opts = options(Some(r.socket.clone()));
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut sent = Vec::new();
    push_paced(&sink, 0..100, &mut sent).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _p = proxy(&r, false);
    push_paced(&sink, 100..200, &mut sent).await;
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (200, 0));
    let lines = r.sink.wait_for_lines(200, WAIT);
    check_lines(&parse(&lines), &sent, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_and_restarted_mid_run_loses_nothing() {
    let r = rig();
    let mut p = proxy(&r, false);
    let opts = options(Some(r.socket.clone()));
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut sent = Vec::new();
    push_paced(&sink, 0..150, &mut sent).await;
    // Let the first batches reach coderd, then kill the agent while records keep coming.
    r.sink.wait_for_lines(1, WAIT);
    p.kill();
    push_paced(&sink, 150..300, &mut sent).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _p2 = proxy(&r, false);
    push_paced(&sink, 300..400, &mut sent).await;
    let report = pipe.shutdown().await;
    assert_eq!(report.dropped, 0);
    let lines = r.sink.wait_for_lines(400, WAIT);
    check_lines(&parse(&lines), &sent, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_last_partial_batch_at_once() {
    let r = rig();
    let _p = proxy(&r, false);
    let mut opts = options(Some(r.socket.clone()));
    // A batch would otherwise wait a minute: shutdown must not.
    opts.flush_interval = Duration::from_secs(60);
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let sent: Vec<AuditRecord> = (0..3).map(record).collect();
    for s in &sent {
        sink.record(s.clone());
    }
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (3, 0));
    let lines = r.sink.wait_for_lines(3, WAIT);
    check_lines(&parse(&lines), &sent, &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_are_counted_and_reported_to_the_agent() {
    let r = rig();
    let mut opts = options(Some(r.socket.clone()));
    opts.queue_size = 50;
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    // No agent yet: the queue fills at 50 and the rest are dropped.
    for seq in 0..80 {
        sink.record(record(seq));
    }
    let mut p = proxy(&r, false);
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (50, 30));
    let lines = r.sink.wait_for_lines(50, WAIT);
    assert_eq!(lines.len(), 50);
    let seqs: Vec<i32> = parse(&lines)
        .iter()
        .map(|l| l.get("sequence_number").unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<_>>(),
        "the first 50 are kept, in order"
    );
    // The agent learnt of the 30 drops through a tag-2 BoundaryStatus.
    p.terminate().unwrap();
    let reported: i64 = p
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("boundary reported dropped records"))
        .filter_map(|l| {
            let fields = logfmt::parse(l.split_once("records ").unwrap().1).ok()?;
            fields
                .into_iter()
                .find(|(k, _)| k == "dropped_channel_full")
                .map(|(_, v)| v.parse::<i64>().unwrap())
        })
        .sum();
    assert_eq!(reported, 30, "{:?}", p.stderr_lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_big_for_a_frame_is_truncated_not_dropped() {
    let r = rig();
    let _p = proxy(&r, false);
    let opts = options(Some(r.socket.clone()));
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let mut big = record(0);
    big.url = format!("https://example.com/{}", "a".repeat(200_000));
    sink.record(big);
    sink.record(record(1));
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (2, 0));
    let lines = parse(&r.sink.wait_for_lines(2, WAIT));
    assert_eq!(lines.len(), 2);
    let url = lines[0].get("http_url").unwrap();
    assert!(url.starts_with("https://example.com/aaaa"));
    assert!(
        url.ends_with("...[truncated]"),
        "{}",
        &url[url.len() - 30..]
    );
    assert!(url.len() > 30_000 && url.len() < 32_768);
    assert_eq!(lines[1].get("sequence_number"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_at_shutdown_does_not_wait_for_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Some(dir.path().join("absent.sock")));
    opts.shutdown_timeout = Duration::from_secs(60);
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    for seq in 0..10 {
        sink.record(record(seq));
    }
    let start = Instant::now();
    let report = pipe.shutdown().await;
    assert_eq!((report.sent, report.dropped), (0, 10));
    // Liveness bound, far from the 60 s timeout: not a speed assertion.
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// 100,000 records through the forwarder into the real agent log proxy and coderd sink;
/// prints the throughput for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_all_arrive() {
    const N: i32 = 100_000;
    let r = rig();
    let _p =
        LogProxyProcess::spawn(Path::new(PROXY), &r.socket, &r.sink.addr, false, 10_000).unwrap();
    let mut opts = options(Some(r.socket.clone()));
    opts.queue_size = N as usize;
    // Room for a slow CI machine: this test checks counts, not speed.
    opts.shutdown_timeout = Duration::from_secs(120);
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let sent: Vec<AuditRecord> = (0..N).map(record).collect();
    let start = Instant::now();
    for r in &sent {
        sink.record(r.clone());
    }
    let produced = start.elapsed();
    let report = pipe.shutdown().await;
    let forwarded = start.elapsed();
    assert_eq!((report.sent, report.dropped), (N as u64, 0));
    let lines = r.sink.wait_for_lines(N as usize, Duration::from_secs(120));
    let end_to_end = start.elapsed();
    check_lines(&parse(&lines), &sent, &run);
    eprintln!(
        "THROUGHPUT proxy side: {N} sink.record calls in {:.2?}; forwarder: all written to the \
         agent socket after {:.2?} ({:.0} records/s); end to end to coderd-sink lines: {:.2?} \
         ({:.0} records/s)",
        produced,
        forwarded,
        N as f64 / forwarded.as_secs_f64(),
        end_to_end,
        N as f64 / end_to_end.as_secs_f64()
    );
}

/// The agent's end read slowly: `chunk` bytes every `every`, frames decoded; returns the
/// sequence numbers of the records received, in order, when boundary closes the connection.
fn slow_agent(socket: &Path, chunk: usize, every: Duration) -> std::thread::JoinHandle<Vec<i32>> {
    use boundary_proto::frame::{self, Payload};
    use boundary_proto::pb::boundary_message::Msg;
    use std::io::Read;
    let l = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(every);
        }
        let mut seqs = Vec::new();
        for f in frame::decode_all(&bytes).unwrap() {
            let logs = match f.decode_payload().unwrap() {
                Payload::V1(req) => req.logs,
                Payload::V2(m) => match m.msg {
                    Some(Msg::Logs(req)) => req.logs,
                    _ => continue,
                },
            };
            seqs.extend(logs.iter().map(|l| l.sequence_number));
        }
        seqs
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_agent_with_a_tiny_queue_gets_every_record_through_the_spool_none_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let agent = slow_agent(&socket, 4096, Duration::from_millis(2));
    let mut opts = options(Some(socket));
    opts.queue_size = 16;
    opts.shutdown_timeout = Duration::from_secs(120);
    opts.spool = Some(boundary_audit::forwarder::SpoolConfig {
        dir: dir.path().join("spool"),
        max_bytes: 64 << 20,
    });
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    // Far more, far faster than the agent reads and the queue holds: they wait on disk.
    const N: i32 = 20_000;
    for seq in 0..N {
        sink.record(record(seq));
    }
    let report = pipe.shutdown().await;
    assert_eq!((report.dropped, report.spooled), (0, 0), "{report:?}");
    assert_eq!(report.sent, N as u64, "{report:?}");
    let seqs = tokio::task::spawn_blocking(move || agent.join().unwrap())
        .await
        .unwrap();
    assert_eq!(seqs.len(), N as usize, "every record, once");
    assert!(seqs.iter().copied().eq(0..N), "in sequence order");
}
