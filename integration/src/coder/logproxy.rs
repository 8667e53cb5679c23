//! The workspace agent's side of the audit socket (docs/interop.md §5): accept boundary's frames
//! on a Unix socket from any number of clients, buffer up to 100 frames, forward each as one DRPC
//! unary `ReportBoundaryLogs` call to coderd.
//!
//! Like the agent: an unknown tag or an oversized frame closes that client's connection;
//! `v1_only` makes tag 2 count as unknown (an agent from before March 2026); a full buffer
//! drops the frame and counts it; `BoundaryStatus` messages only feed counters. Frames are
//! read one at a time straight off the socket (no read-ahead), so what boundary's kernel
//! buffer still holds when this process dies is what boundary resends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use boundary_proto::drpc::{self, DrpcError};
use boundary_proto::frame::{self, Payload, Tag, HEADER_LEN};
use boundary_proto::pb::boundary_message;
use boundary_proto::REPORT_BOUNDARY_LOGS_RPC;
use bytes::Bytes;
use prost::Message;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// coderd's DRPC address, `host:port`.
    pub coderd: String,
    pub v1_only: bool,
    /// Frames buffered for coderd (the agent uses 100).
    pub buffer: usize,
}

/// Counters named after the agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub batches_forwarded_total: AtomicU64,
    pub logs_forwarded_total: AtomicU64,
    pub batches_dropped_buffer_full: AtomicU64,
    pub batches_dropped_rpc_error: AtomicU64,
    pub batches_dropped_decode: AtomicU64,
    pub logs_dropped_boundary_channel_full: AtomicU64,
    pub logs_dropped_boundary_batch_full: AtomicU64,
    pub connections_closed_bad_frame: AtomicU64,
}

impl Metrics {
    /// One-line summary for logs.
    pub fn summary(&self) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "agent_boundary_log_proxy_batches_forwarded_total={} logs_forwarded={} \
             batches_dropped_total{{reason=buffer_full}}={} {{reason=rpc_error}}={} \
             {{reason=decode}}={} logs_dropped_total{{reason=boundary_channel_full}}={} \
             {{reason=boundary_batch_full}}={} connections_closed_bad_frame={}",
            l(&self.batches_forwarded_total),
            l(&self.logs_forwarded_total),
            l(&self.batches_dropped_buffer_full),
            l(&self.batches_dropped_rpc_error),
            l(&self.batches_dropped_decode),
            l(&self.logs_dropped_boundary_channel_full),
            l(&self.logs_dropped_boundary_batch_full),
            l(&self.connections_closed_bad_frame),
        )
    }
}

/// A request to forward: its bytes and record count.
struct Outgoing {
    req: Bytes,
    logs: usize,
}

/// Binds the socket (replacing a stale one) and runs until the process is stopped.
pub async fn run(cfg: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    if cfg.socket.exists() {
        std::fs::remove_file(&cfg.socket)
            .with_context(|| format!("removing stale socket {}", cfg.socket.display()))?;
    }
    let listener = UnixListener::bind(&cfg.socket)
        .with_context(|| format!("binding the audit socket {}", cfg.socket.display()))?;
    tracing::info!(socket = %cfg.socket.display(), coderd = %cfg.coderd, v1_only = cfg.v1_only, "agent log proxy listening");
    let (tx, rx) = mpsc::channel::<Outgoing>(cfg.buffer.max(1));
    tokio::spawn(forward(cfg.coderd.clone(), rx, metrics.clone()));
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("accepting on the audit socket")?;
        tokio::spawn(client(stream, cfg.v1_only, tx.clone(), metrics.clone()));
    }
}

async fn client(
    mut stream: UnixStream,
    v1_only: bool,
    tx: mpsc::Sender<Outgoing>,
    m: Arc<Metrics>,
) {
    let mut payload = Vec::with_capacity(frame::MAX_PAYLOAD);
    loop {
        let mut header = [0u8; HEADER_LEN];
        if let Err(e) = stream.read_exact(&mut header).await {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(error = %e, "audit client read failed");
            }
            return;
        }
        let (tag, len) = match frame::parse_header(header) {
            Ok((Tag::V2, _)) if v1_only => {
                tracing::warn!("closing audit connection: tag 2 frame and this agent is v1-only");
                m.connections_closed_bad_frame
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "closing audit connection on a bad frame");
                m.connections_closed_bad_frame
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        payload.resize(len, 0);
        if let Err(e) = stream.read_exact(&mut payload).await {
            tracing::warn!(error = %e, "audit connection ended inside a frame");
            return;
        }
        let f = frame::Frame {
            tag,
            payload: Bytes::copy_from_slice(&payload),
        };
        let out = match f.decode_payload() {
            Ok(Payload::V1(req)) => Outgoing {
                logs: req.logs.len(),
                req: f.payload.clone(),
            },
            Ok(Payload::V2(msg)) => match msg.msg {
                Some(boundary_message::Msg::Logs(req)) => Outgoing {
                    logs: req.logs.len(),
                    req: Bytes::from(req.encode_to_vec()),
                },
                Some(boundary_message::Msg::Status(s)) => {
                    m.logs_dropped_boundary_channel_full
                        .fetch_add(s.dropped_channel_full.max(0) as u64, Ordering::Relaxed);
                    m.logs_dropped_boundary_batch_full
                        .fetch_add(s.dropped_batch_full.max(0) as u64, Ordering::Relaxed);
                    tracing::info!(
                        dropped_channel_full = s.dropped_channel_full,
                        dropped_batch_full = s.dropped_batch_full,
                        "boundary reported dropped records"
                    );
                    continue;
                }
                None => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, "dropping an undecodable audit frame");
                m.batches_dropped_decode.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        if tx.try_send(out).is_err() {
            m.batches_dropped_buffer_full
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("coderd forwarding buffer full; dropping a batch");
        }
    }
}

async fn forward(addr: String, mut rx: mpsc::Receiver<Outgoing>, m: Arc<Metrics>) {
    let mut client: Option<drpc::Client<TcpStream>> = None;
    let mut backoff = Duration::from_millis(50);
    while let Some(out) = rx.recv().await {
        loop {
            if client.is_none() {
                match TcpStream::connect(&addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        client = Some(drpc::Client::new(s));
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot reach coderd; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected above");
            match c.unary(REPORT_BOUNDARY_LOGS_RPC, out.req.clone()).await {
                Ok(_) => {
                    m.batches_forwarded_total.fetch_add(1, Ordering::Relaxed);
                    m.logs_forwarded_total
                        .fetch_add(out.logs as u64, Ordering::Relaxed);
                    break;
                }
                Err(DrpcError::Remote(e)) => {
                    tracing::warn!(error = %e, "coderd rejected a batch; dropping it");
                    m.batches_dropped_rpc_error.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DRPC connection to coderd failed; reconnecting");
                    client = None;
                }
            }
        }
    }
}
