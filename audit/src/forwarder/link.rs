//! The forwarding task: the agent link as a state machine.
//!
//! ```text
//!   Waiting ──connect + peer accepted──▶ Probing (auto: status frame sent) ──window over──▶ Open
//!      ▲  ╰───────────────────────────connect + peer accepted (v1, v2, or fallen back)──────▶ │
//!      ╰────────────── closed (fell back to v1: reconnect now; else after backoff) ◀─────────╯
//! ```
//!
//! Records are batched, batches wait in the [`Store`], and only `Open` writes them.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use boundary_proto::frame::Tag;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{Batch, Batcher};
use super::store::Store;
use super::wire::{
    peer_state, read_some, sleep_until_opt, unread_bytes, write_status, Backoff, Peer,
};
use super::{base_request, DropLog, ForwarderConfig, ForwarderStats, PROBE_WINDOW};
use crate::peer::PeerGate;
use crate::{AuditProtocol, AuditRecord, RunContext};

/// Reconnects: 100 ms doubling to 5 s.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// Checks that in-flight frames were read: 2 ms doubling to 200 ms while the agent is slow.
const DELIVERY_POLL: Backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(200));

/// The link to the agent.
enum Link {
    /// No connection; the next attempt at `at` (when there is something to send).
    Waiting { at: Instant },
    /// `auto` sent its status frame; an agent closing before `until` predates tag 2.
    Probing { stream: UnixStream, until: Instant },
    /// Records are written.
    Open { stream: UnixStream },
}

/// One wake-up of the task.
enum Event {
    Shutdown(Instant),
    Record(Option<AuditRecord>),
    BatchDue,
    ConnectDue,
    Read(io::Result<usize>),
    ProbeDone,
    PollDue,
    Deadline,
}

/// Where records and the shutdown request come from.
struct Inbox {
    rx: mpsc::Receiver<AuditRecord>,
    shutdown_rx: oneshot::Receiver<Instant>,
    /// The proxy side may still send records.
    open: bool,
    scratch: [u8; 256],
}

