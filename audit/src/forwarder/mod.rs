//! The agent-socket forwarder: records are batched into frames, written to the Coder
//! workspace agent's Unix socket, and never block the proxy.
//!
//! - **Batching** ([`batch`]). A batch closes when the next record would push the tag-2
//!   payload past 32768 bytes, at 1000 records (coderd's limit), or `flush_interval` after its
//!   first record. A single record too large for a frame has its URL (then rule, then method)
//!   shortened and marked (`...[truncated]`, extension field `truncated`), never dropped.
//!   The task takes a batch's first record at once and the others when the batch is due, or
//!   sooner once a quarter of the queue (at most 250 records) waits: the proxy's threads are
//!   not woken once per request to hand over its record.
//! - **The link** (`link.rs`): a state machine, waiting for the socket → probing the protocol
//!   → open, with one backoff type (`wire.rs`). `auto` opens each connection with a tag-2
//!   `BoundaryStatus` frame and watches it for [`PROBE_WINDOW`]; an agent closing in that
//!   window is an older one: tag 1 for the rest of the run. Every connection's listener is
//!   checked first ([`crate::peer`]) when `verify_peer` is set: a refused listener gets
//!   nothing, the refusal is logged at error level, records keep waiting.
//! - **Waiting batches** (`store.rs`): in memory, or with a spool directory in the durable
//!   [`spool`], bounded in bytes; what cannot be stored is dropped, counted, reported to the
//!   agent in a tag-2 `BoundaryStatus`, and logged at error level with the sequence numbers.
//!   With the spool, memory holds records only until their batch closes (the flush interval,
//!   or sooner once half of `queue_size` records wait): an agent that is away, slow, or never
//!   reads makes records go to disk, not get dropped. Records are dropped before the spool only
//!   if the task falls [`SPOOL_BACKLOG`] times `queue_size` records behind (a stalled disk).
//! - **Writing** (`send.rs`) never waits on the agent: frames go out as the socket takes them.
//! - **Delivery.** The agent never replies, so we ask the kernel: `TIOCOUTQ` is the data the
//!   peer has not read yet; batches stay in flight until it reaches 0. When the agent goes
//!   away, a read fails with ECONNRESET (frames unread: resent) or returns end of stream (all
//!   read: nothing resent, so nothing is duplicated).
//! - **Shutdown.** Everything queued is batched and written, waiting until the agent read it,
//!   bounded by the caller's timeout. With no socket at all we stop at once; spooled records
//!   are then delivered by the next run.

pub mod batch;
mod link;
mod send;
pub mod spool;
mod store;
mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundary_proto::pb::ReportBoundaryLogsRequest;
use tokio::sync::{mpsc, oneshot, Notify};

pub use batch::{fit_record, to_proto};
pub use spool::SpoolConfig;

use crate::{AuditProtocol, AuditRecord, RunContext};

/// At most this many records per frame: coderd rejects larger requests.
pub const MAX_RECORDS_PER_FRAME: usize = 1000;
/// How long after the first tag-2 frame on a connection an agent closing it means "older
/// agent, speak v1". Older agents close as soon as they read the header.
pub const PROBE_WINDOW: Duration = Duration::from_millis(300);
/// With the spool, records the task has not taken yet may reach this many times the queue
/// size (at least [`MIN_SPOOL_BACKLOG`]) before new ones are dropped: the task spools far
/// faster than the proxy decides, so only a stalled disk gets there.
pub const SPOOL_BACKLOG: usize = 8;
/// The least backlog allowed with the spool, however small the queue size.
pub const MIN_SPOOL_BACKLOG: usize = 65_536;
/// Appended to a shortened URL or rule.
pub const TRUNCATION_MARKER: &str = "...[truncated]";

/// Counters shared between the proxy-side handle and the task; each is read somewhere.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    /// Records taken into the queue.
    pub accepted: AtomicU64,
    /// Records refused because the in-memory queue was full (with the spool: the task fell
    /// far behind).
    pub dropped_channel_full: AtomicU64,
    /// Records dropped for any other reason (spool full or unwritable, after shutdown).
    pub dropped_batch_full: AtomicU64,
    /// Of those, the ones refused at the door because the forwarder had stopped (never
    /// accepted; the others were accepted first).
    pub refused_after_stop: AtomicU64,
    /// Records written to the agent and not taken back for resending.
    pub sent: AtomicU64,
    /// True once `auto` fell back to tag 1.
    pub fell_back_to_v1: AtomicBool,
    /// Connections whose listener was accepted.
    pub connections: AtomicU64,
    /// Records accepted and not yet written once (memory) or spooled (disk): the bound.
    pub queued: AtomicUsize,
    /// Records left undelivered in the spool at exit (a later run sends them).
    pub spooled_at_exit: AtomicU64,
    /// Records written to the disk spool (they wait there until the agent takes them).
    pub spooled: AtomicU64,
}

/// How to forward.
#[derive(Debug)]
pub struct ForwarderConfig {
    pub socket_path: PathBuf,
    pub protocol: AuditProtocol,
    pub flush_interval: Duration,
    pub queue_size: usize,
    /// Check every listener with [`crate::peer::check`] before sending it anything.
    pub verify_peer: bool,
    /// A connection made before the jail started (so the jail cannot have replaced the path).
    pub early: Option<std::os::unix::net::UnixStream>,
    /// The durable spool; `None` keeps waiting batches in memory only.
    pub spool: Option<SpoolConfig>,
}

/// Consecutive drops, logged as one error line with their sequence numbers when the run of
/// drops ends (or at shutdown), so no drop is silent at any log level and none floods it.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    run: Mutex<Option<(i32, i32, u64, &'static str)>>,
    /// A run of drops is waiting to be logged (checked without the lock on every record).
    pending: AtomicBool,
}

