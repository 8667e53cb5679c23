//! The client leg: accepting, sniffing, TLS interception, deciding and forwarding each request.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use boundary_audit::{AuditRecord, AuditSink, TraceContext};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::ca::CertificateAuthority;
use crate::io::{original_dst, Activity, Rewind, Tracked};
use crate::upstream::{self, ConnectError, Connector, ConnectorSettings, UpstreamProxy};
use crate::{ProxyConfig, ProxyError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the proxy produces.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// HTTP/1 response header count limit: hyper's default of 100 is below what some real sites
/// send. Requests keep hyper's 100 (no client needs more), because a larger limit costs a
/// per-message allocation and initialisation proportional to it.
const MAX_RESPONSE_HEADERS: usize = 256;
/// HTTP/2 header list limit in bytes (large cookies and tokens must pass).
const MAX_HEADER_LIST: u32 = 256 * 1024;

const SESSION_HEADER: &str = "x-coder-agent-firewall-session-id";
const SEQUENCE_HEADER: &str = "x-coder-agent-firewall-sequence-number";

/// The intercepting proxy: one per boundary run, shared by all its connections.
pub struct Proxy {
    config: ProxyConfig,
    ca: Arc<CertificateAuthority>,
    sink: Arc<dyn AuditSink>,
    sequence: AtomicI32,
    settings: Arc<ConnectorSettings>,
    /// Pooled client offering h2 and http/1.1 to origins.
    client: Client<Connector, RequestBody>,
    /// HTTP/1.1-only client for upgrade requests (WebSocket needs an HTTP/1.1 origin leg).
    client_h1: Client<Connector, RequestBody>,
    listen_addrs: Arc<RwLock<Vec<SocketAddr>>>,
}

/// Where a connection's requests are going, as far as the connection itself tells.
#[derive(Debug, Clone)]
enum Leg {
    /// Connected to the proxy on purpose: requests name their target (absolute-form/CONNECT).
    Explicit,
    /// Redirected by netfilter: the original destination gives the port (and the IP when the
    /// request names no host).
    Transparent(SocketAddr),
    /// Inside a CONNECT tunnel to this host and port.
    Tunnel { host: String, port: u16 },
}

/// What every request on one client connection shares.
#[derive(Debug, Clone)]
struct ConnCtx {
    leg: Leg,
    /// TLS was intercepted on this connection: requests are https to `fixed`.
    tls: bool,
    /// Host and port fixed by the connection (SNI / CONNECT / original destination).
    fixed: Option<(String, u16)>,
    /// When the connection's own names disagree (SNI vs CONNECT authority), every request on it
    /// is denied with this reason.
    mismatch: Option<String>,
}

/// Where one request goes and how it is written in the audit record.
struct Target {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Target {
    fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }

    /// `host[:port]`, the port only when not the scheme's default; IPv6 in brackets.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{}", self.scheme, self.authority(), path_and_query)
    }
}

impl Proxy {
    /// Builds the proxy: loads trust anchors and prepares the pooled upstream clients.
    pub fn new(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        sink: Arc<dyn AuditSink>,
    ) -> Result<Arc<Self>, ProxyError> {
        let roots = Arc::new(
            upstream::root_store(config.upstream_ca_file.as_deref())
                .map_err(ProxyError::TrustStore)?,
        );
        let upstream_proxy = config
            .upstream_proxy
            .as_deref()
            .map(UpstreamProxy::parse)
            .transpose()
            .map_err(ProxyError::UpstreamProxy)?;
        let listen_addrs = Arc::new(RwLock::new(Vec::new()));
        let settings = Arc::new(ConnectorSettings {
            resolve: config
                .resolve
                .iter()
                .map(|(k, v)| (k.trim_end_matches('.').to_ascii_lowercase(), *v))
                .collect(),
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            upstream_proxy,
            proxy_tls: Arc::new(upstream::client_config(roots.clone(), &[])),
            listen_addrs: listen_addrs.clone(),
        });
        let build = |alpn: &[&[u8]]| {
            let connector = Connector {
                settings: settings.clone(),
                tls: Arc::new(upstream::client_config(roots.clone(), alpn)),
            };
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .http2_adaptive_window(true)
                .http1_max_headers(MAX_RESPONSE_HEADERS)
                .http2_max_header_list_size(MAX_HEADER_LIST)
                .set_host(true)
                .build(connector)
        };
        let client = build(&[b"h2", b"http/1.1"]);
        let client_h1 = build(&[b"http/1.1"]);
        Ok(Arc::new(Self {
            config,
            ca,
            sink,
            sequence: AtomicI32::new(0),
            settings,
            client,
            client_h1,
            listen_addrs,
        }))
    }

