//! The client stall timeout: a response whose client takes nothing for too long is ended, so
//! a jailed process that sends many requests and never reads the answers cannot hold an
//! origin's places under the upstream caps (or its client connections' in-flight counts)
//! forever.
//!
//! "Takes nothing" is judged on the response body, not on the socket, so it covers every way a
//! client can stop reading: an HTTP/1.1 client whose socket buffers are full, an HTTP/2 client
//! that never opens its flow-control windows (the body is then never asked for data at all),
//! and a client that reads too little to let the proxy hand over the next piece. The clock
//! runs only while the body has a piece ready or waiting to be asked for: while the body waits
//! for the origin (a slow origin, a quiet event stream) the client is not to blame.
//!
//! A stalled body is dropped by the proxy's sweeper: that frees its upstream permit and closes
//! the upstream stream; the client's next read of it fails (HTTP/1.1: the connection is
//! closed, HTTP/2: the stream is reset). One sweeping task per proxy looks at every open
//! response body every [`Sweeper::tick`] (an eighth of the limit, 10 ms to 1 s), so a stalled
//! body ends between the limit and the limit plus a tick; a task and a timer per response cost
//! a spawn, a timer and a cross-thread wake-up on every request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The default stall timeout: long enough for a client that pauses to process what it read,
/// short against a flood that holds the upstream caps.
pub const DEFAULT_CLIENT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a stalled response ended, as the error its client connection sees.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing of this response for {0:?}; Boundary ended it")]
pub(crate) struct Stalled(Duration);

/// Ends the response bodies whose clients stall, for one proxy (see the module text).
pub(crate) struct Sweeper {
    limit: Duration,
    /// Every body handed over and not yet seen gone; the dead are dropped at each sweep.
    bodies: Mutex<Vec<Weak<dyn Sweep>>>,
    /// The sweeping task runs; it stops when no body is left and the next one starts it.
    running: AtomicBool,
}

/// A watched body, as the sweeper sees it.
trait Sweep: Send + Sync {
    /// Ends the body if its client stalled past `limit`; false once the body is over.
    fn sweep(&self, now: Instant, limit: Duration) -> bool;
}

impl Sweeper {
    /// A sweeper for bodies whose clients may take nothing for at most `limit`.
    pub(crate) fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            bodies: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
        })
    }

    /// How often the bodies are looked at.
    fn tick(&self) -> Duration {
        (self.limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Sweep>>> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watch(self: &Arc<Self>, body: Weak<dyn Sweep>) {
        let mut bodies = self.lock();
        bodies.push(body);
        // Under the lock, so the task cannot stop between the push and this check.
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(sweeping(Arc::downgrade(self)));
        }
    }
}

/// Sweeps every tick while there are bodies; ends when none is left or the proxy is gone.
async fn sweeping(sweeper: Weak<Sweeper>) {
    loop {
        let Some(s) = sweeper.upgrade() else { return };
        let tick = s.tick();
        {
            let now = Instant::now();
            let mut bodies = s.lock();
            bodies.retain(|b| b.upgrade().is_some_and(|b| b.sweep(now, s.limit)));
            if bodies.is_empty() {
                s.running.store(false, Ordering::Release);
                return;
            }
        }
        drop(s);
        tokio::time::sleep(tick).await;
    }
}

struct Shared<B, G> {
    start: Instant,
    /// The body and what it holds (its place among the requests in flight); `None` once it
    /// ended or the sweeper ended it.
    inner: Mutex<Option<(B, G)>>,
    /// Milliseconds after `start` when the client last asked for a piece.
    asked_ms: AtomicU64,
    /// The last ask found nothing ready: the body waits for the origin, not for the client.
    waiting: AtomicBool,
    /// The sweeper ended the body (as opposed to its normal end).
    stalled: AtomicBool,
}

impl<B, G> Shared<B, G> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(B, G)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the stall clock (started at the last ask) runs out, or `None` while it is stopped.
    fn deadline(&self, limit: Duration) -> Option<Instant> {
        if self.waiting.load(Ordering::Acquire) {
            return None;
        }
        let asked = Duration::from_millis(self.asked_ms.load(Ordering::Acquire));
        Some(self.start + asked + limit)
    }
}

impl<B: Send, G: Send> Sweep for Shared<B, G> {
    fn sweep(&self, now: Instant, limit: Duration) -> bool {
        if self.deadline(limit).is_none_or(|d| d > now) {
            return self.lock().is_some();
        }
        if let Some(taken) = self.lock().take() {
            self.stalled.store(true, Ordering::Release);
            tracing::warn!(
                ?limit,
                "a client read nothing of a response for the stall timeout; ending it \
                 (its place under the upstream caps is freed)"
            );
            drop(taken);
        }
        false
    }
}

