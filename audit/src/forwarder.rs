//! The agent-socket forwarder (INTEROP §5): records are batched into frames, written to the
//! Coder workspace agent's Unix socket, and never block the proxy.
//!
//! - **Batching.** A batch closes when the next record would push the tag-2 payload past
//!   32768 bytes, at 1000 records (coderd's limit), or `flush_interval` after its first
//!   record. Sizes are computed from the protobuf encoding, so frames are filled, not guessed.
//!   A single record too large for a frame has its URL (then rule, then method) shortened and
//!   marked (`...[truncated]` suffix, extension field `truncated`), never dropped.
//! - **Protocol.** `auto` opens each connection with a tag-2 frame and watches it for
//!   [`PROBE_WINDOW`]; if the agent closes it in that window it is an older agent: we switch
//!   to tag 1 for the rest of the run and send the records as tag 1. The probe frame is a
//!   `BoundaryStatus` (drops so far, usually zero), not records: so an older agent loses
//!   nothing, and an agent killed during the probe cannot make us resend records it already
//!   forwarded (which a records frame as probe would: no duplicates either way). Records wait
//!   at most one probe window per new connection. `v1` and `v2` force one tag.
//! - **Queue.** At most `queue_size` records accepted and not yet written to the agent (in
//!   the channel, the open batch or unsent frames); the proxy's `push` checks a counter and
//!   uses `try_send`, never waiting. Beyond the bound records are dropped and counted
//!   (`dropped_channel_full`, reported to the agent in a tag-2 `BoundaryStatus` as the number
//!   dropped since the last status), so memory stays bounded while the agent is away.
//! - **Delivery.** The agent never replies, so we ask the kernel: `TIOCOUTQ` on a Unix stream
//!   socket is the data the peer has not read yet. Frames stay "in flight" until it reaches 0.
//!   When the agent goes away, Linux says whether it left our data unread: a read then fails
//!   with ECONNRESET (frames unread: in-flight frames are resent on the next connection) or
//!   returns end of stream (it read everything: nothing is resent, so nothing is duplicated). Reconnects back off from 100 ms doubling to 5 s; a socket that appears after
//!   start is picked up by the next attempt.
//! - **Shutdown.** Everything queued is batched and written, waiting until the agent has read
//!   it, bounded by the caller's timeout. If the socket does not exist at all we give up at
//!   once (no agent, nothing to wait for); records are in the local logs either way.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boundary_proto::frame::{self, Tag, MAX_PAYLOAD};
use boundary_proto::pb::{
    boundary_log, boundary_message, BoundaryLog, BoundaryMessage, BoundaryStatus,
    ReportBoundaryLogsRequest,
};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::{AuditProtocol, AuditRecord, RunContext};

/// At most this many records per frame: coderd rejects larger requests.
pub const MAX_RECORDS_PER_FRAME: usize = 1000;
/// How long after the first tag-2 frame on a connection an agent closing it means "older
/// agent, speak v1". Older agents close as soon as they read the header.
pub const PROBE_WINDOW: Duration = Duration::from_millis(300);
/// First reconnect delay; doubles per failure.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Appended to a shortened URL or rule.
pub const TRUNCATION_MARKER: &str = "...[truncated]";
/// First delay before checking that in-flight frames were read; doubles while the agent is
/// slow, up to [`DELIVERY_POLL_MAX`], so a stalled agent does not keep us spinning.
const DELIVERY_POLL: Duration = Duration::from_millis(2);
const DELIVERY_POLL_MAX: Duration = Duration::from_millis(200);

/// Counters shared between the proxy-side sink and the task.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    /// Records taken into the queue.
    pub accepted: AtomicU64,
    /// Records refused because the queue was full.
    pub dropped_channel_full: AtomicU64,
    /// Records refused or abandoned for any other reason (after shutdown, undeliverable at
    /// shutdown).
    pub dropped_batch_full: AtomicU64,
    /// Records written to the agent and not taken back for resending.
    pub sent: AtomicU64,
    /// Records the agent has read (delivery confirmed by the kernel).
    pub delivered: AtomicU64,
    /// Frames written (including resends).
    pub frames_written: AtomicU64,
    /// True once `auto` fell back to tag 1.
    pub fell_back_to_v1: AtomicBool,
    /// Successful connections.
    pub connections: AtomicU64,
    /// Records accepted and not yet written once: the queue the size limit applies to.
    pub queued: AtomicUsize,
}

