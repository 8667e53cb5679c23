//! The task's transitions: batches into the store, connecting and checking the listener,
//! writing frames without blocking, learning what the agent read, and the exit summary.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use boundary_proto::frame::Tag;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::link::{Frame, Link, Outgoing, Task, BURST, PACE};
use super::store::Store;
use super::wire::{peer_state, status_frame, unread_bytes, Peer};
use super::PROBE_WINDOW;

impl Task {
    pub(super) fn close_batch(&mut self) {
        if !self.batcher.is_empty() {
            let b = self.batcher.take();
            self.closed.push_back(b);
        }
        self.stash();
    }

    /// Moves closed batches into the store; what it refuses is dropped and logged.
    pub(super) fn stash(&mut self) {
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

    pub(super) async fn connect(&mut self) {
        match UnixStream::connect(&self.cfg.socket_path).await {
            Ok(stream) => self.connected(stream),
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
    pub(super) fn connected(&mut self, stream: UnixStream) {
        let cred = stream.peer_cred().map(|c| (c.pid(), c.uid()));
        if self.cfg.verify_peer && !self.gate.admit(&self.cfg.socket_path, stream.as_fd(), cred) {
            self.wait();
            return;
        }
        self.stats.connections.fetch_add(1, Ordering::SeqCst);
        if self.connect_failures > 0 {
            tracing::info!(path = %self.cfg.socket_path.display(), "connected to the Coder agent audit socket");
        }
        self.connect_failures = 0;
        self.out = None;
        self.burst = 0;
        self.paused_until = None;
        if self.must_probe() {
            // The probe carries no records: an older agent closes on it and nothing is lost.
            if let Some((bytes, now)) = status_frame(&self.stats, self.reported, true) {
                self.out = Some(Outgoing {
                    bytes,
                    at: 0,
                    kind: Frame::Status(now),
                });
            }
            self.link = Link::Probing {
                stream,
                until: Instant::now() + PROBE_WINDOW,
            };
        } else {
            self.link = Link::Open { stream };
        }
    }

    /// Probing → Open: the agent kept the connection through the window.
    pub(super) fn probe_passed(&mut self) {
        let link = std::mem::replace(&mut self.link, Link::Waiting { at: Instant::now() });
        self.link = match link {
            Link::Probing { stream, .. } => Link::Open { stream },
            other => other,
        };
    }

    /// Probing/Open → Waiting. Frames the agent did not read are sent again; when it read
    /// everything nothing is resent, so nothing is duplicated (but a batch whose frame was
    /// only partly written is always sent again: the agent cannot have used it).
    pub(super) fn closed(&mut self, state: Peer) {
        let was = std::mem::replace(&mut self.link, Link::Waiting { at: Instant::now() });
        let partial = self
            .out
            .take()
            .is_some_and(|o| o.kind == Frame::Batch && o.at < o.bytes.len());
        let inflight = self.store.inflight_records();
        let resent = if state == Peer::ClosedAllRead {
            self.store.ack(partial)
        } else {
            self.store.rewind();
            inflight
        };
        self.stats.sent.fetch_sub(resent as u64, Ordering::SeqCst);
        if matches!(was, Link::Probing { .. }) && self.must_probe() {
            self.fell_back = true;
            self.stats.fell_back_to_v1.store(true, Ordering::SeqCst);
            tracing::warn!(
                "the Coder agent closed the audit socket right after a v2 frame: it predates \
                 v2; using v1 frames for the rest of this run and resending"
            );
        } else {
            tracing::warn!(
                resend_records = resent,
                "the Coder agent closed the audit socket; reconnecting"
            );
            self.wait();
        }
    }

    /// Open: frames the agent has read are delivered. A peer that closed also shows 0 unread
    /// bytes (the kernel purged its queue), so ask whether it is still there.
    pub(super) fn check_delivery(&mut self) {
        let Link::Open { stream } = &self.link else {
            return;
        };
        let writing_batch = self.out.as_ref().is_some_and(|o| o.kind == Frame::Batch);
        if writing_batch
            || self.store.inflight_records() == 0
            || !matches!(unread_bytes(stream), Ok(0))
        {
            return;
        }
        match peer_state(stream) {
            Peer::Open => {
                self.store.ack(false);
                self.reconnect.reset();
                self.poll.reset();
                if self.burst >= BURST {
                    self.paused_until = Some(Instant::now() + PACE);
                }
                self.burst = 0;
            }
            gone => self.closed(gone),
        }
    }

    /// Writes what the socket takes without waiting: the frame under way, then (Open) every
    /// waiting batch, then the drop status. The rest goes when the socket is writable again.
    pub(super) fn write_pending(&mut self) {
        let tag = self.tag();
        loop {
            if self.out.is_none() && matches!(self.link, Link::Open { .. }) {
                self.out = self.next_frame(tag);
            }
            let (Some(o), Some(stream)) = (self.out.as_mut(), self.link.stream()) else {
                return;
            };
            match stream.try_write(&o.bytes[o.at..]) {
                Ok(n) if n > 0 => {
                    o.at += n;
                    if o.at == o.bytes.len() {
                        if let Frame::Status(now) = o.kind {
                            self.reported = now;
                        }
                        self.out = None;
                    }
                }
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "audit socket write failed");
                    // The write error (EPIPE) says nothing about what the agent read; the
                    // pending socket error does.
                    let state = match peer_state(stream) {
                        Peer::ClosedAllRead => Peer::ClosedAllRead,
                        _ => Peer::ClosedUnread,
                    };
                    self.closed(state);
                    return;
                }
            }
        }
    }

    /// The next frame for an open link: a waiting batch (now in flight), else the drop status;
    /// none while a burst waits to be read or paced.
    fn next_frame(&mut self, tag: Tag) -> Option<Outgoing> {
        if self.burst >= BURST {
            return None;
        }
        if let Some(t) = self.paused_until {
            if Instant::now() < t {
                return None;
            }
            self.paused_until = None;
        }
        if let Some(b) = self.store.next_unsent(&self.stats) {
            self.burst += 1;
            self.stats
                .sent
                .fetch_add(b.records as u64, Ordering::SeqCst);
            self.poll.reset();
            return Some(Outgoing {
                bytes: b.frame(tag),
                at: 0,
                kind: Frame::Batch,
            });
        }
        if tag != Tag::V2 {
            return None;
        }
        status_frame(&self.stats, self.reported, false).map(|(bytes, now)| Outgoing {
            bytes,
            at: 0,
            kind: Frame::Status(now),
        })
    }

    /// After the loop: say where undelivered records are.
    pub(super) async fn finish(mut self) {
        for b in self.store.sync() {
            self.drops.note(
                b.first_seq,
                b.last_seq,
                b.records as u64,
                "not delivered to the Coder agent before exit, and the spool could not take them",
            );
        }
        let left = self.store.undelivered();
        if self.store.is_disk() {
            // Written but never confirmed: they stay in the spool and a later run sends them.
            let unconfirmed = self.store.inflight_records() as u64;
            self.stats.sent.fetch_sub(unconfirmed, Ordering::SeqCst);
            self.stats.spooled_at_exit.store(left, Ordering::SeqCst);
            if left > 0 {
                tracing::warn!(
                    records = left,
                    "audit records not yet delivered stay in the spool; the next boundary run \
                     sends them to the Coder agent"
                );
            }
        } else if left > 0 && self.stats.connections.load(Ordering::SeqCst) == 0 {
            // Outside Coder there is no agent at all: the pipeline said so once at info when
            // it started; this is detail.
            tracing::debug!(
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
        if let Store::Disk(spool, _) = self.store {
            spool.close();
        }
        if let Link::Open { mut stream } | Link::Probing { mut stream, .. } = self.link {
            let _ = stream.shutdown().await;
        }
    }
}