/// A response body under the stall timeout; `G` is held until the body ends or stalls.
pub(crate) struct Watched<B, G> {
    shared: Arc<Shared<B, G>>,
    /// Kept alive while a body may need it.
    sweeper: Arc<Sweeper>,
}

impl<B, G> Watched<B, G>
where
    B: Send + 'static,
    G: Send + 'static,
{
    /// Watches `body`; a body already at its end needs no sweeping.
    pub(crate) fn new(body: B, guard: G, sweeper: &Arc<Sweeper>) -> Self
    where
        B: Body,
    {
        let ended = body.is_end_stream();
        let shared = Arc::new(Shared {
            start: Instant::now(),
            inner: Mutex::new(Some((body, guard))),
            asked_ms: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
        });
        if !ended {
            let weak: Weak<Shared<B, G>> = Arc::downgrade(&shared);
            sweeper.watch(weak);
        }
        Self {
            shared,
            sweeper: sweeper.clone(),
        }
    }
}

impl<B, G> Body for Watched<B, G>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = &self.shared;
        shared.asked_ms.store(shared.now_ms(), Ordering::Release);
        let mut inner = shared.lock();
        let Some((body, _)) = inner.as_mut() else {
            if !shared.stalled.load(Ordering::Acquire) {
                return Poll::Ready(None); // it ended normally before
            }
            return Poll::Ready(Some(Err(Box::new(Stalled(self.sweeper.limit)))));
        };
        let polled = Pin::new(body).poll_frame(cx);
        shared.waiting.store(polled.is_pending(), Ordering::Release);
        if matches!(polled, Poll::Ready(None)) {
            // Done: free what the body holds now, not when hyper drops it.
            inner.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self.shared.lock().as_ref() {
            Some((b, _)) => b.is_end_stream(),
            None => !self.shared.stalled.load(Ordering::Acquire),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.shared
            .lock()
            .as_ref()
            .map(|(b, _)| b.size_hint())
            .unwrap_or_default()
    }
}

/// When a piped (upgraded) connection last moved a byte either way, and since when a write to
/// one of its ends has been waiting; shared by both ends' [`Clocked`] wrappers.
struct PipeClock {
    start: Instant,
    moved_ms: AtomicU64,
    /// `u64::MAX` while no write waits.
    blocked_ms: AtomicU64,
    /// Told when a write begins to wait (the deadline may come sooner).
    blocked: tokio::sync::Notify,
}

impl PipeClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The earlier of: the idle limit after the last byte moved, the stall limit after a write
    /// began to wait; with which of the two it is.
    fn deadline(&self, idle: Duration, stall: Duration) -> (Instant, &'static str) {
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        let idle_at = at(self.moved_ms.load(Ordering::Acquire), idle);
        match self.blocked_ms.load(Ordering::Acquire) {
            u64::MAX => (idle_at, "idle"),
            b if at(b, stall) < idle_at => (at(b, stall), "stalled"),
            _ => (idle_at, "idle"),
        }
    }

    /// Resolves when the pipe has been idle for `idle` or a write has waited for `stall`.
    async fn expired(&self, idle: Duration, stall: Duration) -> &'static str {
        loop {
            let (at, why) = self.deadline(idle, stall);
            if at <= Instant::now() {
                return why;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.blocked.notified() => {}
            }
        }
    }
}

