//! `--pprof`: a loopback-only diagnostics endpoint. `GET /metrics` serves the Prometheus text
//! format (requests by decision, upstream failures by kind, audit records queued, spooled,
//! forwarded and dropped, open connections, decision and upstream-connect latency); `GET
//! /debug/stats` serves plain-text process figures (requests decided, open descriptors,
//! memory, threads). The flag keeps the name Coder's boundary uses (which serves Go pprof
//! profiles there); these figures answer the question pprof is used for here: is the proxy
//! healthy and is anything leaking.

use std::sync::Arc;

use std::fmt::Write;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use boundary_audit::forwarder::ForwarderStats;
use boundary_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Binds 127.0.0.1:port (never a public address) and serves until the task is dropped.
/// `audit` is the forwarder's counters (None when forwarding is off: they read 0).
pub async fn serve(
    port: u16,
    proxy: Arc<Proxy>,
    audit: Option<Arc<ForwarderStats>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot bind the statistics endpoint on 127.0.0.1:{port}; choose another --pprof-port"))?;
    // A jail allowed a name mapped to loopback (`--resolve dev=127.0.0.1`) must not read
    // boundary's own figures through the proxy: requests to this address are refused as
    // requests to the proxy itself are.
    if let Ok(addr) = listener.local_addr() {
        proxy.add_listen_addr(addr);
    }
    tracing::info!(%port, "diagnostics on http://127.0.0.1:{port}/metrics and /debug/stats");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, kind, body) = if head.starts_with("GET /metrics ") {
                    ("200 OK", PROMETHEUS, metrics(&proxy, audit.as_deref()))
                } else if head.starts_with("GET /debug/stats ") {
                    ("200 OK", "text/plain", figures(&proxy))
                } else {
                    let hint = "try GET /metrics or GET /debug/stats\n".to_string();
                    ("404 Not Found", "text/plain", hint)
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    }))
}

/// The figures, one `name value` per line.
fn figures(proxy: &Proxy) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    format!(
        "requests_decided {}\nopen_fds {}\nrss {}\nthreads {}\n",
        proxy.next_sequence_number(),
        fds,
        field("VmRSS:"),
        field("Threads:")
    )
}

/// The content type of the Prometheus text format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every figure in the Prometheus text format: the proxy's, then the audit forwarder's.
fn metrics(proxy: &Proxy, audit: Option<&ForwarderStats>) -> String {
    let mut out = String::new();
    let (m, clients) = proxy.metrics();
    m.render(&mut out, clients);
    let n = |f: fn(&ForwarderStats) -> u64| audit.map_or(0, f);
    let queued = n(|s| s.queued.load(Ordering::SeqCst) as u64);
    let spooled = n(|s| s.spooled.load(Ordering::SeqCst));
    let forwarded = n(|s| s.sent.load(Ordering::SeqCst));
    let full = n(|s| s.dropped_channel_full.load(Ordering::SeqCst));
    let other = n(|s| s.dropped_batch_full.load(Ordering::SeqCst));
    let _ = writeln!(
        out,
        "# HELP boundary_audit_records_queued Audit records waiting in memory for the agent.\n\
         # TYPE boundary_audit_records_queued gauge\n\
         boundary_audit_records_queued {queued}\n\
         # HELP boundary_audit_records_spooled_total Audit records written to the disk spool.\n\
         # TYPE boundary_audit_records_spooled_total counter\n\
         boundary_audit_records_spooled_total {spooled}\n\
         # HELP boundary_audit_records_forwarded_total Audit records written to the agent.\n\
         # TYPE boundary_audit_records_forwarded_total counter\n\
         boundary_audit_records_forwarded_total {forwarded}\n\
         # HELP boundary_audit_records_dropped_total Audit records dropped, by reason.\n\
         # TYPE boundary_audit_records_dropped_total counter\n\
         boundary_audit_records_dropped_total{{reason=\"queue_full\"}} {full}\n\
         boundary_audit_records_dropped_total{{reason=\"spool_full_or_stopped\"}} {other}"
    );
    out
}
