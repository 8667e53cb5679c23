//! The forwarding task: the agent link as a state machine.
//!
//! ```text
//!   Waiting ──connect + peer accepted──▶ Probing (auto: status frame sent) ──window over──▶ Open
//!      ▲  ╰───────────────────────────connect + peer accepted (v1, v2, or fallen back)──────▶ │
//!      ╰────────────── closed (fell back to v1: reconnect now; else after backoff) ◀─────────╯
//! ```
//!
//! Records are batched, batches wait in the [`Store`], and only `Open` writes them. The task
//! never waits on the agent: frames are written without blocking (`send.rs`), the rest of a
//! frame when the socket is writable again, so an agent that stops reading never stops the
//! task from taking records off the queue and spooling them.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::batch::{Batch, Batcher};
use super::store::Store;
use super::wire::{sleep_until_opt, Backoff, Peer};
use super::{base_request, DropLog, ForwarderConfig, ForwarderStats};
use crate::peer::PeerGate;
use crate::{AuditProtocol, AuditRecord, RunContext};
use boundary_proto::frame::Tag;

/// Reconnects: 100 ms doubling to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// Checks that in-flight frames were read: 2 ms doubling to 200 ms while the agent is slow.
const DELIVERY_POLL: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(200));
/// A backlog goes out in bursts of this many frames: the agent queues what it reads in a
/// bounded buffer and drops frames past it, so a spool emptied at socket speed would be lost
/// there. After a burst the agent must have read it all, then [`PACE`] passes.
pub(super) const BURST: usize = 8;
/// The pause after a burst (at most about 160 frames a second while a backlog drains; live
/// traffic of fewer than [`BURST`] frames at a time goes at once).
pub(super) const PACE: Duration = Duration::from_millis(50);

/// The link to the agent.
pub(super) enum Link {
    /// No connection; the next attempt at `at` (when there is something to send).
    Waiting { at: Instant },
    /// `auto` sent its status frame; an agent closing before `until` predates tag 2.
    Probing { stream: UnixStream, until: Instant },
    /// Records are written.
    Open { stream: UnixStream },
}

impl Link {
    pub fn stream(&self) -> Option<&UnixStream> {
        match self {
            Link::Probing { stream, .. } | Link::Open { stream } => Some(stream),
            Link::Waiting { .. } => None,
        }
    }
}

/// A frame being written: the socket took `at` bytes of it so far.
pub(super) struct Outgoing {
    pub bytes: Bytes,
    pub at: usize,
    pub kind: Frame,
}

/// What an [`Outgoing`] frame carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// The last batch taken from the store (in flight).
    Batch,
    /// A status frame reporting drops up to these counts.
    Status((u64, u64)),
}

/// One wake-up of the task.
enum Event {
    Shutdown(Instant),
    Record(Option<AuditRecord>),
    /// Records piled up while a batch was open (see [`super::Forwarder::push`]).
    Bell,
    BatchDue,
    ConnectDue,
    Readable,
    Writable,
    ProbeDone,
    PollDue,
    Deadline,
}

/// Where records and the shutdown request come from.
pub(super) struct Inbox {
    rx: mpsc::Receiver<AuditRecord>,
    shutdown_rx: oneshot::Receiver<Instant>,
    /// Rung by the proxy side once records pile up while a batch is open.
    bell: Arc<Notify>,
    /// The proxy side may still send records.
    open: bool,
}

/// Records taken off the queue in one go before other events are looked at again.
const DRAIN: usize = 4096;

pub(crate) struct Task {
    pub(super) cfg: ForwarderConfig,
    pub(super) stats: Arc<ForwarderStats>,
    pub(super) drops: Arc<DropLog>,
    pub(super) batcher: Batcher,
    pub(super) closed: std::collections::VecDeque<Batch>,
    pub(super) store: Store,
    pub(super) link: Link,
    pub(super) out: Option<Outgoing>,
    pub(super) reconnect: Backoff,
    pub(super) poll: Backoff,
    pub(super) fell_back: bool,
    pub(super) connect_failures: u64,
    pub(super) reported: (u64, u64),
    pub(super) gate: PeerGate,
    pub(super) deadline: Option<Instant>,
    pub(super) spool_failing: bool,
    /// With the spool: the open batch goes to disk once this many records wait in memory.
    pub(super) spill_at: usize,
    /// Batch frames written since the agent last read everything.
    pub(super) burst: usize,
    /// No new batch before this (the pause after a burst).
    pub(super) paused_until: Option<Instant>,
}