/// One end of a pipe, reporting its progress to the pipe's clock.
struct Clocked<S> {
    inner: S,
    clock: Arc<PipeClock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Clocked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.clock.now_ms();
            self.clock.moved_ms.store(now, Ordering::Release);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Clocked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        let clock = &self.clock;
        match &polled {
            Poll::Pending => {
                let now = clock.now_ms();
                let began = clock.blocked_ms.compare_exchange(
                    u64::MAX,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if began.is_ok() {
                    clock.blocked.notify_one();
                }
            }
            Poll::Ready(_) => {
                clock.blocked_ms.store(u64::MAX, Ordering::Release);
                clock.moved_ms.store(clock.now_ms(), Ordering::Release);
            }
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways between `a` and `b` until either side closes, nothing has moved for
/// `idle`, or a write to one side has waited `stall` (a peer that stopped reading): an upgraded
/// connection (WebSocket) must not hold its place among the pipes forever either.
pub(crate) async fn pipe<A, B>(a: A, b: B, idle: Duration, stall: Duration) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(PipeClock {
        start: Instant::now(),
        moved_ms: AtomicU64::new(0),
        blocked_ms: AtomicU64::new(u64::MAX),
        blocked: tokio::sync::Notify::new(),
    });
    let wrap = |inner| Clocked {
        inner,
        clock: clock.clone(),
    };
    let (mut a, mut b) = (
        wrap(a),
        Clocked {
            inner: b,
            clock: clock.clone(),
        },
    );
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => r.map(|_| ()),
        why = clock.expired(idle, stall) => {
            tracing::debug!(why, ?idle, ?stall, "closing an upgraded connection");
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the connection was {why} too long")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed piece by piece by the test (the origin).
    struct Fed(mpsc::UnboundedReceiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    const LIMIT: Duration = Duration::from_millis(200);

    fn watched() -> (mpsc::UnboundedSender<Bytes>, Watched<Fed, Arc<()>>, Arc<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(());
        let body = Watched::new(Fed(rx), held.clone(), &Sweeper::new(LIMIT));
        (tx, body, held)
    }

    #[tokio::test]
    async fn a_body_nobody_reads_is_ended_and_frees_what_it_holds() {
        let (tx, mut body, held) = watched();
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(Arc::strong_count(&held), 2);
        tokio::time::sleep(LIMIT * 4).await;
        assert_eq!(Arc::strong_count(&held), 1, "the place is freed");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("read nothing"), "{err}");
    }

    #[tokio::test]
    async fn the_sweeper_stops_when_no_body_is_left_and_starts_again_for_the_next() {
        let sweeper = Sweeper::new(LIMIT);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        drop(Watched::new(Fed(rx), (), &sweeper));
        drop(tx);
        tokio::time::sleep(LIMIT).await;
        assert!(
            !sweeper.running.load(Ordering::Acquire),
            "stopped: nothing to watch"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(());
        let mut body = Watched::new(Fed(rx), held.clone(), &sweeper);
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert!(body.frame().await.is_some());
        tokio::time::sleep(LIMIT * 4).await;
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the next stalled body is still ended"
        );
    }

    #[tokio::test]
    async fn a_body_that_ended_stays_ended_and_frees_at_once() {
        let (tx, mut body, held) = watched();
        tx.send(Bytes::from_static(b"a")).unwrap();
        drop(tx);
        assert!(body.frame().await.is_some());
        assert!(body.frame().await.is_none());
        assert_eq!(Arc::strong_count(&held), 1, "freed at the end, not at drop");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "not an error after its end");
    }

    #[tokio::test]
    async fn a_body_waiting_for_its_origin_is_not_a_stalled_client() {
        let (tx, mut body, held) = watched();
        // The client asks; the origin has nothing for much longer than the limit.
        let ask = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        tokio::time::sleep(LIMIT * 4).await;
        assert_eq!(
            Arc::strong_count(&held),
            2,
            "still held while the origin is slow"
        );
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(ask.await.unwrap(), Some(true));
    }

    #[tokio::test]
    async fn a_pipe_ends_when_idle_or_when_a_side_stops_reading_but_not_while_busy() {
        use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
        let long = Duration::from_secs(3600);
        // Nothing moves: closed as idle.
        let ((a, _a), (b, _b)) = (duplex(64), duplex(64));
        let err = pipe(a, b, LIMIT, long).await.unwrap_err();
        assert!(err.to_string().contains("idle"), "{err}");
        // One side writes on and on, the other never reads: closed as stalled.
        let ((a, mut a_far), (b, _b_far)) = (duplex(64), duplex(64));
        let feed = tokio::spawn(async move { while a_far.write_all(&[1; 64]).await.is_ok() {} });
        let err = pipe(a, b, long, LIMIT).await.unwrap_err();
        assert!(err.to_string().contains("stalled"), "{err}");
        feed.abort();
        // Traffic for longer than both limits (each piece within them): still open, and it
        // ends when a side closes.
        let ((a, mut a_far), (b, mut b_far)) = (duplex(64), duplex(64));
        let talk = tokio::spawn(async move {
            for _ in 0..8 {
                a_far.write_all(b"ping").await.unwrap();
                let mut got = [0; 4];
                b_far.read_exact(&mut got).await.unwrap();
                tokio::time::sleep(LIMIT / 2).await;
            }
        });
        let ended = pipe(a, b, LIMIT, LIMIT).await;
        talk.await.unwrap();
        assert!(ended.is_ok(), "{ended:?}");
    }
}
