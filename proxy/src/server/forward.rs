//! Phase 5, forwarding: the upstream request (hop-by-hop headers removed, correlation headers
//! added), the body streamed both ways, upgrades piped after 101, and CONNECT tunnels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;

use super::body::{BodyGuard, RequestBody, Sent};
use super::decide::Decided;
use super::respond::empty;
use super::sniff::Leg;
use super::target::Target;
use super::{BoxError, Proxy, ProxyBody};
use crate::host::Host;
use crate::io::Tracked;
use crate::upstream::{Cap, Connector, Permit};

const SESSION_HEADER: &str = "x-coder-agent-firewall-session-id";
const SEQUENCE_HEADER: &str = "x-coder-agent-firewall-sequence-number";

/// Why an allowed request got no answer from the origin; rendered by the responding phase.
pub(super) enum Failure {
    /// The request target cannot be written as an upstream URL.
    BadTarget(String),
    /// The origin answered 101 to a request that asked for no upgrade, or for another one.
    UnaskedSwitch(String),
    /// A cap on upstream work stayed full for the whole wait (the client idle timeout).
    AtCap {
        /// What the full cap counts ("requests to origin.test:8080", "WebSocket connections").
        what: String,
        /// The cap's size.
        size: usize,
        waited: std::time::Duration,
    },
    /// The origin sent no response head within the idle timeout after the request was sent.
    NoAnswer {
        authority: String,
        waited: std::time::Duration,
    },
    /// Connecting to or talking with the origin failed.
    Upstream {
        /// `host[:port]` of the origin, for the message.
        authority: String,
        error: hyper_util::client::legacy::Error,
    },
}

