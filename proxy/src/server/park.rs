//! Idle client connections give their buffers back. An HTTP/1.1 connection that has been
//! settled for [`PARK_AFTER`] (nothing in flight: no request, no request or response body
//! still moving; everything written flushed) is taken apart: hyper's read and write buffers
//! (8 KiB each), its cached header map and its connection state are freed, and the proxy waits
//! for the client's next byte holding only the socket and the TLS session. That byte starts a
//! fresh HTTP/1.1 connection on the same stream, so the client sees one keep-alive connection
//! throughout. Bytes hyper had read but not parsed yet are put back in front of the stream.
//!
//! HTTP/2 connections are not parked (their stream and header-compression state cannot be
//! rebuilt), nor are connections in tunnels no rule allows (their header-read timer must run
//! on). See BENCHMARKS.md, "Memory per idle connection", for what an idle connection holds.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Proxy, ProxyBody};
use crate::io::{Activity, FlushMark, Rewind};

/// How long an HTTP/1.1 connection stays settled before it is parked: long enough that a
/// client sending request after request never pays for a rebuild (a few µs of allocations
/// when it does), short next to how long pooled keep-alive connections sit idle (seconds to
/// minutes), and short enough that a burst of new connections does not leave many unparked
/// at once (their freed buffers stay in the allocator: see BENCHMARKS.md).
pub(super) const PARK_AFTER: Duration = Duration::from_millis(250);

/// What a client connection's requests go to (`Proxy::serve_http`'s service), cloned into
/// each HTTP/1.1 connection built on the stream.
pub(super) trait ClientService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<T> ClientService for T where
    T: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The client stream under HTTP: marks unflushed output, and can take bytes back.
type Stream<S> = FlushMark<Rewind<S>>;

/// How one HTTP/1.1 connection on a stream ended.
enum Round {
    Closed,
    Park,
}

impl Proxy {
    /// Serves HTTP/1.1 on `io` until the client is gone, parking the connection whenever it
    /// settles (see the module comment).
    pub(super) async fn serve_h1<S, Svc>(
        &self,
        mut io: Stream<S>,
        service: Svc,
        activity: &Arc<Activity>,
        unruled: bool,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        Svc: ClientService,
    {
        let idle = self.config.idle_timeout;
        let mut builder = http1::Builder::new();
        // No header-read timer: it would arm a timer for every request, and the idle watchdog
        // already closes a connection whose headers never finish (nothing in flight).
        builder
            .keep_alive(true)
            .half_close(false)
            .max_buf_size(super::MAX_REQUEST_HEAD);
        if unruled {
            // Every request here is denied: a client that sends no complete request head (SSH
            // and other protocols over CONNECT) is closed after the handshake timeout, not
            // the idle timeout, and its CONNECT audited then.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(self.config.handshake_timeout);
        }
        loop {
            // Boxed, so a parked connection holds none of it.
            let conn = builder.serve_connection(TokioIo::new(io), service.clone());
            let mut conn = Box::pin(conn.with_upgrades());
            let round = drive_h1(conn.as_mut(), activity, idle, !unruled).await;
            if let Round::Closed = round {
                return;
            }
            let Some(parts) = Pin::into_inner(conn).into_parts() else {
                return;
            };
            // Taken out field by field: hyper's read buffer, even when empty, holds its
            // allocation and must not live on while parked.
            let (stream, unread) = (parts.io, parts.read_buf);
            io = stream.into_inner();
            if !unread.is_empty() {
                // The start of the next request is here already: serve it at once.
                io.get_mut().push_front(unread);
                continue;
            }
            drop(unread);
            let _parked = self.metrics.parked();
            self.release.freed();
            let hs = self.config.handshake_timeout;
            if !wait_for_client(&mut io, activity, idle, hs).await {
                return;
            }
        }
    }
}

/// Serves until the connection ends or may be parked (only when `park`).
async fn drive_h1<C>(
    mut conn: Pin<&mut C>,
    activity: &Activity,
    idle: Duration,
    park: bool,
) -> Round
where
    C: Future<Output = hyper::Result<()>> + GracefulShutdown,
{
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                log_end(res);
                return Round::Closed;
            }
            _ = activity.idle_for(idle) => {
                close_idle(conn, activity, idle).await;
                return Round::Closed;
            }
            _ = settled_for(activity, PARK_AFTER), if park => {}
        }
        // Settled before this poll, so whatever ended before it (a request body dropped by
        // another task, which makes hyper stop reading it) is seen by hyper now; parked only
        // if this poll left it settled too.
        if let Poll::Ready(res) =
            std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await
        {
            log_end(res);
            return Round::Closed;
        }
        if activity.settled() {
            return Round::Park;
        }
    }
}