impl Task {
    pub fn new(
        mut cfg: ForwarderConfig,
        run: &RunContext,
        stats: Arc<ForwarderStats>,
        drops: Arc<DropLog>,
    ) -> Self {
        let store = Store::open(cfg.spool.take(), run);
        let flush = cfg.flush_interval;
        let spill_at = (cfg.queue_size / 2).max(1);
        Self {
            cfg,
            stats,
            drops,
            batcher: Batcher::new(base_request(run), flush),
            closed: Default::default(),
            store,
            link: Link::Waiting { at: Instant::now() },
            out: None,
            reconnect: RECONNECT,
            poll: DELIVERY_POLL,
            fell_back: false,
            connect_failures: 0,
            reported: (0, 0),
            gate: PeerGate::default(),
            deadline: None,
            spool_failing: false,
            spill_at,
            burst: 0,
            paused_until: None,
        }
    }

    /// True when waiting batches are kept on disk.
    pub fn spools(&self) -> bool {
        self.store.is_disk()
    }

    pub(super) fn tag(&self) -> Tag {
        match self.cfg.protocol {
            AuditProtocol::V1 => Tag::V1,
            AuditProtocol::V2 => Tag::V2,
            AuditProtocol::Auto if self.fell_back => Tag::V1,
            AuditProtocol::Auto => Tag::V2,
        }
    }

    pub(super) fn must_probe(&self) -> bool {
        self.cfg.protocol == AuditProtocol::Auto && !self.fell_back
    }