    /// Tells the proxy about an address it is reachable at, so requests to it are refused
    /// (`serve` does this itself; a harness calling `handle_connection` directly may too).
    pub fn add_listen_addr(&self, addr: SocketAddr) {
        let mut addrs = self.listen_addrs.write().unwrap_or_else(|e| e.into_inner());
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }

    /// How many requests have been decided so far (the next sequence number).
    pub fn decided(&self) -> i32 {
        self.sequence.load(Ordering::SeqCst)
    }

    /// Accept loop; runs until the future is dropped. Knows its own listen address (loop guard).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        self.add_listen_addr(local);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) if accept_error_is_transient(&e) => {
                    // Out of descriptors, aborted handshakes: wait a moment and go on.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, %local, "the proxy listener failed");
                    return Err(e);
                }
            };
            let dst = original_dst(&stream).filter(|d| !self.settings.is_self(*d) && *d != local);
            tracing::trace!(%peer, ?dst, "accepted");
            tokio::spawn(self.clone().handle_connection(stream, dst));
        }
    }

    /// One accepted connection. original_dst = Some(addr) for a transparently redirected
    /// connection (serve() gets it with SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST, v4 and v6;
    /// when getsockopt fails, or the original dst is the listener itself, it is explicit mode).
    pub async fn handle_connection(
        self: Arc<Self>,
        stream: TcpStream,
        original_dst: Option<SocketAddr>,
    ) {
        let _ = stream.set_nodelay(true);
        let leg = match original_dst {
            Some(d) if !self.settings.is_self(d) => Leg::Transparent(d),
            _ => Leg::Explicit,
        };
        self.serve_stream(stream, leg).await;
    }

    /// Sniffs the first byte and serves TLS (intercepted) or plain HTTP on `io`.
    async fn serve_stream<S>(self: Arc<Self>, mut io: S, leg: Leg)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut first = [0u8; 1];
        let n = match tokio::time::timeout(self.config.handshake_timeout, io.read(&mut first)).await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "client connection failed before the first byte");
                return;
            }
            Err(_) => {
                tracing::debug!("client sent nothing before the handshake timeout");
                return;
            }
        };
        if n == 0 {
            return;
        }
        let io = Rewind::new(io, Bytes::copy_from_slice(&first));
        if first[0] == 0x16 {
            self.serve_tls(io, leg).await;
        } else {
            let fixed = match &leg {
                Leg::Tunnel { host, port } => Some((host.clone(), *port)),
                _ => None,
            };
            let ctx = ConnCtx {
                leg,
                tls: false,
                fixed,
                mismatch: None,
            };
            self.serve_http(io, ctx).await;
        }
    }

    async fn serve_tls<S>(self: Arc<Self>, io: S, leg: Leg)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hs = self.config.handshake_timeout;
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = match tokio::time::timeout(hs, acceptor).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bad TLS ClientHello");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS ClientHello not complete before the handshake timeout");
                return;
            }
        };
        let sni = start
            .client_hello()
            .server_name()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        let (host, port, mismatch) = match (&leg, sni) {
            (Leg::Tunnel { host, port }, Some(sni)) => {
                let mismatch = (!same_host(&sni, host)).then(|| {
                    format!("the TLS server name {sni} does not match the CONNECT target {host}")
                });
                (host.clone(), *port, mismatch)
            }
            (Leg::Tunnel { host, port }, None) => (host.clone(), *port, None),
            (Leg::Transparent(dst), Some(sni)) => (sni, dst.port(), None),
            (Leg::Transparent(dst), None) => (dst.ip().to_string(), dst.port(), None),
            (Leg::Explicit, Some(sni)) => (sni, 443, None),
            (Leg::Explicit, None) => {
                tracing::debug!("TLS straight to the proxy without a server name; closing");
                return;
            }
        };
        // The certificate names what the client asked for (SNI), else the host we route to.
        let cert_host = start
            .client_hello()
            .server_name()
            .map(|s| s.trim_end_matches('.').to_string())
            .unwrap_or_else(|| host.clone());
        let config = match self.ca.server_config(&cert_host) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, host = %cert_host, "cannot mint a leaf certificate");
                return;
            }
        };
        let tls = match tokio::time::timeout(hs, start.into_stream(config)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, host = %cert_host, "client TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(host = %cert_host, "client TLS handshake timed out");
                return;
            }
        };
        let ctx = ConnCtx {
            leg,
            tls: true,
            fixed: Some((host, port)),
            mismatch,
        };
        self.serve_http(tls, ctx).await;
    }

    async fn serve_http<S>(self: Arc<Self>, io: S, ctx: ConnCtx)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let ctx = Arc::new(ctx);
        let proxy = self.clone();
        let act = activity.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            let ctx = ctx.clone();
            let guard = act.begin();
            async move {
                let grpc = is_grpc(req.headers());
                let mut resp = proxy.route(req, &ctx).await;
                if grpc && resp.extensions().get::<LocalReply>().is_some() {
                    add_grpc_status(&mut resp);
                }
                Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, guard).boxed()))
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // No header-read timer: it would arm a timer for every request, and the idle watchdog
        // below already closes a connection whose headers never finish (nothing in flight).
        builder.http1().keep_alive(true).half_close(false);
        builder
            .http2()
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_concurrent_streams(1000);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = self.config.idle_timeout;
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = activity.idle_for(idle) => {
                tracing::debug!(?idle, "closing idle client connection");
                conn.as_mut().graceful_shutdown();
            }
        }
        // A graceful shutdown waits for a request head that is still arriving; one that is
        // still not complete (nothing in flight) after another idle period is cut off.
        activity.touch();
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
            _ = activity.idle_for(idle) => {
                tracing::debug!("dropping a connection that stayed idle after shutdown");
            }
        }
    }

    fn next_sequence(&self) -> i32 {
        self.sequence.fetch_add(1, Ordering::SeqCst)
    }

    fn audit(
        &self,
        sequence: i32,
        allowed: bool,
        method: &str,
        url: String,
        matched_rule: Option<String>,
        headers: &HeaderMap,
    ) {
        let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
        self.sink.record(AuditRecord {
            allowed,
            time: chrono::Utc::now(),
            method: method.to_string(),
            url,
            matched_rule,
            sequence_number: sequence,
            trace: TraceContext::from_traceparent(traceparent),
        });
    }

    /// Whether `host:port` is known (without DNS) to be this proxy's own listener.
    fn targets_self(&self, host: &str, port: u16) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if let Ok(ip) = bare.parse::<IpAddr>() {
            ip
        } else if let Some(ip) = self.settings.resolve.get(bare) {
            *ip
        } else if bare == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            return false;
        };
        self.settings.is_self(SocketAddr::new(ip, port))
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>, ctx: &ConnCtx) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return self.connect(req);
        }
        match self.check(&req, ctx) {
            Ok((target, path, sequence)) => self.forward(req, target, path, sequence).await,
            Err(resp) => {
                // A client waiting for `100 Continue` has sent nothing yet: let it be.
                let expects = req.headers().contains_key(header::EXPECT);
                if !expects {
                    drain(req.into_body());
                }
                *resp
            }
        }
    }

    /// Decides a non-CONNECT request and audits the decision; `Ok` = forward it.
    fn check(
        &self,
        req: &Request<Incoming>,
        ctx: &ConnCtx,
    ) -> Result<(Target, String, i32), Box<Response<ProxyBody>>> {
        let target = match self.target_of(req, ctx) {
            Ok(t) => t,
            Err(message) => return Err(Box::new(text(StatusCode::BAD_REQUEST, message))),
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let method = req.method().as_str().to_string();
        let url = target.url(&path);
        let sequence = self.next_sequence();

        let mismatch = ctx
            .mismatch
            .clone()
            .or_else(|| host_mismatch(req, &target, ctx));
        if let Some(reason) = mismatch {
            self.audit(sequence, false, &method, url, None, req.headers());
            return Err(Box::new(blocked(&method, &target, &path, &reason, &[])));
        }
        if self.targets_self(&target.host, target.port) {
            self.audit(sequence, false, &method, url, None, req.headers());
            return Err(Box::new(blocked(
                &method,
                &target,
                &path,
                "the request is addressed to the proxy itself",
                &[],
            )));
        }
        let decision = self.config.policy.decide(&method, &target.host, &path);
        self.audit(
            sequence,
            decision.allowed,
            &method,
            url,
            decision.matched_rule.clone(),
            req.headers(),
        );
        if !decision.allowed {
            let suggestions = self.config.policy.suggest(&method, &target.host, &path);
            return Err(Box::new(blocked(
                &method,
                &target,
                &path,
                "no allow rule matches this request",
                &suggestions,
            )));
        }
        Ok((target, path, sequence))
    }

    /// Works out scheme, host and port of a non-CONNECT request.
    fn target_of(&self, req: &Request<Incoming>, ctx: &ConnCtx) -> Result<Target, String> {
        let scheme = if ctx.tls { "https" } else { "http" };
        if let Some((host, port)) = &ctx.fixed {
            return Ok(Target {
                scheme,
                host: host.clone(),
                port: *port,
            });
        }
        let uri = req.uri();
        // Absolute-form (explicit proxying) names the target; otherwise Host does.
        let (scheme, named) = match (uri.scheme_str(), uri.authority()) {
            (Some(s), Some(a)) if req.version() < Version::HTTP_2 => {
                let scheme = match s {
                    "http" => "http",
                    "https" => "https",
                    other => return Err(format!("unsupported URL scheme {other:?}")),
                };
                (scheme, Some(a.as_str().to_string()))
            }
            _ => (
                scheme,
                request_authority(req).or_else(|| uri.authority().map(|a| a.to_string())),
            ),
        };
        let default = if scheme == "https" { 443 } else { 80 };
        match (&ctx.leg, named) {
            (Leg::Transparent(dst), Some(a)) => {
                let (host, _) = split_authority(&a)
                    .ok_or_else(|| format!("bad host {a:?} in the request"))?;
                Ok(Target {
                    scheme,
                    host,
                    port: dst.port(),
                })
            }
            (Leg::Transparent(dst), None) => Ok(Target {
                scheme,
                host: dst.ip().to_string(),
                port: dst.port(),
            }),
            (_, Some(a)) => {
                let (host, port) = split_authority(&a)
                    .ok_or_else(|| format!("bad host {a:?} in the request"))?;
                Ok(Target {
                    scheme,
                    host,
                    port: port.unwrap_or(default),
                })
            }
            (_, None) => Err(
                "the request names no host: send it in absolute form (http://host/path) or with a Host header"
                    .to_string(),
            ),
        }
    }

    /// CONNECT: refuse at once when no rule could allow the host, else open a tunnel and serve
    /// what comes through it as its own connection.
    fn connect(self: Arc<Self>, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let Some((host, port)) = req
            .uri()
            .authority()
            .and_then(|a| split_authority(a.as_str()))
        else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "CONNECT needs a host:port target, got {:?}",
                    req.uri().to_string()
                ),
            );
        };
        let port = port.unwrap_or(443);
        let target = Target {
            scheme: "https",
            host: host.clone(),
            port,
        };
        let url = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        if self.targets_self(&host, port) {
            let sequence = self.next_sequence();
            self.audit(sequence, false, "CONNECT", url, None, req.headers());
            return blocked(
                "CONNECT",
                &target,
                "",
                "the tunnel is addressed to the proxy itself",
                &[],
            );
        }
        if !self.config.policy.could_allow_host(&host) {
            let sequence = self.next_sequence();
            self.audit(sequence, false, "CONNECT", url, None, req.headers());
            let suggestions = self.config.policy.suggest("GET", &host, "/");
            return blocked(
                "CONNECT",
                &target,
                "",
                "no allow rule matches this host",
                &suggestions,
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let proxy = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    proxy
                        .serve_stream(TokioIo::new(upgraded), Leg::Tunnel { host, port })
                        .await
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT tunnel was not established"),
            }
        });
        Response::new(empty())
    }

    async fn forward(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        target: Target,
        path: String,
        sequence: i32,
    ) -> Response<ProxyBody> {
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let uri: Uri = match format!(
            "{}://{}{}",
            target.scheme,
            target.authority(),
            if path.starts_with('/') { &path } else { "/" }
        )
        .parse()
        {
            Ok(u) => u,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("cannot forward the request target {path:?}: {e}"),
                )
            }
        };
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }
        if let Some(c) = &self.config.correlation {
            if c.targets
                .decide(parts.method.as_str(), &target.host, &path)
                .allowed
            {
                if let Ok(v) = HeaderValue::from_str(&c.session_id.to_string()) {
                    headers.insert(HeaderName::from_static(SESSION_HEADER), v);
                }
                headers.insert(HeaderName::from_static(SEQUENCE_HEADER), sequence.into());
            }
        }
        let mut out = Request::new(RequestBody(Some(body)));
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;

        let client = if upgrade.is_some() {
            &self.client_h1
        } else {
            &self.client
        };
        let mut resp = match client.request(out).await {
            Ok(r) => r,
            Err(e) => return upstream_failure(&target, &e),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_upgrade {
                let origin_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_side, origin_side) {
                        Ok((c, o)) => {
                            let mut c = TokioIo::new(c);
                            let mut o = TokioIo::new(o);
                            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut o).await {
                                tracing::debug!(error = %e, "upgraded connection ended");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
                let (mut parts, _) = resp.into_parts();
                let proto = parts.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Some(p) = proto {
                    parts.headers.insert(header::UPGRADE, p);
                }
                return Response::from_parts(parts, empty());
            }
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
    }
}