/// A server connection that can be asked to close once its current work is done.
pub(super) trait GracefulShutdown {
    fn shutdown_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulShutdown for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> GracefulShutdown for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shutdown_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves `conn` until it ends, closing it gracefully after the idle timeout.
pub(super) async fn until_closed<C>(mut conn: Pin<&mut C>, activity: &Activity, idle: Duration)
where
    C: Future<Output = hyper::Result<()>> + GracefulShutdown,
{
    tokio::select! {
        res = conn.as_mut() => log_end(res),
        _ = activity.idle_for(idle) => close_idle(conn, activity, idle).await,
    }
}

/// The idle timeout passed: a graceful shutdown waits for a request head that is still
/// arriving; one that is still not complete (nothing in flight) after another idle period is
/// cut off.
async fn close_idle<C>(mut conn: Pin<&mut C>, activity: &Activity, idle: Duration)
where
    C: Future<Output = hyper::Result<()>> + GracefulShutdown,
{
    tracing::debug!(?idle, "closing idle client connection");
    conn.as_mut().shutdown_gracefully();
    activity.touch();
    tokio::select! {
        res = conn.as_mut() => log_end(res),
        _ = activity.idle_for(idle) => {
            tracing::debug!("dropping a connection that stayed idle after shutdown");
        }
    }
}

fn log_end(res: hyper::Result<()>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Resolves once the connection has been settled, with no request begun or ended, for
/// `quiet`. Wakes at most once per `quiet` while the connection is busy.
async fn settled_for(activity: &Activity, quiet: Duration) {
    let mut not_before = Instant::now();
    loop {
        let at = (activity.last_active() + quiet).max(not_before);
        tokio::time::sleep_until(at.into()).await;
        if activity.settled() && activity.last_active() + quiet <= Instant::now() {
            return;
        }
        not_before = Instant::now() + quiet;
    }
}

/// Waits, holding no buffer, for a parked client's next byte and puts it back; false when
/// the client closed or failed, or stayed idle for the idle timeout (then the connection is
/// shut down as hyper would: TLS close_notify, then FIN).
async fn wait_for_client<S>(
    io: &mut Stream<S>,
    activity: &Activity,
    idle: Duration,
    hs: Duration,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut byte = [0u8; 1];
    tokio::select! {
        read = io.read(&mut byte) => match read {
            Ok(1) => {
                io.get_mut().push_front(Bytes::copy_from_slice(&byte));
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "idle client connection failed");
                false
            }
        },
        _ = activity.idle_for(idle) => {
            tracing::debug!(?idle, "closing idle client connection");
            let _ = tokio::time::timeout(hs, io.shutdown()).await;
            false
        }
    }
}

/// The HTTP/2 connection preface a client opens with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with the HTTP/2 preface (after ALPN h2, or with prior
/// knowledge); reads only as far as it takes to tell, and puts what it read back.
pub(super) async fn sniff_h2<S: AsyncRead + Unpin>(io: &mut Rewind<S>) -> io::Result<bool> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    while n < buf.len() {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            break;
        }
    }
    io.push_front(Bytes::copy_from_slice(&buf[..n]));
    Ok(&buf == H2_PREFACE)
}
