//! The socket side of the link: what the kernel says about the agent's end, the status frame,
//! and the one backoff type every retry and poll uses.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use boundary_proto::frame::{self, Tag};
use boundary_proto::pb::{boundary_message, BoundaryMessage, BoundaryStatus};
use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::ForwarderStats;

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

/// What the kernel says about the agent's end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Open,
    /// Closed with nothing of ours left unread: every frame written reached the agent.
    ClosedAllRead,
    /// Closed with our data still in its queue (ECONNRESET), or state unknown.
    ClosedUnread,
}

/// A tag-2 `BoundaryStatus` frame with the drops since `reported`, and the counts it reports
/// up to; `None` when there is nothing new to report (unless `force`).
pub(crate) fn status_frame(
    stats: &ForwarderStats,
    reported: (u64, u64),
    force: bool,
) -> Option<(Bytes, (u64, u64))> {
    let now = (
        stats.dropped_channel_full.load(Ordering::SeqCst),
        stats.dropped_batch_full.load(Ordering::SeqCst),
    );
    if now == reported && !force {
        return None;
    }
    let msg = BoundaryMessage {
        msg: Some(boundary_message::Msg::Status(BoundaryStatus {
            dropped_channel_full: (now.0 - reported.0) as i64,
            dropped_batch_full: (now.1 - reported.1) as i64,
        })),
    };
    let bytes = frame::encode_message(Tag::V2, &msg).expect("a status message is tiny");
    Some((bytes, now))
}

pub(crate) async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A non-blocking read: the agent never sends, so data or "would block" means open, end of
/// stream means it closed after reading everything, ECONNRESET means it closed with frames of
/// ours unread (Linux sets that error exactly then).
pub(crate) fn peer_state(stream: &UnixStream) -> Peer {
    let mut b = [0u8; 64];
    match stream.try_read(&mut b) {
        Ok(0) => Peer::ClosedAllRead,
        Ok(_) => Peer::Open,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peer::Open,
        Err(_) => Peer::ClosedUnread,
    }
}

/// Bytes written to a Unix stream socket that the peer has not read yet.
pub(crate) fn unread_bytes(stream: &UnixStream) -> io::Result<usize> {
    boundary_jail::unix_unread_bytes(stream.as_fd())
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