impl DropLog {
    /// Notes dropped records `first..=last` (`count` of them) for `reason`.
    pub fn note(&self, first: i32, last: i32, count: u64, reason: &'static str) {
        let mut g = self.run.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_mut() {
            Some((_, l, n, r)) if *r == reason && first == l.wrapping_add(1) => {
                *l = last;
                *n += count;
            }
            _ => {
                if let Some(prev) = g.take() {
                    Self::emit(prev);
                }
                *g = Some((first, last, count, reason));
            }
        }
        self.pending.store(true, Ordering::SeqCst);
    }

    /// Writes the pending run of drops.
    pub fn flush(&self) {
        if !self.pending.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(prev) = self.run.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Self::emit(prev);
        }
    }

    fn emit((first, last, count, reason): (i32, i32, u64, &'static str)) {
        tracing::error!(
            first_sequence_number = first,
            last_sequence_number = last,
            records = count,
            reason,
            "audit records DROPPED: they will not reach the Coder agent; the local log has \
             them only if its level shows them (denies at warn, allows at info), the \
             --audit-log file has every decision"
        );
    }
}

/// The proxy-side handle: queue records, ask for shutdown.
pub struct Forwarder {
    tx: mpsc::Sender<AuditRecord>,
    stats: Arc<ForwarderStats>,
    drops: Arc<DropLog>,
    shutdown: Option<oneshot::Sender<tokio::time::Instant>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Records accepted and not yet stored past which new ones are dropped.
    limit: usize,
    /// Wakes the task while its batch is open, once `bell_at` records wait in the queue.
    bell: Arc<Notify>,
    bell_at: usize,
    /// Why, in the drop log.
    full_reason: &'static str,
}

impl Forwarder {
    /// Spawns the forwarding task on the current tokio runtime.
    pub fn start(cfg: ForwarderConfig, run: &RunContext) -> Self {
        let queue_size = cfg.queue_size.max(1);
        let stats = Arc::new(ForwarderStats::default());
        let drops = Arc::new(DropLog::default());
        let task = link::Task::new(cfg, run, stats.clone(), drops.clone());
        let (limit, full_reason) = if task.spools() {
            (
                queue_size
                    .saturating_mul(SPOOL_BACKLOG)
                    .max(MIN_SPOOL_BACKLOG),
                "the audit forwarder fell behind spooling (is the spool's disk stalled?)",
            )
        } else {
            (queue_size, "the in-memory audit queue is full")
        };
        let (tx, rx) = mpsc::channel(limit);
        let (stx, srx) = oneshot::channel();
        let bell = Arc::new(Notify::new());
        let task = tokio::spawn(task.run(rx, srx, bell.clone()));
        Self {
            tx,
            stats,
            drops,
            shutdown: Some(stx),
            task: Some(task),
            limit,
            bell,
            // Well before the queue is full, and at most a frame's worth.
            bell_at: (queue_size / 4).clamp(1, MAX_RECORDS_PER_FRAME / 4),
            full_reason,
        }
    }

    /// Queues a record without waiting; counts and logs it as dropped when the queue is full.
    pub fn push(&self, record: AuditRecord) {
        let s = &self.stats;
        let seq = record.sequence_number;
        if s.queued.fetch_add(1, Ordering::SeqCst) >= self.limit {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            s.dropped_channel_full.fetch_add(1, Ordering::SeqCst);
            self.drops.note(seq, seq, 1, self.full_reason);
            return;
        }
        match self.tx.try_send(record) {
            Ok(()) => {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                // The task takes the first record of a batch at once and the rest when the
                // batch is due; records piling up in the queue meanwhile ring it sooner.
                if self.tx.max_capacity() - self.tx.capacity() >= self.bell_at {
                    self.bell.notify_one();
                }
                // A record got through: the run of drops before it is complete, log it now.
                self.drops.flush();
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.queued.fetch_sub(1, Ordering::SeqCst);
                s.dropped_channel_full.fetch_add(1, Ordering::SeqCst);
                self.drops.note(seq, seq, 1, self.full_reason);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                s.queued.fetch_sub(1, Ordering::SeqCst);
                s.dropped_batch_full.fetch_add(1, Ordering::SeqCst);
                s.refused_after_stop.fetch_add(1, Ordering::SeqCst);
                self.drops.note(seq, seq, 1, "the forwarder has stopped");
            }
        }
    }

    /// Counters, live.
    pub fn stats(&self) -> &Arc<ForwarderStats> {
        &self.stats
    }

    /// Flushes everything queued, bounded by `timeout`; returns (sent, dropped), where
    /// records kept in the spool for a later run are not dropped.
    pub async fn shutdown(&mut self, timeout: Duration) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(deadline);
        }
        if let Some(mut task) = self.task.take() {
            // The task stops itself at the deadline; this bound only guards against a stuck write.
            let guard = timeout + Duration::from_secs(1);
            if tokio::time::timeout(guard, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "audit records could not all be delivered to the Coder agent within the \
                     shutdown timeout (--audit-shutdown-timeout)"
                );
            }
        }
        self.drops.flush();
        let s = &self.stats;
        let sent = s.sent.load(Ordering::SeqCst);
        let accepted = s.accepted.load(Ordering::SeqCst);
        let kept = s.spooled_at_exit.load(Ordering::SeqCst);
        // Accepted records the spool refused are in `dropped_batch_full` too: each is counted
        // once, here, as accepted and neither sent nor kept.
        let dropped = s.dropped_channel_full.load(Ordering::SeqCst)
            + s.refused_after_stop.load(Ordering::SeqCst)
            + accepted.saturating_sub(sent).saturating_sub(kept);
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