/// Accept errors after which the listener still works (per-connection or resource trouble),
/// as opposed to a broken listening socket.
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut | OutOfMemory
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO | libc::EPERM
        )
    )
}

/// The authority the request itself claims: `:authority` for HTTP/2, else the Host header.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if req.version() == Version::HTTP_2 {
        if let Some(a) = req.uri().authority() {
            return Some(a.as_str().to_string());
        }
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Checks that every host the request names (Host, :authority, absolute URI) agrees with the
/// host it is routed to; returns why not.
fn host_mismatch<B>(req: &Request<B>, target: &Target, ctx: &ConnCtx) -> Option<String> {
    let mut claims: Vec<String> = Vec::new();
    if let Some(h) = req.headers().get(header::HOST) {
        match h.to_str() {
            Ok(s) => claims.push(s.to_string()),
            Err(_) => return Some("the Host header is not valid text".into()),
        }
    }
    if let Some(a) = req.uri().authority() {
        claims.push(a.as_str().to_string());
    }
    let transparent = matches!(ctx.leg, Leg::Transparent(_));
    for claim in claims {
        let Some((host, port)) = split_authority(&claim) else {
            return Some(format!("the request names a bad host {claim:?}"));
        };
        if !same_host(&host, &target.host) {
            let routed = if ctx.tls {
                "the TLS server name"
            } else {
                "the CONNECT target"
            };
            return Some(format!(
                "the Host {host} does not match {routed} {}",
                target.host
            ));
        }
        // A transparent connection keeps its real port; elsewhere an explicit port must agree.
        if let Some(p) = port {
            if p != target.port && !transparent {
                return Some(format!(
                    "the Host port {p} does not match the connection's port {}",
                    target.port
                ));
            }
        }
    }
    None
}

