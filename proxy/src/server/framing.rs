//! Part of deciding: requests whose framing an origin could read differently from the proxy.
//!
//! hyper's HTTP/1.1 parser already refuses (400, connection closed) conflicting
//! `Content-Length` values, a `Transfer-Encoding` whose last coding is not `chunked`
//! (`xchunked`, `chunked, identity`), whitespace before a header colon, obs-fold, and invalid
//! chunk sizes; with both `Content-Length` and `Transfer-Encoding` it uses the chunked framing,
//! drops the length and closes the client connection after the answer. That last case cannot
//! be refused here: hyper removes the `Content-Length` (or never stores it) before the request
//! reaches the proxy, and keeps no other trace of it (hyper 1.x `proto/h1/role.rs`).
//!
//! Every request is written upstream with the proxy's own framing, so what is left is what
//! hyper accepts but an origin may read differently: a body on a method whose body has no
//! defined meaning. Many origins ignore such a body and read it as the next request on the
//! connection, a request the proxy never decided; so such a body is refused. So is a request
//! with more than one `Host` header (hyper keeps them all): the proxy routes and decides by the
//! first, and an origin (or a proxy behind it) that reads another would serve a host no one
//! decided.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Version};
use hyper::body::Body;

/// Methods whose body has no defined meaning (RFC 9110 §9.3); CONNECT has none in hyper.
const BODYLESS: [Method; 4] = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];

/// Why the request is refused for naming its host twice, if it is.
pub(super) fn host_refusal<B>(req: &Request<B>) -> Option<String> {
    let hosts = req.headers().get_all(HOST).iter().count();
    (hosts > 1).then(|| {
        format!(
            "the request has {hosts} Host headers: Boundary decides on one host, and an origin \
             reading another would serve a request no one decided. Send exactly one Host header"
        )
    })
}

/// Why the request's framing is refused, if it is.
pub(super) fn refusal<B: Body>(req: &Request<B>) -> Option<String> {
    if !BODYLESS.contains(req.method()) {
        return None;
    }
    let declared = if req.headers().contains_key(TRANSFER_ENCODING) {
        Some("Transfer-Encoding".to_string())
    } else {
        req.headers()
            .get_all(CONTENT_LENGTH)
            .iter()
            .find(|v| v.as_bytes() != b"0")
            .map(|v| format!("Content-Length {}", String::from_utf8_lossy(v.as_bytes())))
    };
    // HTTP/1.1 has no other way to carry a body; over HTTP/2 a body without a length is sent
    // upstream with HTTP/2 framing or not at all, which no origin can misread.
    let declared = declared.or_else(|| {
        (req.version() < Version::HTTP_2 && !req.body().is_end_stream())
            .then(|| "a body".to_string())
    })?;
    Some(format!(
        "{m} requests must not carry a body (this one has {declared}): an origin that ignores \
         it would read it as another request that Boundary never decided. Send data with POST \
         or PUT, or send the {m} without a body",
        m = req.method()
    ))
}
