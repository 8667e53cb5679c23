//! Request bodies on their way upstream, and draining what a refused request still sends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::BoxError;
use crate::io::ActivityGuard;

/// A request body's place among what is in flight on its client connection, held until the
/// body has been read to its end or dropped: until then the HTTP/1.1 connection is in the
/// middle of a message and must not be parked. `None` for a request without a body.
pub(super) type BodyGuard = Option<ActivityGuard>;

/// Reads (and discards) what is left of a refused request's body in the background, so the
/// client finishes sending and reads our answer: dropping the body unread makes HTTP/2 reset
/// the stream, which some clients report instead of the 403. Bounded in size and time.
pub(super) fn drain(body: Incoming, guard: BodyGuard) {
    use hyper::body::Body;
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut left: usize = 1 << 20;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    left = left.saturating_sub(data.len());
                    if left == 0 {
                        break;
                    }
                }
            }
        })
        .await;
        // The body first: the guard says the connection is past this message.
        drop(body);
        drop(guard);
    });
}

/// A client's request body on its way upstream. If the upstream leg gives up on it early
/// (connect failure, origin answered without reading it), the rest is drained so the client
/// still gets our answer instead of a reset stream. A client that sends nothing of the body
/// for the client stall timeout while the origin waits for it fails the request, so a
/// declared body that never comes cannot hold a place under the upstream caps.
pub(crate) struct RequestBody {
    body: Option<Incoming>,
    limit: Duration,
    /// Runs while the origin waits for a piece the client has not sent.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Told once the whole body has gone upstream (or there is none).
    sent: Arc<Sent>,
    /// Released once the body has ended (declared last: dropped after the body).
    guard: BodyGuard,
}

/// Whether a request's body has been sent in full: from then on the origin owes the answer.
#[derive(Default)]
pub(super) struct Sent {
    done: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Sent {
    fn mark(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the body has been sent in full.
    pub(super) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.done.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl RequestBody {
    /// The body, and what tells when it has been sent in full.
    pub(super) fn new(body: Incoming, limit: Duration, guard: BodyGuard) -> (Self, Arc<Sent>) {
        use hyper::body::Body;
        let sent = Arc::new(Sent::default());
        if body.is_end_stream() {
            sent.mark();
        }
        let this = Self {
            body: Some(body),
            limit,
            stall: None,
            sent: sent.clone(),
            guard,
        };
        (this, sent)
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Pending => {
                let limit = this.limit;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if stall.as_mut().poll(cx).is_ready() {
                    tracing::warn!(?limit, "a client sent nothing of its request body for the stall timeout; ending the request");
                    return Poll::Ready(Some(Err(format!(
                        "the client sent nothing of its request body for {limit:?}"
                    )
                    .into())));
                }
                Poll::Pending
            }
            ready => {
                this.stall = None;
                if matches!(ready, Poll::Ready(None)) {
                    this.sent.mark();
                    this.guard = None;
                }
                ready.map(|f| f.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drain(body, self.guard.take());
            }
        }
    }
}
