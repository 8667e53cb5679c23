//! Request bodies on their way upstream, and draining what a refused request still sends.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Reads (and discards) what is left of a refused request's body in the background, so the
/// client finishes sending and reads our answer: dropping the body unread makes HTTP/2 reset
/// the stream, which some clients report instead of the 403. Bounded in size and time.
pub(super) fn drain(body: Incoming) {
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
    });
}

/// A client's request body on its way upstream. If the upstream leg gives up on it early
/// (connect failure, origin answered without reading it), the rest is drained so the client
/// still gets our answer instead of a reset stream.
pub(crate) struct RequestBody(pub(super) Option<Incoming>);

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.0.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(body) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                drain(body);
            }
        }
    }
}
