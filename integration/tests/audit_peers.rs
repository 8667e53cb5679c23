//! The two peer binaries on their own: the agent log proxy's framing rules (several clients,
//! close on unknown tag / oversized / tag 2 when v1-only) and the coderd sink's output shapes
//! and limits, driven with raw frames and our DRPC client.

use std::path::Path;
use std::time::Duration;

use boundary_integration::coder::logfmt;
use boundary_integration::coder::peers::{socket_in, LogProxyProcess, SinkProcess};
use boundary_proto::drpc::{Client, DrpcError};
use boundary_proto::frame::{self, Tag};
use boundary_proto::pb::{
    boundary_log, boundary_message, BoundaryLog, BoundaryMessage, ReportBoundaryLogsRequest,
    ReportBoundaryLogsResponse,
};
use boundary_proto::REPORT_BOUNDARY_LOGS_RPC;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const SINK: &str = env!("CARGO_BIN_EXE_boundary-coderd-sink");
const PROXY: &str = env!("CARGO_BIN_EXE_boundary-agent-log-proxy");
const WAIT: Duration = Duration::from_secs(20);

fn request(seqs: std::ops::Range<i32>) -> ReportBoundaryLogsRequest {
    ReportBoundaryLogsRequest {
        logs: seqs
            .map(|s| BoundaryLog {
                allowed: s % 2 == 0,
                time: Some(prost_types::Timestamp {
                    seconds: 1_768_522_299,
                    nanos: 388_607_657,
                }),
                resource: Some(boundary_log::Resource::HttpRequest(
                    boundary_log::HttpRequest {
                        method: "GET".into(),
                        url: format!("https://dev.coder.com/{s}"),
                        matched_rule: if s % 2 == 0 {
                            "domain=dev.coder.com".into()
                        } else {
                            String::new()
                        },
                        truncated: false,
                    },
                )),
                sequence_number: s,
                trace_id: "478b2b45577307c4fd1bcfc64fad6ffb".into(),
                span_id: format!("{:016x}", s + 1),
                parent_span_id: String::new(),
                ..Default::default()
            })
            .collect(),
        session_id: "5b0f4a52-8d7e-4a39-9a51-0c6c0e6f2a11".into(),
        confined_process_name: "claude".into(),
        owner: "joe".into(),
        workspace_name: "some-task-c88d".into(),
        agent_name: "dev".into(),
        ..Default::default()
    }
}