/// How to forward.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    pub socket_path: PathBuf,
    pub protocol: AuditProtocol,
    pub flush_interval: Duration,
    pub queue_size: usize,
}

/// The proxy-side handle: queue records, ask for shutdown.
pub struct Forwarder {
    tx: mpsc::Sender<AuditRecord>,
    stats: Arc<ForwarderStats>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    queue_size: usize,
}

impl Forwarder {
    /// Spawns the forwarding task on the current tokio runtime.
    pub fn start(cfg: ForwarderConfig, run: &RunContext) -> Self {
        let queue_size = cfg.queue_size.max(1);
        let (tx, rx) = mpsc::channel(queue_size);
        let (stx, srx) = oneshot::channel();
        let stats = Arc::new(ForwarderStats::default());
        let base = base_request(run);
        let task = tokio::spawn(run_task(cfg, base, rx, srx, stats.clone()));
        Self {
            tx,
            stats,
            shutdown: Some(stx),
            task: Some(task),
            queue_size,
        }
    }

    /// Queues a record without waiting; counts it as dropped when the queue is full.
    pub fn push(&self, record: AuditRecord) {
        let s = &self.stats;
        if s.queued.fetch_add(1, Ordering::SeqCst) >= self.queue_size {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            self.full(record.sequence_number);
            return;
        }
        match self.tx.try_send(record) {
            Ok(()) => {
                s.accepted.fetch_add(1, Ordering::SeqCst);
            }
            Err(mpsc::error::TrySendError::Full(r)) => {
                s.queued.fetch_sub(1, Ordering::SeqCst);
                self.full(r.sequence_number);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                s.queued.fetch_sub(1, Ordering::SeqCst);
                s.dropped_batch_full.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn full(&self, sequence_number: i32) {
        let n = self
            .stats
            .dropped_channel_full
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        if !n.is_power_of_two() {
            return;
        }
        if self.stats.connections.load(Ordering::SeqCst) == 0 {
            // No agent has ever been there (outside Coder): start-up already said so.
            tracing::debug!(
                dropped = n,
                sequence_number,
                "no Coder agent socket yet; audit records beyond the queue size are logged \
                 locally only"
            );
        } else {
            tracing::warn!(
                dropped = n,
                sequence_number,
                "audit queue to the Coder agent is full; dropping records (they are still in \
                 the local log); raise --audit-queue-size or check the agent"
            );
        }
    }

    /// Counters, live.
    pub fn stats(&self) -> &Arc<ForwarderStats> {
        &self.stats
    }

    /// Flushes everything queued, bounded by `timeout`; returns (sent, dropped).
    pub async fn shutdown(&mut self, timeout: Duration) -> (u64, u64) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "audit records could not all be delivered to the Coder agent within the \
                     shutdown timeout (--audit-shutdown-timeout)"
                );
            }
        }
        let s = &self.stats;
        let sent = s.sent.load(Ordering::SeqCst);
        let accepted = s.accepted.load(Ordering::SeqCst);
        let dropped = s.dropped_channel_full.load(Ordering::SeqCst)
            + s.dropped_batch_full.load(Ordering::SeqCst)
            + accepted.saturating_sub(sent);
        (sent, dropped)
    }
}