fn same_host(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

/// Splits `host[:port]` (IPv6 in brackets); host lowercased, without brackets or trailing dot.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let a: http::uri::Authority = authority.parse().ok()?;
    let host = a
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() || a.as_str().contains('@') {
        return None;
    }
    if a.as_str().ends_with(':') {
        return None;
    }
    Some((host, a.port_u16()))
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade: x`).
/// `h2c` is not passed on: it would change the protocol of our own client connection, so the
/// request is forwarded as plain HTTP/1.1 (clients then simply stay on HTTP/1.1).
fn wants_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    if upgrade
        .to_str()
        .is_ok_and(|u| u.trim().eq_ignore_ascii_case("h2c"))
    {
        return None;
    }
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    listed.then(|| upgrade.clone())
}

/// Removes hop-by-hop headers: `Connection` and every header it lists, `Proxy-Connection`,
/// `Proxy-Authorization`, `Proxy-Authenticate`, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`,
/// and `TE` unless it is exactly `trailers` (gRPC needs that one).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if name != header::TE {
            headers.remove(&name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Reads (and discards) what is left of a refused request's body in the background, so the
/// client finishes sending and reads our answer: dropping the body unread makes HTTP/2 reset
/// the stream, which some clients report instead of the 403. Bounded in size and time.
fn drain(body: Incoming) {
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
struct RequestBody(Option<Incoming>);

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

/// Marks a response the proxy wrote itself (denial, failure), as opposed to the origin's.
#[derive(Debug, Clone, Copy)]
struct LocalReply;

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// gRPC clients read `grpc-status` rather than the HTTP status (a "trailers-only" reply), so a
/// denial or failure also says PERMISSION_DENIED / UNAVAILABLE / DEADLINE_EXCEEDED there.
fn add_grpc_status(resp: &mut Response<ProxyBody>) {
    let code = match resp.status() {
        StatusCode::FORBIDDEN => "7",
        StatusCode::GATEWAY_TIMEOUT => "4",
        StatusCode::BAD_REQUEST => "3",
        _ => "14",
    };
    let message = match resp.status() {
        StatusCode::FORBIDDEN => "Request Blocked by Boundary".to_string(),
        s => format!("Boundary proxy: {s}"),
    };
    let h = resp.headers_mut();
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&message.replace(' ', "%20")) {
        h.insert("grpc-message", v);
    }
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
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
    resp.extensions_mut().insert(LocalReply);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The 403 page of INTEROP §3.
fn blocked(
    method: &str,
    target: &Target,
    path: &str,
    reason: &str,
    suggestions: &[String],
) -> Response<ProxyBody> {
    let mut body = format!(
        "Request Blocked by Boundary\n\nMethod: {method}\nHost: {}\nPath: {}\nReason: {reason}\n",
        target.host,
        if path.is_empty() { "-" } else { path }
    );
    if !suggestions.is_empty() {
        body.push_str("\nTo allow it, run boundary with one of:\n");
        for s in suggestions {
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
    target: &Target,
    err: &hyper_util::client::legacy::Error,
) -> Response<ProxyBody> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            return text(
                ce.status(),
                format!("Boundary could not reach {}: {}", target.authority(), ce),
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
            "Boundary lost the connection to {}: {}",
            target.authority(),
            chain.join(": ")
        ),
    )
}

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
    fn authorities_split() {
        assert_eq!(
            split_authority("Example.COM:8443"),
            Some(("example.com".into(), Some(8443)))
        );
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(
            split_authority("a.example."),
            Some(("a.example".into(), None))
        );
        assert_eq!(split_authority("user@a.example"), None);
        assert_eq!(split_authority(""), None);
        assert_eq!(split_authority("a.example:"), None);
    }

    #[test]
    fn urls_carry_port_only_when_not_default() {
        let t = Target {
            scheme: "https",
            host: "a.example".into(),
            port: 443,
        };
        assert_eq!(t.url("/x?q=1"), "https://a.example/x?q=1");
        let t = Target {
            scheme: "http",
            host: "::1".into(),
            port: 8080,
        };
        assert_eq!(t.url("/"), "http://[::1]:8080/");
    }
}