fn seqs(lines: &[String]) -> Vec<i32> {
    let mut v: Vec<i32> = lines
        .iter()
        .map(|l| {
            logfmt::parse_human(l)
                .unwrap()
                .get("sequence_number")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

/// True when the proxy closed our connection (read returns EOF or reset).
async fn closed_by_peer(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_proxy_takes_both_tags_from_several_clients() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_in(dir.path());
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let _p = LogProxyProcess::spawn(Path::new(PROXY), &sock, &sink.addr, false, 100).unwrap();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let sock = sock.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = UnixStream::connect(&sock).await.unwrap();
            for f in 0..5 {
                let base = c * 100 + f * 10;
                let req = request(base..base + 10);
                let bytes = if f % 2 == 0 {
                    frame::encode_message(Tag::V1, &req).unwrap()
                } else {
                    frame::encode_message(
                        Tag::V2,
                        &BoundaryMessage {
                            msg: Some(boundary_message::Msg::Logs(req)),
                        },
                    )
                    .unwrap()
                };
                s.write_all(&bytes).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lines = sink.wait_for_lines(200, WAIT);
    let want: Vec<i32> = (0..4).flat_map(|c| c * 100..c * 100 + 50).collect();
    assert_eq!(seqs(&lines), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_proxy_closes_on_unknown_tag_and_oversized_frames() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_in(dir.path());
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let _p = LogProxyProcess::spawn(Path::new(PROXY), &sock, &sink.addr, false, 100).unwrap();

    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(&[3, 0, 0, 1, 0]).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "unknown tag must close");

    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(&[1, 0, 0x80, 0x01]).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "32769-byte frame must close");

    // A frame of exactly 32768 bytes is accepted (garbage payload: dropped, not closed), and
    // a good frame after it still arrives.
    let mut s = UnixStream::connect(&sock).await.unwrap();
    let mut big = bytes::BytesMut::new();
    frame::encode(Tag::V1, &vec![0xffu8; frame::MAX_PAYLOAD], &mut big).unwrap();
    s.write_all(&big).await.unwrap();
    s.write_all(&frame::encode_message(Tag::V1, &request(7..8)).unwrap())
        .await
        .unwrap();
    let lines = sink.wait_for_lines(1, WAIT);
    assert_eq!(seqs(&lines), vec![7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_only_log_proxy_closes_on_tag_2_and_accepts_tag_1() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_in(dir.path());
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let _p = LogProxyProcess::spawn(Path::new(PROXY), &sock, &sink.addr, true, 100).unwrap();
    let mut s = UnixStream::connect(&sock).await.unwrap();
    let v2 = BoundaryMessage {
        msg: Some(boundary_message::Msg::Logs(request(0..3))),
    };
    s.write_all(&frame::encode_message(Tag::V2, &v2).unwrap())
        .await
        .unwrap();
    assert!(closed_by_peer(&mut s).await);
    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(&frame::encode_message(Tag::V1, &request(3..6)).unwrap())
        .await
        .unwrap();
    let lines = sink.wait_for_lines(3, WAIT);
    assert_eq!(
        seqs(&lines),
        vec![3, 4, 5],
        "the tag-2 records were never forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_human_lines_match_coderd() {
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let mut c = Client::new(TcpStream::connect(&sink.addr).await.unwrap());
    let _: ReportBoundaryLogsResponse = c
        .call(REPORT_BOUNDARY_LOGS_RPC, &request(0..2))
        .await
        .unwrap();
    let lines = sink.wait_for_lines(2, WAIT);
    let allow = logfmt::parse_human(&lines[0]).unwrap();
    // The spec's field order, from the tests' own copy of it (not the audit crate's).
    assert_eq!(allow.keys(), logfmt::SECTION7_FIELDS);
    assert_eq!(
        allow.get("event_time"),
        Some("2026-01-16T00:11:39.388607657Z")
    );
    assert_eq!(allow.get("matched_rule"), Some("domain=dev.coder.com"));
    assert_eq!(allow.get("trace"), Some("478b2b45577307c4fd1bcfc64fad6ffb"));
    assert_eq!(allow.get("span"), Some("0000000000000001"));
    // Empty values are quoted, as slog does, so logfmt still sees the field.
    assert!(lines[0].contains(" workspace_id=\"\" "), "{}", lines[0]);
    let deny = logfmt::parse_human(&lines[1]).unwrap();
    assert_eq!(deny.get("decision"), Some("deny"));
    assert_eq!(deny.get("matched_rule"), None);
    assert_ne!(allow.get("request_id"), deny.get("request_id"));
    // Human timestamp shape: `YYYY-MM-DD HH:MM:SS.mmm`.
    let t = chrono::NaiveDateTime::parse_from_str(&allow.time, "%Y-%m-%d %H:%M:%S%.3f");
    assert!(t.is_ok(), "{}", allow.time);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_json_lines_have_slog_shape() {
    let sink = SinkProcess::spawn(Path::new(SINK), true).unwrap();
    let mut c = Client::new(TcpStream::connect(&sink.addr).await.unwrap());
    let _: ReportBoundaryLogsResponse = c
        .call(REPORT_BOUNDARY_LOGS_RPC, &request(0..2))
        .await
        .unwrap();
    let lines = sink.wait_for_lines(2, WAIT);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["msg"], "boundary_request");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["logger_names"], serde_json::json!(["coderd", "agentrpc"]));
    assert_eq!(v["trace"], "478b2b45577307c4fd1bcfc64fad6ffb");
    assert_eq!(v["fields"]["owner"], "joe");
    assert_eq!(v["fields"]["decision"], "allow");
    assert_eq!(v["fields"]["sequence_number"], 0);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert!(v["fields"].get("matched_rule").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_rejects_more_than_1000_records_like_coderd() {
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let mut c = Client::new(TcpStream::connect(&sink.addr).await.unwrap());
    let err = c
        .call::<_, ReportBoundaryLogsResponse>(REPORT_BOUNDARY_LOGS_RPC, &request(0..1001))
        .await
        .unwrap_err();
    assert!(matches!(err, DrpcError::Remote(_)), "{err}");
    let err = c
        .call::<_, ReportBoundaryLogsResponse>("/coder.agent.v2.Agent/Nope", &request(0..1))
        .await
        .unwrap_err();
    assert!(matches!(err, DrpcError::Remote(_)), "{err}");
    let _: ReportBoundaryLogsResponse = c
        .call(REPORT_BOUNDARY_LOGS_RPC, &request(0..1000))
        .await
        .unwrap();
    assert_eq!(sink.wait_for_lines(1000, WAIT).len(), 1000);
}