impl Proxy {
    /// Sends an allowed request upstream and streams the answer back.
    pub(super) async fn forward(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        decided: Decided,
        body_guard: BodyGuard,
    ) -> Result<Response<ProxyBody>, Failure> {
        let Decided {
            target,
            path,
            url,
            sequence,
        } = decided;
        let upgrade = wants_upgrade(req.method(), req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        // The audited URL is the upstream one whenever the path is in origin form.
        let url = if path.starts_with('/') {
            url
        } else {
            target.url("/")
        };
        let uri = Uri::try_from(url).map_err(|e| {
            Failure::BadTarget(format!("cannot forward the request target {path:?}: {e}"))
        })?;
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        } else if !hyper::body::Body::is_end_stream(&body) {
            // An HTTP/1.1 origin that answers before reading a body (an early 401 or 404) would
            // read the body as its next request on a kept-alive connection: a request no rule
            // decided. With `close` it answers and stops reading (HTTP/2 strips the header;
            // its frames cannot be mistaken for a request).
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // Only boundary speaks for the session: a jailed client's own correlation headers would
        // tie its traffic to any session it names, on requests that are not inject targets.
        headers.remove(SESSION_HEADER);
        headers.remove(SEQUENCE_HEADER);
        if let Some(c) = &self.config.correlation {
            if c.targets
                .decide(parts.method.as_str(), target.host.as_str(), &path)
                .allowed
            {
                if let Ok(v) = HeaderValue::from_str(&c.session_id.to_string()) {
                    headers.insert(HeaderName::from_static(SESSION_HEADER), v);
                }
                headers.insert(HeaderName::from_static(SEQUENCE_HEADER), sequence.into());
            }
        }
        let (body, sent) = RequestBody::new(body, self.config.client_stall_timeout, body_guard);
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;

        let (client, permit) = self.turn(&target, upgrade.is_some()).await?;
        let mut resp = self.answer(client, out, &sent, &target).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            switch_agreed(upgrade.as_ref(), &resp)?;
            if let Some(client_side) = client_upgrade {
                let limits = (self.config.idle_timeout, self.config.client_stall_timeout);
                return Ok(pipe_upgrade(client_side, &mut resp, permit, limits));
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        // The request stays in flight, holding its place under the caps, until the body ends.
        let body = body.map_err(|e| Box::new(e) as BoxError);
        Ok(Response::from_parts(
            parts,
            Tracked::new(body, permit).boxed(),
        ))
    }

    /// Sends the request and waits for the origin's answer: once the request body has gone
    /// upstream in full, at most the idle timeout (an origin that never answers must not hold
    /// a place under the caps forever; a long upload is not counted against it).
    async fn answer(
        &self,
        client: &Client<Connector, RequestBody>,
        out: Request<RequestBody>,
        sent: &Sent,
        target: &Target,
    ) -> Result<Response<Incoming>, Failure> {
        let waited = self.config.idle_timeout;
        let owed = async {
            sent.wait().await;
            tokio::time::sleep(waited).await;
        };
        tokio::select! {
            resp = client.request(out) => resp.map_err(|error| Failure::Upstream {
                authority: target.authority(),
                error,
            }),
            _ = owed => {
                tracing::warn!(origin = %target.authority(), ?waited, "the origin sent no answer; answering 504");
                Err(Failure::NoAnswer { authority: target.authority(), waited })
            }
        }
    }

    /// Waits for this request's turn under the caps: per origin and in total for requests,
    /// or among WebSocket pipes for an upgrade (which then goes through the HTTP/1.1 pool).
    /// Waits at most the client idle timeout, then gives up without going past the cap.
    async fn turn(
        &self,
        target: &Target,
        upgrade: bool,
    ) -> Result<(&Client<Connector, RequestBody>, Permit), Failure> {
        let (client, limits) = if upgrade {
            (&self.client_h1, &self.pipes)
        } else {
            (&self.client, &self.requests)
        };
        let key = target.host.with_port(target.port);
        let waited = self.config.idle_timeout;
        match limits.acquire(&key, waited).await {
            Ok(permit) => Ok((client, permit)),
            Err(cap) => {
                tracing::warn!(origin = %key, ?cap, ?waited, upgrade, "upstream cap stayed full; answering 503");
                let kind = if upgrade {
                    "WebSocket connections"
                } else {
                    "requests"
                };
                let (what, size) = match cap {
                    Cap::PerOrigin => (
                        format!("{kind} to {}", target.authority()),
                        limits.per_key(),
                    ),
                    Cap::Total => (format!("{kind} in all"), limits.total()),
                };
                Err(Failure::AtCap { what, size, waited })
            }
        }
    }

    /// Answers an accepted CONNECT and serves what comes through the tunnel as a connection
    /// of its own (every request in it is decided on its own). For a host no rule allows
    /// (`unruled`: the policy generation that said so), a tunnel in which no request was decided
    /// is audited once as the refused CONNECT when it ends.
    pub(super) fn open_tunnel(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        host: Host,
        port: u16,
        unruled: Option<u64>,
        requester: super::sniff::Who,
    ) -> Response<ProxyBody> {
        let on_upgrade = hyper::upgrade::on(&mut req);
        let flag = unruled.map(|_| Arc::new(AtomicBool::new(false)));
        // Audits the refused CONNECT if no request was decided, however the tunnel ends
        // (closed, timed out, or dropped to make room for another connection).
        let audit_once = flag.clone().map(|decided| UnruledTunnel {
            proxy: self.clone(),
            host: host.clone(),
            port,
            decided,
            requester: requester.clone(),
            generation: unruled.unwrap_or_default(),
        });
        let tunnel = async move {
            let _audit_once = audit_once;
            let leg = Leg::Tunnel {
                host,
                port,
                unruled: flag,
            };
            match on_upgrade.await {
                Ok(upgraded) => {
                    let known = super::sniff::Pending::Known(requester);
                    self.serve_stream(TokioIo::new(upgraded), leg, known).await
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT tunnel was not established"),
            }
        };
        // The tunnel is the same client connection: it keeps its slot.
        // Boxed: handed down by value, the future would be copied into each wrapper's state.
        tokio::spawn(crate::slots::carry(Box::pin(tunnel), false));
        Response::new(empty())
    }
}

/// A tunnel to a host no rule allows: when it ends without a decided request, the CONNECT is
/// audited as denied.
struct UnruledTunnel {
    proxy: Arc<Proxy>,
    host: Host,
    port: u16,
    decided: Arc<AtomicBool>,
    requester: super::sniff::Who,
    /// The policy generation under which no rule could allow the host.
    generation: u64,
}

impl Drop for UnruledTunnel {
    fn drop(&mut self) {
        if !self.decided.load(Ordering::Acquire) {
            let who = self.requester.take();
            self.proxy
                .refuse_tunnel_after(self.host.clone(), self.port, who, self.generation);
        }
    }
}

/// After the origin's 101: joins the client's and the origin's upgraded connections and
/// answers the client with the origin's 101. The pipe ends when either side closes, nothing
/// moves for `idle`, or one side stops reading for `stall` (see `stall::pipe`).
fn pipe_upgrade(
    client_side: hyper::upgrade::OnUpgrade,
    resp: &mut Response<Incoming>,
    permit: Permit,
    (idle, stall): (std::time::Duration, std::time::Duration),
) -> Response<ProxyBody> {
    let origin_side = hyper::upgrade::on(&mut *resp);
    let pipe = async move {
        // The pipe holds its place among the pipes until it ends.
        let _permit = permit;
        match tokio::try_join!(client_side, origin_side) {
            Ok((c, o)) => {
                let (c, o) = (TokioIo::new(c), TokioIo::new(o));
                if let Err(e) = crate::stall::pipe(c, o, idle, stall).await {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    };
    // The pipe is the client connection, busy while it lasts: it keeps its slot.
    tokio::spawn(crate::slots::carry(pipe, true));
    let mut out = Response::new(empty());
    *out.status_mut() = resp.status();
    *out.version_mut() = resp.version();
    let mut headers = std::mem::take(resp.headers_mut());
    let proto = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(p) = proto {
        headers.insert(header::UPGRADE, p);
    }
    *out.headers_mut() = headers;
    out
}

/// The protocol of an HTTP/1.1 WebSocket upgrade request (`GET` with `Connection: upgrade`
/// and `Upgrade: websocket`), the only upgrade that becomes a pipe: after any upgrade the
/// connection carries bytes no one decides, and WebSocket is what agents need. Other upgrade
/// tokens (`h2c`, `TLS/1.0`, made-up ones) are removed with the other hop-by-hop headers, so
/// the request goes upstream as plain HTTP/1.1 and the client stays on HTTP/1.1.
fn wants_upgrade(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let websocket = upgrade
        .to_str()
        .is_ok_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
    let listed = tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    (method == Method::GET && websocket && listed).then(|| upgrade.clone())
}

/// Whether the origin's 101 switches to the protocol the proxy asked for (and asked at all).
fn switch_agreed(asked: Option<&HeaderValue>, resp: &Response<Incoming>) -> Result<(), Failure> {
    let answered = resp.headers().get(header::UPGRADE);
    match (asked, answered) {
        (Some(a), Some(b)) if a.as_bytes().eq_ignore_ascii_case(b.as_bytes()) => Ok(()),
        _ => Err(Failure::UnaskedSwitch(format!(
            "the origin switched protocols ({}) although Boundary asked for {}; an upgraded \
             connection carries requests no one decides, so it was closed",
            answered
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no Upgrade header"),
            asked.and_then(|v| v.to_str().ok()).unwrap_or("no upgrade")
        ))),
    }
}

/// The comma-separated tokens of every `name` header, trimmed (`Connection`, `TE`).
fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes hop-by-hop headers: `Connection` and every header it lists, `Proxy-Connection`,
/// `Proxy-Authorization`, `Proxy-Authenticate`, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`,
/// and `TE` unless it is exactly `trailers` (gRPC needs that one). Runs twice per request.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which of these are present (a message carries a handful
    // of names and usually none of these but `Connection`); only those are then looked up and
    // removed, instead of nine lookups by hash per message. Removing cannot add a name, so what
    // was absent here stays absent below.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut te = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        } else if name == header::TE {
            te = true;
        }
    }
    // `Connection` is the first entry; only names present are looked up: `Connection:
    // keep-alive` allocates nothing.
    if present[0] {
        let listed: Vec<HeaderName> = tokens(headers, header::CONNECTION)
            .filter(|t| headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|name| name != header::TE)
            .collect();
        for name in listed {
            headers.remove(&name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if te {
        let te_trailers = tokens(headers, header::TE).any(|t| t.eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// The hop-by-hop headers removed whatever `Connection` lists (`Connection` first).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret, te".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("proxy-authorization", "Basic abc".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(names, vec!["x-kept", "te"]);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_and_among_others() {
        // Only the names found in one pass are removed: each must be found wherever it is.
        let names = [
            "connection",
            "proxy-connection",
            "proxy-authorization",
            "proxy-authenticate",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "te",
        ];
        for name in names {
            for before in [
                &[][..],
                &["host", "x-a"][..],
                &["x-b", "content-length"][..],
            ] {
                let mut h = HeaderMap::new();
                for other in before {
                    h.insert(*other, "1".parse().unwrap());
                }
                h.append(name, "x-listed, gzip".parse().unwrap());
                h.append(name, "close".parse().unwrap());
                h.insert("x-listed", "1".parse().unwrap());
                strip_hop_by_hop(&mut h);
                let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
                left.sort();
                let mut want: Vec<String> = before.iter().map(|s| s.to_string()).collect();
                if name != "connection" {
                    want.push("x-listed".into());
                }
                want.sort();
                assert_eq!(left, want, "{name} after {before:?}");
            }
        }
        let mut h = HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        h.insert("te", "Trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h.len(), 2);
    }
}
