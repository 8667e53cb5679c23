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
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use boundary_proto::frame::{self, Tag};
use boundary_proto::pb::{boundary_message, BoundaryMessage, BoundaryStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{Batch, Batcher};
use super::spool::Spool;
use super::store::Store;
use super::{base_request, DropLog, ForwarderConfig, ForwarderStats, PROBE_WINDOW};
use crate::peer::{self, AgentPeer};
use crate::{AuditProtocol, AuditRecord, RunContext};

/// A delay that doubles per failure up to a cap, and starts over on success.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    start: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max,
            next: start,
        }
    }

    /// The delay to wait now; the following one is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

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

/// What the kernel says about the agent's end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Open,
    /// Closed with nothing of ours left unread: every frame written reached the agent.
    ClosedAllRead,
    /// Closed with our data still in its queue (ECONNRESET), or state unknown.
    ClosedUnread,
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
    agent: Option<AgentPeer>,
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
        let store = match cfg.spool.take() {
            None => Store::memory(),
            Some(sc) => match Spool::open(&sc, &run.session_id.to_string()) {
                Ok((s, opened)) => {
                    if opened.adopted_runs > 0 {
                        tracing::warn!(
                            runs = opened.adopted_runs,
                            bytes = opened.adopted_bytes,
                            torn_entries = opened.torn,
                            dir = %sc.dir.display(),
                            "earlier boundary runs left audit records undelivered; sending them \
                             to the Coder agent first"
                        );
                    }
                    Store::Disk(s)
                }
                Err(e) => {
                    tracing::error!(
                        dir = %sc.dir.display(),
                        error = %e,
                        "cannot open the audit spool directory; records wait in memory only \
                         (bounded by --audit-queue-size) and are lost if boundary exits before \
                         the agent takes them; fix the directory's permissions"
                    );
                    Store::memory()
                }
            },
        };
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
            agent: None,
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
        mut rx: mpsc::Receiver<AuditRecord>,
        mut shutdown_rx: oneshot::Receiver<Instant>,
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
        let mut rx_open = true;
        let mut scratch = [0u8; 256];
        loop {
            self.check_delivery();
            self.write_pending().await;
            if self.deadline.is_some() && self.done() {
                break;
            }
            let batch_due = self.batcher.deadline;
            let (connect_at, probe_until, has_conn) = match &self.link {
                Link::Waiting { at } => (self.store.has_unsent().then_some(*at), None, false),
                Link::Probing { until, .. } => (None, Some(*until), true),
                Link::Open { .. } => (None, None, true),
            };
            let poll = (matches!(self.link, Link::Open { .. })
                && self.store.inflight_records() > 0)
                .then(|| self.poll.next_delay());
            let stop_at = self.deadline;
            let shutting_down = stop_at.is_some();
            let stream = match &mut self.link {
                Link::Probing { stream, .. } | Link::Open { stream } => Some(stream),
                Link::Waiting { .. } => None,
            };
            let ev = tokio::select! {
                d = &mut shutdown_rx, if !shutting_down => {
                    Event::Shutdown(d.unwrap_or_else(|_| Instant::now()))
                }
                r = rx.recv(), if rx_open => Event::Record(r),
                _ = sleep_until_opt(batch_due), if batch_due.is_some() => Event::BatchDue,
                _ = sleep_until_opt(connect_at), if connect_at.is_some() => Event::ConnectDue,
                res = read_some(stream, &mut scratch), if has_conn => Event::Read(res),
                _ = sleep_until_opt(probe_until), if probe_until.is_some() => Event::ProbeDone,
                _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => Event::PollDue,
                _ = sleep_until_opt(stop_at), if shutting_down => Event::Deadline,
            };
            match ev {
                Event::Shutdown(deadline) => {
                    self.deadline = Some(deadline);
                    rx.close();
                    while let Ok(r) = rx.try_recv() {
                        self.batcher.push(&r, &mut self.closed);
                    }
                    rx_open = false;
                    self.close_batch();
                    if let Link::Waiting { at } = &mut self.link {
                        *at = Instant::now();
                    }
                }
                Event::Record(Some(r)) => {
                    self.batcher.push(&r, &mut self.closed);
                    // Take what else is waiting without another trip through the loop.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(r) => self.batcher.push(&r, &mut self.closed),
                            Err(_) => break,
                        }
                    }
                    self.stash();
                }
                Event::Record(None) => rx_open = false,
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
                Event::Deadline => break,
            }
        }
        self.finish().await;
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
                Ok(()) => self.spool_failing = false,
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
        if self.cfg.verify_peer && !self.accept_peer(&stream) {
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

    /// The peer check; remembers the first agent and says when a reconnection differs.
    fn accept_peer(&mut self, stream: &UnixStream) -> bool {
        let path = &self.cfg.socket_path;
        let verdict = match stream.peer_cred() {
            Ok(c) => peer::check(path, c.pid(), c.uid()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the agent socket's peer credentials");
                return false;
            }
        };
        match verdict {
            Err(refused) => {
                tracing::error!(
                    "{refused}; no audit record is sent there, they wait for the real agent"
                );
                false
            }
            Ok(p) => {
                match &self.agent {
                    None => {
                        tracing::info!(pid = p.pid, exe = ?p.exe, "Coder agent audit socket peer accepted")
                    }
                    Some(first) if first.exe != p.exe => tracing::error!(
                        first_pid = first.pid, first_exe = ?first.exe, pid = p.pid, exe = ?p.exe,
                        "a different program now listens on the Coder agent audit socket"
                    ),
                    Some(first) if first.pid != p.pid => tracing::warn!(
                        first_pid = first.pid, pid = p.pid, exe = ?p.exe,
                        "another process of the same program now listens on the Coder agent \
                         audit socket (the agent restarted?)"
                    ),
                    Some(_) => {}
                }
                self.agent.get_or_insert(p);
                true
            }
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

async fn read_some(stream: Option<&mut UnixStream>, buf: &mut [u8]) -> io::Result<usize> {
    match stream {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