/// The per-run fields of every request (no logs yet). Identity strings are capped so the
/// fixed part can never crowd the records out of a frame.
fn base_request(run: &RunContext) -> ReportBoundaryLogsRequest {
    let cap = |v: &Option<String>| {
        let mut s = v.clone().unwrap_or_default();
        truncate_utf8(&mut s, 512);
        s
    };
    let mut name = run.confined_process_name.clone();
    truncate_utf8(&mut name, 512);
    let id = &run.identity;
    ReportBoundaryLogsRequest {
        logs: Vec::new(),
        session_id: run.session_id.to_string(),
        confined_process_name: name,
        workspace_id: cap(&id.workspace_id),
        workspace_name: cap(&id.workspace_name),
        owner: cap(&id.owner),
        template_id: cap(&id.template_id),
        template_version_id: cap(&id.template_version_id),
        agent_name: cap(&id.agent_name),
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

use crate::fields::hex;

/// The protobuf form of a record.
pub fn to_proto(r: &AuditRecord) -> BoundaryLog {
    BoundaryLog {
        allowed: r.allowed,
        time: Some(prost_types::Timestamp {
            seconds: r.time.timestamp(),
            nanos: r.time.timestamp_subsec_nanos() as i32,
        }),
        resource: Some(boundary_log::Resource::HttpRequest(
            boundary_log::HttpRequest {
                method: r.method.clone(),
                url: r.url.clone(),
                matched_rule: if r.allowed {
                    r.matched_rule.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                truncated: false,
            },
        )),
        sequence_number: r.sequence_number,
        trace_id: hex(&r.trace.trace_id),
        span_id: hex(&r.trace.span_id),
        parent_span_id: r.trace.parent_span_id.map(|p| hex(&p)).unwrap_or_default(),
    }
}

fn varint_len(v: usize) -> usize {
    prost::encoding::encoded_len_varint(v as u64)
}

/// Bytes a log adds to a request (field key, length, body).
fn entry_len(log: &BoundaryLog) -> usize {
    let l = log.encoded_len();
    1 + varint_len(l) + l
}

/// Size of the tag-2 payload wrapping a request of `req_len` bytes (the larger of the two
/// encodings, so a frame that fits as v2 also fits when resent as v1).
fn v2_len(req_len: usize) -> usize {
    1 + varint_len(req_len) + req_len
}

/// Shortens a record's strings until the request with only this record fits in one frame.
pub fn fit_record(log: &mut BoundaryLog, base_len: usize) {
    let fits = |log: &BoundaryLog| v2_len(base_len + entry_len(log)) <= MAX_PAYLOAD;
    while !fits(log) {
        let excess = v2_len(base_len + entry_len(log)) - MAX_PAYLOAD;
        let Some(boundary_log::Resource::HttpRequest(h)) = log.resource.as_mut() else {
            // Nothing variable left to shorten: the fixed fields always fit.
            return;
        };
        h.truncated = true;
        let target = [&mut h.url, &mut h.matched_rule, &mut h.method]
            .into_iter()
            .max_by_key(|s| s.len())
            .expect("three candidates");
        let keep = target
            .len()
            .saturating_sub(excess + TRUNCATION_MARKER.len() + 8);
        let before = target.len();
        if target.ends_with(TRUNCATION_MARKER) {
            target.truncate(target.len() - TRUNCATION_MARKER.len());
        }
        truncate_utf8(target, keep);
        target.push_str(TRUNCATION_MARKER);
        if target.len() >= before {
            // Nothing left to shorten; cannot happen with the capped fixed fields.
            return;
        }
    }
}

/// An encoded request ready to frame.
#[derive(Debug, Clone)]
struct Batch {
    req: Bytes,
    records: usize,
    /// Already taken off the queue count (written once before).
    dequeued: bool,
}

impl Batch {
    fn frame(&self, tag: Tag) -> Bytes {
        let mut payload = BytesMut::with_capacity(self.req.len() + 4);
        if tag == Tag::V2 {
            payload.put_u8(0x0a);
            prost::encoding::encode_varint(self.req.len() as u64, &mut payload);
        }
        payload.put_slice(&self.req);
        let mut out = BytesMut::with_capacity(payload.len() + frame::HEADER_LEN);
        frame::encode(tag, &payload, &mut out).expect("batches are sized to fit a frame");
        out.freeze()
    }
}

/// Builds batches by encoded size.
struct Batcher {
    base: ReportBoundaryLogsRequest,
    base_len: usize,
    logs: Vec<BoundaryLog>,
    logs_len: usize,
    deadline: Option<Instant>,
    flush_interval: Duration,
}

impl Batcher {
    fn new(base: ReportBoundaryLogsRequest, flush_interval: Duration) -> Self {
        let base_len = base.encoded_len();
        Self {
            base,
            base_len,
            logs: Vec::new(),
            logs_len: 0,
            deadline: None,
            flush_interval,
        }
    }

    fn len(&self) -> usize {
        self.logs.len()
    }

    /// Adds a record; returns a completed batch when this record did not fit in the open one
    /// or made it reach the record limit.
    fn push(&mut self, record: &AuditRecord, out: &mut VecDeque<Batch>) {
        let mut log = to_proto(record);
        fit_record(&mut log, self.base_len);
        let e = entry_len(&log);
        if !self.logs.is_empty() && v2_len(self.base_len + self.logs_len + e) > MAX_PAYLOAD {
            out.push_back(self.take());
        }
        if self.logs.is_empty() {
            self.deadline = Some(Instant::now() + self.flush_interval);
        }
        self.logs.push(log);
        self.logs_len += e;
        if self.logs.len() >= MAX_RECORDS_PER_FRAME {
            out.push_back(self.take());
        }
    }

    fn take(&mut self) -> Batch {
        let mut req = self.base.clone();
        req.logs = std::mem::take(&mut self.logs);
        let records = req.logs.len();
        self.logs_len = 0;
        self.deadline = None;
        let bytes = req.encode_to_vec();
        debug_assert!(v2_len(bytes.len()) <= MAX_PAYLOAD);
        Batch {
            req: Bytes::from(bytes),
            records,
            dequeued: false,
        }
    }
}

/// Bytes written to a Unix stream socket that the peer has not read yet.
fn unread_bytes(stream: &UnixStream) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ stores one c_int through the pointer, which points to a live local;
    // the descriptor belongs to `stream`, which outlives the call.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.max(0) as usize)
    }
}

struct Conn {
    stream: UnixStream,
    inflight: VecDeque<Batch>,
    /// Set while `auto` waits to see whether the agent closes after our probe frame.
    probe_until: Option<Instant>,
    /// The probe was sent on this connection.
    probed: bool,
}

async fn run_task(
    cfg: ForwarderConfig,
    base: ReportBoundaryLogsRequest,
    mut rx: mpsc::Receiver<AuditRecord>,
    mut shutdown_rx: oneshot::Receiver<()>,
    stats: Arc<ForwarderStats>,
) {
    let mut batcher = Batcher::new(base, cfg.flush_interval);
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut pending_records = 0usize;
    let mut conn: Option<Conn> = None;
    let mut fell_back = false;
    let mut backoff = BACKOFF_START;
    let mut next_connect = Instant::now();
    let mut connect_failures = 0u64;
    let mut shutting_down = false;
    let mut rx_open = true;
    let mut reported = (0u64, 0u64);
    let mut scratch = [0u8; 256];
    let mut delivery_poll = DELIVERY_POLL;

    loop {
        let use_v2 = match cfg.protocol {
            AuditProtocol::V1 => false,
            AuditProtocol::V2 => true,
            AuditProtocol::Auto => !fell_back,
        };
        let must_probe = cfg.protocol == AuditProtocol::Auto && !fell_back;

        // Frames the agent has read are delivered: forget them. A peer that closed also
        // shows 0 unread bytes (the kernel purged its queue), so ask whether it is still there.
        let mut closed = None;
        if let Some(c) = conn.as_mut() {
            if c.probe_until.is_none() && !c.inflight.is_empty() {
                if let Ok(0) = unread_bytes(&c.stream) {
                    match peer_state(&c.stream) {
                        Peer::Open => {
                            let n: usize = c.inflight.drain(..).map(|b| b.records).sum();
                            stats.delivered.fetch_add(n as u64, Ordering::SeqCst);
                            backoff = BACKOFF_START;
                        }
                        gone => closed = Some(gone),
                    }
                }
            }
        }
        if let Some(state) = closed {
            disconnect(
                &mut conn,
                &mut pending,
                &mut pending_records,
                &stats,
                must_probe,
                &mut fell_back,
                state,
            );
            next_connect = Instant::now() + backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }

        // Write what the connection may take now.
        let mut broken = false;
        if let Some(c) = conn.as_mut() {
            if must_probe && !c.probed {
                // The probe carries no records: a status message (the drops so far, often
                // zero). An older agent closes on it and nothing is lost; a newer one counts it.
                c.probed = true;
                match write_status(&mut c.stream, &stats, &mut reported, true).await {
                    Ok(()) => c.probe_until = Some(Instant::now() + PROBE_WINDOW),
                    Err(_) => broken = true,
                }
            }
            while !broken && c.probe_until.is_none() {
                let Some(b) = pending.front() else { break };
                let tag = if use_v2 { Tag::V2 } else { Tag::V1 };
                if let Err(e) = c.stream.write_all(&b.frame(tag)).await {
                    tracing::debug!(error = %e, "audit socket write failed");
                    broken = true;
                    break;
                }
                let mut b = pending.pop_front().expect("front exists");
                pending_records -= b.records;
                if !b.dequeued {
                    b.dequeued = true;
                    stats.queued.fetch_sub(b.records, Ordering::SeqCst);
                }
                stats.sent.fetch_add(b.records as u64, Ordering::SeqCst);
                stats.frames_written.fetch_add(1, Ordering::Relaxed);
                c.inflight.push_back(b);
                delivery_poll = DELIVERY_POLL;
            }
            if !broken
                && use_v2
                && c.probe_until.is_none()
                && write_status(&mut c.stream, &stats, &mut reported, false)
                    .await
                    .is_err()
            {
                broken = true;
            }
        }
        if broken {
            // The write error (EPIPE) says nothing about what the agent read; the pending
            // socket error does.
            let state = match conn.as_ref().map(|c| peer_state(&c.stream)) {
                Some(Peer::ClosedAllRead) => Peer::ClosedAllRead,
                _ => Peer::ClosedUnread,
            };
            disconnect(
                &mut conn,
                &mut pending,
                &mut pending_records,
                &stats,
                must_probe,
                &mut fell_back,
                state,
            );
            next_connect = Instant::now() + backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }

        if shutting_down {
            let idle = batcher.len() == 0
                && pending.is_empty()
                && conn
                    .as_ref()
                    .is_none_or(|c| c.inflight.is_empty() && c.probe_until.is_none());
            if idle {
                break;
            }
            if conn.is_none() && !cfg.socket_path.exists() {
                if stats.connections.load(Ordering::SeqCst) == 0 {
                    tracing::info!(
                        path = %cfg.socket_path.display(),
                        records = pending_records,
                        "no Coder agent audit socket during this run; records were logged \
                         locally only"
                    );
                } else {
                    tracing::warn!(
                        path = %cfg.socket_path.display(),
                        records = pending_records,
                        "the Coder agent audit socket is gone at shutdown; records not forwarded \
                         (they are in the local log)"
                    );
                }
                break;
            }
        }

        let can_take = rx_open;
        let batch_deadline = batcher.deadline;
        let want_connect = conn.is_none() && !pending.is_empty();
        let probe_until = conn.as_ref().and_then(|c| c.probe_until);
        let check_delivery = conn
            .as_ref()
            .is_some_and(|c| c.probe_until.is_none() && !c.inflight.is_empty());

        tokio::select! {
            _ = &mut shutdown_rx, if !shutting_down => {
                shutting_down = true;
                rx.close();
                while let Ok(r) = rx.try_recv() {
                    batcher.push(&r, &mut pending);
                }
                rx_open = false;
                if batcher.len() > 0 {
                    pending.push_back(batcher.take());
                }
                pending_records = pending.iter().map(|b| b.records).sum();
                next_connect = next_connect.min(Instant::now());
            }
            r = rx.recv(), if can_take => match r {
                Some(r) => {
                    let before = pending.len();
                    batcher.push(&r, &mut pending);
                    // Take what else is waiting without another trip through the loop.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(r) => batcher.push(&r, &mut pending),
                            Err(_) => break,
                        }
                    }
                    pending_records += pending.iter().skip(before).map(|b| b.records).sum::<usize>();
                }
                None => rx_open = false,
            },
            _ = sleep_until_opt(batch_deadline), if batch_deadline.is_some() => {
                let b = batcher.take();
                pending_records += b.records;
                pending.push_back(b);
            }
            _ = tokio::time::sleep_until(next_connect), if want_connect => {
                match UnixStream::connect(&cfg.socket_path).await {
                    Ok(stream) => {
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        if connect_failures > 0 {
                            tracing::info!(
                                path = %cfg.socket_path.display(),
                                "connected to the Coder agent audit socket"
                            );
                        }
                        connect_failures = 0;
                        conn = Some(Conn { stream, inflight: VecDeque::new(), probe_until: None, probed: false });
                    }
                    Err(e) => {
                        connect_failures += 1;
                        if connect_failures == 1 || connect_failures.is_multiple_of(50) {
                            tracing::warn!(
                                path = %cfg.socket_path.display(),
                                error = %e,
                                attempts = connect_failures,
                                queued = pending_records,
                                "cannot connect to the Coder agent audit socket; retrying with \
                                 backoff, records are kept (up to the queue size) and logged locally"
                            );
                        }
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            res = read_some(conn.as_mut(), &mut scratch), if conn.is_some() => {
                let state = match res {
                    Ok(0) => Some(Peer::ClosedAllRead),
                    Ok(_) => None,
                    Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(Peer::ClosedUnread),
                };
                if let Some(state) = state {
                    let probing = probe_until.is_some();
                    disconnect(&mut conn, &mut pending, &mut pending_records, &stats, must_probe, &mut fell_back, state);
                    if probing && must_probe {
                        next_connect = Instant::now();
                    } else {
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            _ = sleep_until_opt(probe_until), if probe_until.is_some() => {
                if let Some(c) = conn.as_mut() {
                    c.probe_until = None;
                }
            }
            // Wakes the loop, whose first step checks delivery.
            _ = tokio::time::sleep(delivery_poll), if check_delivery => {
                delivery_poll = (delivery_poll * 2).min(DELIVERY_POLL_MAX);
            }
        }
    }
    if let Some(c) = conn.take() {
        let mut s = c.stream;
        let _ = s.shutdown().await;
    }
}

/// Sends a tag-2 `BoundaryStatus` with the drops since the last one, if there are any (or
/// always, with `force`).
async fn write_status(
    stream: &mut UnixStream,
    stats: &ForwarderStats,
    reported: &mut (u64, u64),
    force: bool,
) -> io::Result<()> {
    let now = (
        stats.dropped_channel_full.load(Ordering::SeqCst),
        stats.dropped_batch_full.load(Ordering::SeqCst),
    );
    if now == *reported && !force {
        return Ok(());
    }
    let msg = BoundaryMessage {
        msg: Some(boundary_message::Msg::Status(BoundaryStatus {
            dropped_channel_full: (now.0 - reported.0) as i64,
            dropped_batch_full: (now.1 - reported.1) as i64,
        })),
    };
    let bytes = frame::encode_message(Tag::V2, &msg).expect("a status message is tiny");
    stream.write_all(&bytes).await?;
    *reported = now;
    Ok(())
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn read_some(conn: Option<&mut Conn>, buf: &mut [u8]) -> io::Result<usize> {
    match conn {
        Some(c) => c.stream.read(buf).await,
        None => std::future::pending().await,
    }
}

/// What the kernel says about the agent's end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Open,
    /// Closed with nothing of ours left unread: every frame written reached the agent.
    ClosedAllRead,
    /// Closed with our data still in its queue (ECONNRESET), or state unknown.
    ClosedUnread,
}

/// A non-blocking read: the agent never sends, so data or "would block" means open, end of
/// stream means it closed after reading everything, ECONNRESET means it closed with frames of
/// ours unread (Linux sets that error exactly then).
fn peer_state(stream: &UnixStream) -> Peer {
    let mut b = [0u8; 64];
    match stream.try_read(&mut b) {
        Ok(0) => Peer::ClosedAllRead,
        Ok(_) => Peer::Open,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peer::Open,
        Err(_) => Peer::ClosedUnread,
    }
}

/// Drops the connection. Frames the agent did not read go back to the front of the queue;
/// when it read everything (`ClosedAllRead`) nothing is resent, so nothing is duplicated.
fn disconnect(
    conn: &mut Option<Conn>,
    pending: &mut VecDeque<Batch>,
    pending_records: &mut usize,
    stats: &ForwarderStats,
    must_probe: bool,
    fell_back: &mut bool,
    state: Peer,
) {
    let Some(mut c) = conn.take() else { return };
    if state == Peer::ClosedAllRead {
        let n: usize = c.inflight.drain(..).map(|b| b.records).sum();
        stats.delivered.fetch_add(n as u64, Ordering::SeqCst);
    }
    if c.probe_until.is_some() && must_probe {
        *fell_back = true;
        stats.fell_back_to_v1.store(true, Ordering::SeqCst);
        tracing::warn!(
            "the Coder agent closed the audit socket right after a v2 frame: it predates v2; \
             using v1 frames for the rest of this run and resending"
        );
    } else {
        tracing::warn!(
            resend_frames = c.inflight.len(),
            "the Coder agent closed the audit socket; reconnecting"
        );
    }
    for b in c.inflight.into_iter().rev() {
        *pending_records += b.records;
        stats.sent.fetch_sub(b.records as u64, Ordering::SeqCst);
        pending.push_front(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, TraceContext};

    fn rec(seq: i32, url: String) -> AuditRecord {
        AuditRecord {
            allowed: seq % 2 == 0,
            time: chrono::Utc::now(),
            method: "GET".into(),
            url,
            matched_rule: Some("domain=example.com".into()),
            sequence_number: seq,
            trace: TraceContext::from_traceparent(None),
        }
    }

    fn run() -> RunContext {
        RunContext::new(
            "claude",
            Identity {
                owner: Some("joe".into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn batches_fill_frames_without_exceeding_them() {
        let mut b = Batcher::new(base_request(&run()), Duration::from_secs(1));
        let mut out = VecDeque::new();
        for i in 0..3000 {
            b.push(
                &rec(
                    i,
                    format!("https://example.com/{}", "p".repeat(i as usize % 300)),
                ),
                &mut out,
            );
        }
        out.push_back(b.take());
        let mut total = 0;
        for (i, batch) in out.iter().enumerate() {
            let f = batch.frame(Tag::V2);
            assert!(f.len() - 4 <= MAX_PAYLOAD);
            assert!(batch.records <= MAX_RECORDS_PER_FRAME);
            if i + 1 < out.len() {
                // Filled: the next record (at most ~400 bytes) would not have fit.
                assert!(
                    f.len() - 4 > MAX_PAYLOAD - 500,
                    "frame {i} only {} bytes",
                    f.len()
                );
            }
            total += batch.records;
        }
        assert_eq!(total, 3000);
    }

    proptest::proptest! {
        #[test]
        fn any_record_fits_one_frame_after_fitting(
            url_len in 0usize..120_000,
            rule_len in 0usize..40_000,
            method_len in 1usize..5_000,
            multibyte in proptest::bool::ANY,
        ) {
            let base = base_request(&run());
            let base_len = base.encoded_len();
            let unit = if multibyte { "é" } else { "u" };
            let mut r = rec(0, format!("https://h/{}", unit.repeat(url_len)));
            r.method = "M".repeat(method_len);
            r.matched_rule = Some("r".repeat(rule_len));
            let mut log = to_proto(&r);
            let fitted_before = v2_len(base_len + entry_len(&log)) <= MAX_PAYLOAD;
            fit_record(&mut log, base_len);
            proptest::prop_assert!(v2_len(base_len + entry_len(&log)) <= MAX_PAYLOAD);
            let Some(boundary_log::Resource::HttpRequest(h)) = &log.resource else {
                panic!("resource kept")
            };
            proptest::prop_assert_eq!(h.truncated, !fitted_before);
            if fitted_before {
                proptest::prop_assert_eq!(&h.url, &r.url);
            } else {
                // Shortened strings stay well-formed and say so.
                proptest::prop_assert!(
                    h.url.ends_with(TRUNCATION_MARKER)
                        || h.matched_rule.ends_with(TRUNCATION_MARKER)
                        || h.method.ends_with(TRUNCATION_MARKER)
                );
            }
        }
    }

    #[test]
    fn huge_record_is_truncated_not_dropped() {
        let base = base_request(&run());
        let base_len = base.encoded_len();
        let mut log = to_proto(&rec(
            0,
            format!("https://example.com/{}", "x".repeat(100_000)),
        ));
        fit_record(&mut log, base_len);
        assert!(v2_len(base_len + entry_len(&log)) <= MAX_PAYLOAD);
        let Some(boundary_log::Resource::HttpRequest(h)) = &log.resource else {
            panic!()
        };
        assert!(h.truncated);
        assert!(h.url.starts_with("https://example.com/xxx"));
        assert!(h.url.ends_with(TRUNCATION_MARKER));
        assert!(h.url.len() > MAX_PAYLOAD - 1000);
    }
}