    pub async fn run(
        mut self,
        rx: mpsc::Receiver<AuditRecord>,
        shutdown_rx: oneshot::Receiver<Instant>,
        bell: Arc<Notify>,
    ) {
        if let Some(s) = self.cfg.early.take() {
            match s
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(s))
            {
                Ok(stream) => self.connected(stream),
                Err(e) => tracing::warn!(error = %e, "cannot use the early agent connection"),
            }
        }
        let mut inbox = Inbox {
            rx,
            shutdown_rx,
            bell,
            open: true,
        };
        loop {
            self.check_delivery();
            self.write_pending();
            if self.deadline.is_some() && self.done() {
                break;
            }
            let ev = self.next_event(&mut inbox).await;
            if !self.handle(ev, &mut inbox).await {
                break;
            }
        }
        self.finish().await;
    }

    /// Waits for whatever the current state listens to.
    async fn next_event(&mut self, inbox: &mut Inbox) -> Event {
        let batch_due = self.batcher.deadline;
        let (connect_at, probe_until) = match &self.link {
            Link::Waiting { at } => (self.store.has_unsent().then_some(*at), None),
            Link::Probing { until, .. } => (None, Some(*until)),
            Link::Open { .. } => (None, None),
        };
        let poll = (matches!(self.link, Link::Open { .. }) && self.store.inflight_records() > 0)
            .then(|| self.poll.next_delay());
        let resume = self.paused_until.filter(|_| self.link.stream().is_some());
        let stop_at = self.deadline;
        let shutting_down = stop_at.is_some();
        let stream = self.link.stream();
        let has_conn = stream.is_some();
        let blocked = has_conn && self.out.is_some();
        let rx_open = inbox.open;
        // While a batch is open its records wait in the queue until the batch is due (or the
        // bell rings): the task is not woken once per request, which cost the proxy a
        // cross-thread wake-up on every request.
        let take_each = rx_open && batch_due.is_none();
        let bell = rx_open && !take_each;
        tokio::select! {
            d = &mut inbox.shutdown_rx, if !shutting_down => {
                Event::Shutdown(d.unwrap_or_else(|_| Instant::now()))
            }
            r = inbox.rx.recv(), if take_each => Event::Record(r),
            _ = inbox.bell.notified(), if bell => Event::Bell,
            _ = sleep_until_opt(batch_due), if batch_due.is_some() => Event::BatchDue,
            _ = sleep_until_opt(connect_at), if connect_at.is_some() => Event::ConnectDue,
            _ = ready(stream, true), if has_conn => Event::Readable,
            _ = ready(stream, false), if blocked => Event::Writable,
            _ = sleep_until_opt(probe_until), if probe_until.is_some() => Event::ProbeDone,
            _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => Event::PollDue,
            _ = sleep_until_opt(resume), if resume.is_some() => Event::PollDue,
            _ = sleep_until_opt(stop_at), if shutting_down => Event::Deadline,
        }
    }

    /// Applies one event; `false` ends the loop (the shutdown deadline passed).
    async fn handle(&mut self, ev: Event, inbox: &mut Inbox) -> bool {
        match ev {
            Event::Shutdown(deadline) => {
                self.deadline = Some(deadline);
                inbox.rx.close();
                while let Ok(r) = inbox.rx.try_recv() {
                    self.batcher.push(&r, &mut self.closed);
                }
                inbox.open = false;
                self.close_batch();
                if let Link::Waiting { at } = &mut self.link {
                    *at = Instant::now();
                }
            }
            Event::Record(Some(r)) => {
                self.batcher.push(&r, &mut self.closed);
                self.take_waiting(inbox);
            }
            Event::Bell => self.take_waiting(inbox),
            Event::Record(None) => inbox.open = false,
            Event::BatchDue => {
                // The batch's records that waited in the queue belong to it.
                self.take_waiting(inbox);
                self.close_batch();
            }
            Event::ConnectDue => self.connect().await,
            Event::Readable => {
                if let Some(stream) = self.link.stream() {
                    let state = super::wire::peer_state(stream);
                    if state != Peer::Open {
                        self.closed(state);
                    }
                }
            }
            Event::Writable | Event::PollDue => {}
            Event::ProbeDone => self.probe_passed(),
            Event::Deadline => return false,
        }
        true
    }

    /// Batches what waits in the queue (at most [`DRAIN`] records per call), then stores the
    /// closed batches.
    fn take_waiting(&mut self, inbox: &mut Inbox) {
        for _ in 0..DRAIN {
            match inbox.rx.try_recv() {
                Ok(r) => self.batcher.push(&r, &mut self.closed),
                Err(_) => break,
            }
        }
        if self.store.is_disk() && self.stats.queued.load(Ordering::SeqCst) >= self.spill_at {
            // Memory is for the flush interval only: what piles up goes to disk now.
            self.close_batch();
        } else {
            self.stash();
        }
    }

    /// Shutting down and nothing more can or need be done.
    fn done(&self) -> bool {
        let idle = self.batcher.is_empty()
            && !self.store.has_unsent()
            && self.store.inflight_records() == 0
            && !matches!(self.link, Link::Probing { .. });
        if idle {
            return true;
        }
        if matches!(self.link, Link::Waiting { .. }) && !self.cfg.socket_path.exists() {
            // Never connected: outside Coder, where this is every run; the pipeline said so
            // once at info when it started.
            if self.stats.connections.load(Ordering::SeqCst) == 0 {
                tracing::debug!(
                    path = %self.cfg.socket_path.display(),
                    spooled = self.store.is_disk(),
                    "no Coder agent audit socket at shutdown; records not forwarded"
                );
            } else {
                tracing::warn!(
                    path = %self.cfg.socket_path.display(),
                    spooled = self.store.is_disk(),
                    "the Coder agent audit socket is gone at shutdown; records not forwarded"
                );
            }
            return true;
        }
        false
    }
}

/// Resolves when `stream` is readable (`read`) or writable; never without a stream.
async fn ready(stream: Option<&UnixStream>, read: bool) -> io::Result<()> {
    match (stream, read) {
        (Some(s), true) => s.readable().await,
        (Some(s), false) => s.writable().await,
        (None, _) => std::future::pending().await,
    }
}
