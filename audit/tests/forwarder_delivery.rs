//! Delivery across agent restarts, against a hand-driven agent socket: frames an agent closed
//! without reading are resent to the next agent; frames it read are not sent twice.

use std::path::Path;
use std::time::Duration;

use boundary_audit::{
    AuditOptions, AuditPipeline, AuditProtocol, AuditRecord, Identity, RunContext, TraceContext,
};
use boundary_proto::frame::{Decoder, Payload};
use boundary_proto::pb::boundary_message;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

fn record(seq: i32) -> AuditRecord {
    AuditRecord {
        allowed: true,
        time: chrono::Utc::now(),
        method: "GET".into(),
        url: format!("https://example.com/{seq}"),
        matched_rule: Some("domain=example.com".into()),
        sequence_number: seq,
        trace: TraceContext::from_traceparent(None),
        requester: None,
        policy_generation: 1,
    }
}

fn options(socket: &Path) -> AuditOptions {
    let mut o = AuditOptions::new(RunContext::new("t", Identity::default()));
    o.socket_path = Some(socket.to_path_buf());
    o.protocol = AuditProtocol::V2;
    o.flush_interval = Duration::from_millis(50);
    o
}

/// Reads frames until the stream is idle for `idle` or ends; returns the sequence numbers.
async fn read_records(s: &mut UnixStream, idle: Duration) -> Vec<i32> {
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new();
    let mut seqs = Vec::new();
    loop {
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            if let Payload::V2(m) = f.decode_payload().unwrap() {
                if let Some(boundary_message::Msg::Logs(req)) = m.msg {
                    seqs.extend(req.logs.iter().map(|l| l.sequence_number));
                }
            }
        }
        match tokio::time::timeout(idle, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return seqs,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_an_agent_never_read_go_to_the_next_agent() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let pipe = AuditPipeline::start(options(&sock)).unwrap();
    let sink = pipe.sink();
    for seq in 0..100 {
        sink.record(record(seq));
    }
    // Agent 1 takes the connection, reads nothing, and goes away.
    let (first, _) = listener.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    // Agent 2 gets everything.
    let (mut second, _) = listener.accept().await.unwrap();
    for seq in 100..150 {
        sink.record(record(seq));
    }
    let shutdown = tokio::spawn(pipe.shutdown());
    let got = read_records(&mut second, Duration::from_secs(3)).await;
    let report = shutdown.await.unwrap();
    assert_eq!(got, (0..150).collect::<Vec<_>>());
    assert_eq!((report.sent, report.dropped), (150, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_an_agent_read_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let pipe = AuditPipeline::start(options(&sock)).unwrap();
    let sink = pipe.sink();
    for seq in 0..100 {
        sink.record(record(seq));
    }
    // Agent 1 reads everything sent so far, then exits.
    let (mut first, _) = listener.accept().await.unwrap();
    let one = read_records(&mut first, Duration::from_millis(500)).await;
    drop(first);
    for seq in 100..150 {
        sink.record(record(seq));
    }
    let (mut second, _) = listener.accept().await.unwrap();
    let shutdown = tokio::spawn(pipe.shutdown());
    let two = read_records(&mut second, Duration::from_secs(3)).await;
    shutdown.await.unwrap();
    assert_eq!(one, (0..100).collect::<Vec<_>>());
    assert_eq!(
        two,
        (100..150).collect::<Vec<_>>(),
        "nothing agent 1 read is repeated"
    );
}

/// While a batch is open its records wait in the queue (the task is not woken per record), but
/// a full frame (1000 records or 32 KiB) still goes out at once, not at the end of the flush
/// interval; only the last, partial batch waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_frames_go_out_without_waiting_for_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut o = options(&sock);
    o.flush_interval = Duration::from_secs(60);
    let pipe = AuditPipeline::start(o).unwrap();
    let sink = pipe.sink();
    // The forwarder connects once it has a batch to send.
    let agent = tokio::spawn(async move {
        let (mut agent, _) = listener.accept().await.unwrap();
        read_records(&mut agent, Duration::from_secs(3)).await
    });
    // The first records open a batch; the rest arrive while it is open.
    for seq in 0..10 {
        sink.record(record(seq));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for seq in 10..3000 {
        sink.record(record(seq));
        if seq % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    let got = tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the agent got nothing before the flush interval")
        .unwrap();
    // At least two full frames, in order, long before the 60 s flush interval ends.
    assert!(got.len() >= 2000, "only {} records arrived", got.len());
    assert_eq!(got, (0..got.len() as i32).collect::<Vec<_>>());
    drop(pipe);
}

/// Against an agent that takes the connection and never reads, with a small spool: every
/// record is counted once, as sent, spooled or dropped (records refused by the full spool were
/// counted twice: "dropped=290" for 145 DROPPED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_counts_each_dropped_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut o = options(&sock);
    o.spool = Some(boundary_audit::forwarder::SpoolConfig {
        dir: dir.path().join("spool"),
        max_bytes: 256 * 1024,
    });
    let pipe = AuditPipeline::start(o).unwrap();
    let sink = pipe.sink();
    const N: i32 = 400;
    let mut agent = None;
    for seq in 0..N {
        let mut r = record(seq);
        r.url = format!("https://example.com/{seq}/{}", "x".repeat(8 * 1024));
        sink.record(r);
        if agent.is_none() {
            // The forwarder connects once it has something to send.
            agent = Some(listener.accept().await.unwrap());
        }
        if seq % 50 == 0 {
            // Let the forwarder fill the socket and the spool as it goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = pipe.shutdown().await;
    drop(agent);
    assert!(report.dropped > 0, "the spool never filled: {report:?}");
    assert!(report.spooled > 0, "nothing was spooled: {report:?}");
    assert_eq!(
        report.sent + report.dropped + report.spooled,
        N as u64,
        "each record must be counted once: {report:?}"
    );
}