pub(crate) struct Task {
    cfg: ForwarderConfig,
    stats: Arc<ForwarderStats>,
    drops: Arc<DropLog>,
    batcher: Batcher,
    closed: std::collections::VecDeque<Batch>,
    store: Store,
    link: Link,
    reconnect: Backoff,
    poll: Backoff,
    fell_back: bool,
    connect_failures: u64,
    reported: (u64, u64),
    gate: PeerGate,
    deadline: Option<Instant>,
    spool_failing: bool,
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
        Self {
            cfg,
            stats,
            drops,
            batcher: Batcher::new(base_request(run), flush),
            closed: Default::default(),
            store,
            link: Link::Waiting { at: Instant::now() },
            reconnect: RECONNECT,
            poll: DELIVERY_POLL,
            fell_back: false,
            connect_failures: 0,
            reported: (0, 0),
            gate: PeerGate::default(),
            deadline: None,
            spool_failing: false,
        }
    }

    fn tag(&self) -> Tag {
        match self.cfg.protocol {
            AuditProtocol::V1 => Tag::V1,
            AuditProtocol::V2 => Tag::V2,
            AuditProtocol::Auto if self.fell_back => Tag::V1,
            AuditProtocol::Auto => Tag::V2,
        }
    }

    fn must_probe(&self) -> bool {
        self.cfg.protocol == AuditProtocol::Auto && !self.fell_back
    }

    pub async fn run(
        mut self,
        rx: mpsc::Receiver<AuditRecord>,
        shutdown_rx: oneshot::Receiver<Instant>,
    ) {
        if let Some(s) = self.cfg.early.take() {
            match s
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(s))
            {
                Ok(stream) => self.connected(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot use the early agent connection"),
            }
        }
        let mut inbox = Inbox {
            rx,
            shutdown_rx,
            open: true,
            scratch: [0u8; 256],
        };
        loop {
            self.check_delivery();
            self.write_pending().await;
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
        let (connect_at, probe_until, has_conn) = match &self.link {
            Link::Waiting { at } => (self.store.has_unsent().then_some(*at), None, false),
            Link::Probing { until, .. } => (None, Some(*until), true),
            Link::Open { .. } => (None, None, true),
        };
        let poll = (matches!(self.link, Link::Open { .. }) && self.store.inflight_records() > 0)
            .then(|| self.poll.next_delay());
        let stop_at = self.deadline;
        let shutting_down = stop_at.is_some();
        let stream = match &mut self.link {
            Link::Probing { stream, .. } | Link::Open { stream } => Some(stream),
            Link::Waiting { .. } => None,
        };
        let rx_open = inbox.open;
        tokio::select! {
            d = &mut inbox.shutdown_rx, if !shutting_down => {
                Event::Shutdown(d.unwrap_or_else(|_| Instant::now()))
            }
            r = inbox.rx.recv(), if rx_open => Event::Record(r),
            _ = sleep_until_opt(batch_due), if batch_due.is_some() => Event::BatchDue,
            _ = sleep_until_opt(connect_at), if connect_at.is_some() => Event::ConnectDue,
            res = read_some(stream, &mut inbox.scratch), if has_conn => Event::Read(res),
            _ = sleep_until_opt(probe_until), if probe_until.is_some() => Event::ProbeDone,
            _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => Event::PollDue,
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
                // Take what else is waiting without another trip through the loop.
                for _ in 0..1024 {
                    match inbox.rx.try_recv() {
                        Ok(r) => self.batcher.push(&r, &mut self.closed),
                        Err(_) => break,
                    }
                }
                self.stash();
            }
            Event::Record(None) => inbox.open = false,
            Event::BatchDue => self.close_batch(),
            Event::ConnectDue => self.connect().await,
            Event::Read(res) => {
                let state = match res {
                    Ok(0) => Some(Peer::ClosedAllRead),
                    Ok(_) => None,
                    Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(_) => Some(Peer::ClosedUnread),
                };
                if let Some(state) = state {
                    self.closed(state);
                }
            }
            Event::ProbeDone => self.probe_passed(),
            Event::PollDue => {}
            Event::Deadline => return false,
        }
        true
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
            tracing::warn!(
                path = %self.cfg.socket_path.display(),
                "no Coder agent audit socket at shutdown; records not forwarded"
            );
            return true;
        }
        false
    }

    fn close_batch(&mut self) {
        if !self.batcher.is_empty() {
            let b = self.batcher.take();
            self.closed.push_back(b);
        }
        self.stash();
    }

    /// Moves closed batches into the store; what it refuses is dropped and logged.
    fn stash(&mut self) {
        while let Some(b) = self.closed.pop_front() {
            match self.store.push(b, &self.stats) {
                Ok(()) => {
                    self.spool_failing = false;
                    self.drops.flush();
                }
                Err((b, why)) => {
                    if !self.spool_failing {
                        tracing::error!(error = %why, "cannot spool audit records");
                        self.spool_failing = true;
                    }
                    self.stats
                        .dropped_batch_full
                        .fetch_add(b.records as u64, Ordering::SeqCst);
                    self.drops.note(
                        b.first_seq,
                        b.last_seq,
                        b.records as u64,
                        "the audit spool is full or unwritable",
                    );
                }
            }
        }
    }

    async fn connect(&mut self) {
        match UnixStream::connect(&self.cfg.socket_path).await {
            Ok(stream) => self.connected(stream).await,
            Err(e) => {
                self.connect_failures += 1;
                if self.connect_failures == 1 || self.connect_failures.is_multiple_of(50) {
                    tracing::warn!(
                        path = %self.cfg.socket_path.display(),
                        error = %e,
                        attempts = self.connect_failures,
                        spooled_on_disk = self.store.is_disk(),
                        "cannot connect to the Coder agent audit socket; retrying with backoff"
                    );
                }
                self.wait();
            }
        }
    }

    fn wait(&mut self) {
        self.link = Link::Waiting {
            at: Instant::now() + self.reconnect.next_delay(),
        };
    }

    /// Waiting → Probing or Open, once the listener is accepted.
    async fn connected(&mut self, mut stream: UnixStream) {
        let cred = stream.peer_cred().map(|c| (c.pid(), c.uid()));
        if self.cfg.verify_peer && !self.gate.admit(&self.cfg.socket_path, cred) {
            self.wait();
            return;
        }
        self.stats.connections.fetch_add(1, Ordering::SeqCst);
        if self.connect_failures > 0 {
            tracing::info!(path = %self.cfg.socket_path.display(), "connected to the Coder agent audit socket");
        }
        self.connect_failures = 0;
        if self.must_probe() {
            // The probe carries no records: an older agent closes on it and nothing is lost.
            match write_status(&mut stream, &self.stats, &mut self.reported, true).await {
                Ok(()) => {
                    self.link = Link::Probing {
                        stream,
                        until: Instant::now() + PROBE_WINDOW,
                    }
                }
                Err(_) => self.wait(),
            }
        } else {
            self.link = Link::Open { stream };
        }
    }

    /// Probing → Open: the agent kept the connection through the window.
    fn probe_passed(&mut self) {
        let link = std::mem::replace(&mut self.link, Link::Waiting { at: Instant::now() });
        self.link = match link {
            Link::Probing { stream, .. } => Link::Open { stream },
            other => other,
        };
    }

    /// Probing/Open → Waiting. Frames the agent did not read are sent again; when it read
    /// everything nothing is resent, so nothing is duplicated.
    fn closed(&mut self, state: Peer) {
        let was = std::mem::replace(&mut self.link, Link::Waiting { at: Instant::now() });
        let inflight = self.store.inflight_records();
        if state == Peer::ClosedAllRead {
            self.store.ack();
        } else {
            self.stats.sent.fetch_sub(inflight as u64, Ordering::SeqCst);
            self.store.rewind();
        }
        if matches!(was, Link::Probing { .. }) && self.must_probe() {
            self.fell_back = true;
            self.stats.fell_back_to_v1.store(true, Ordering::SeqCst);
            tracing::warn!(
                "the Coder agent closed the audit socket right after a v2 frame: it predates \
                 v2; using v1 frames for the rest of this run and resending"
            );
        } else {
            tracing::warn!(
                resend_records = if state == Peer::ClosedAllRead {
                    0
                } else {
                    inflight
                },
                "the Coder agent closed the audit socket; reconnecting"
            );
            self.wait();
        }
    }

    /// Open: frames the agent has read are delivered. A peer that closed also shows 0 unread
    /// bytes (the kernel purged its queue), so ask whether it is still there.
    fn check_delivery(&mut self) {
        let Link::Open { stream } = &self.link else {
            return;
        };
        if self.store.inflight_records() == 0 || !matches!(unread_bytes(stream), Ok(0)) {
            return;
        }
        match peer_state(stream) {
            Peer::Open => {
                self.store.ack();
                self.reconnect.reset();
                self.poll.reset();
            }
            gone => self.closed(gone),
        }
    }

    /// Open: writes every waiting batch, then the drop status.
    async fn write_pending(&mut self) {
        let tag = self.tag();
        let Link::Open { stream } = &mut self.link else {
            return;
        };
        let mut broken = false;
        while let Some(b) = self.store.next_unsent(&self.stats) {
            if let Err(e) = stream.write_all(&b.frame(tag)).await {
                tracing::debug!(error = %e, "audit socket write failed");
                self.stats
                    .sent
                    .fetch_add(b.records as u64, Ordering::SeqCst);
                broken = true;
                break;
            }
            self.stats
                .sent
                .fetch_add(b.records as u64, Ordering::SeqCst);
            self.poll.reset();
        }
        if !broken && tag == Tag::V2 {
            broken = write_status(stream, &self.stats, &mut self.reported, false)
                .await
                .is_err();
        }
        if broken {
            // The write error (EPIPE) says nothing about what the agent read; the pending
            // socket error does.
            let state = match peer_state(stream) {
                Peer::ClosedAllRead => Peer::ClosedAllRead,
                _ => Peer::ClosedUnread,
            };
            self.closed(state);
        }
    }

    /// After the loop: say where undelivered records are.
    async fn finish(mut self) {
        self.store.sync();
        let left = self.store.undelivered();
        if self.store.is_disk() {
            self.stats.spooled_at_exit.store(left, Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(
                    records = left,
                    "audit records not yet delivered stay in the spool; the next boundary run \
                     sends them to the Coder agent"
                );
            }
        } else if left > 0 && self.stats.connections.load(Ordering::SeqCst) == 0 {
            // Outside Coder there is no agent at all: one line, not an alarm.
            tracing::info!(
                records = left,
                path = %self.cfg.socket_path.display(),
                "no Coder agent audit socket during this run; records were not forwarded"
            );
        } else if let Store::Memory { unsent, inflight } = &self.store {
            for b in unsent.iter().chain(inflight) {
                self.drops.note(
                    b.first_seq,
                    b.last_seq,
                    b.records as u64,
                    "not delivered to the Coder agent before exit",
                );
            }
        }
        self.drops.flush();
        if let Store::Disk(spool) = self.store {
            spool.close();
        }
        if let Link::Open { mut stream } | Link::Probing { mut stream, .. } = self.link {
            let _ = stream.shutdown().await;
        }
    }
}
