//! Phase 6, responding: every answer the proxy writes itself. A refusal or an upstream
//! failure is rendered here only, with the HTTP status and, for gRPC clients (which read
//! `grpc-status`, not the HTTP status), the matching gRPC status set together.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::decide::Refusal;
use super::forward::Failure;
use super::ProxyBody;
use crate::upstream::ConnectError;

/// The first line of every 403 page: the text users and Coder's docs search for.
pub const BLOCKED_TITLE: &str = "Request Blocked by Boundary";

/// The answer to a refused request: the blocked page for a 403, else the reason as text.
pub(super) fn refusal(r: &Refusal, grpc: bool) -> Response<ProxyBody> {
    let resp = match r.kind.status() {
        StatusCode::FORBIDDEN => blocked(r),
        status => text(status, r.kind.reason()),
    };
    finish(resp, grpc)
}

/// The answer when the allowed request could not be forwarded: 502/504 with what went wrong
/// reaching the origin, or 400 when the request cannot be written upstream.
pub(super) fn failure(f: &Failure, grpc: bool) -> Response<ProxyBody> {
    let resp = match f {
        Failure::BadTarget(message) => text(StatusCode::BAD_REQUEST, message.clone()),
        Failure::UnaskedSwitch(message) => text(StatusCode::BAD_GATEWAY, message.clone()),
        Failure::AtCap { what, size, waited } => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Boundary already has {size} {what} in flight, the most it allows at once, and \
                 this one waited {waited:?} for its turn without getting one; nothing was sent \
                 upstream. Try again when fewer are running"
            ),
        ),
        Failure::NoAnswer { authority, waited } => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "Boundary sent the request to {authority}, which did not answer within \
                 {waited:?} (the idle timeout, --idle-timeout)"
            ),
        ),
        Failure::Upstream { authority, error } => upstream_failure(authority, error),
    };
    finish(resp, grpc)
}

/// An empty 200 (the answer to an accepted CONNECT).
pub(super) fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Whether the request comes from a gRPC client.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// gRPC clients read `grpc-status` rather than the HTTP status (a "trailers-only" reply), so a
/// denial or failure also says PERMISSION_DENIED / UNAVAILABLE / DEADLINE_EXCEEDED there.
fn finish(mut resp: Response<ProxyBody>, grpc: bool) -> Response<ProxyBody> {
    if !grpc {
        return resp;
    }
    let code = match resp.status() {
        StatusCode::FORBIDDEN => "7",
        StatusCode::GATEWAY_TIMEOUT => "4",
        StatusCode::BAD_REQUEST => "3",
        _ => "14",
    };
    let message = match resp.status() {
        StatusCode::FORBIDDEN => BLOCKED_TITLE.to_string(),
        s => format!("Boundary proxy: {s}"),
    };
    let h = resp.headers_mut();
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&message.replace(' ', "%20")) {
        h.insert("grpc-message", v);
    }
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<ProxyBody> {
    let mut body: String = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The 403 page: status, content type and the first line are what Coder's docs and users
/// rely on (see docs/troubleshooting.md).
fn blocked(r: &Refusal) -> Response<ProxyBody> {
    let host = r.target.as_ref().map(|t| t.host.as_str()).unwrap_or("-");
    let path = if r.path.is_empty() { "-" } else { &r.path };
    let mut body = format!(
        "{BLOCKED_TITLE}\n\nMethod: {}\nHost: {host}\nPath: {path}\nReason: {}\n",
        r.method,
        r.kind.reason()
    );
    if !r.suggestions.is_empty() {
        body.push_str("\nTo allow it, run boundary with one of:\n");
        for s in &r.suggestions {
            body.push_str(&format!("  --allow '{s}'\n"));
        }
    }
    let mut resp = text(StatusCode::FORBIDDEN, body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// 502/504 with what went wrong reaching the origin.
fn upstream_failure(
    authority: &str,
    err: &hyper_util::client::legacy::Error,
) -> Response<ProxyBody> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            return text(
                ce.status(),
                format!("Boundary could not reach {authority}: {ce}"),
            );
        }
        let s = e.to_string();
        if !chain.contains(&s) {
            chain.push(s);
        }
        source = e.source();
    }
    text(
        StatusCode::BAD_GATEWAY,
        format!(
            "Boundary lost the connection to {authority}: {}",
            chain.join(": ")
        ),
    )
}
