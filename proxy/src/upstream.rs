//! The upstream leg: resolving, connecting (directly or through a corporate proxy), TLS to the
//! origin, and the pooled hyper client built on top.
//!
//! Connection errors carry a [`ConnectErrorKind`] so the proxy can answer 502 or 504 with a
//! reason a person can act on. Loopback, link-local, metadata and similar host-internal
//! addresses are refused unless the user named them ([`addr`]).

mod addr;
mod conn;
mod corp;
mod limits;

pub(crate) use conn::Conn;
use corp::read_connect_reply;
pub(crate) use corp::UpstreamProxy;

pub use addr::local_reason;
pub(crate) use limits::Limits;
pub use limits::{
    default_total as default_connection_total, raise_descriptor_limit,
    PER_ORIGIN as DEFAULT_PER_ORIGIN,
};

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What went wrong while reaching the origin; decides the status code shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The name did not resolve (502).
    Resolve,
    /// The TCP connection was refused or failed (502).
    Connect,
    /// The TCP connect did not finish in time (504).
    Timeout,
    /// The TLS handshake failed, e.g. the certificate did not verify (502).
    Tls,
    /// The TLS handshake did not finish in time (504).
    HandshakeTimeout,
    /// The corporate upstream proxy refused or failed the CONNECT (502).
    UpstreamProxy,
    /// The address is the proxy's own listener (refused to avoid a loop).
    Loop,
    /// The name resolves only to host-internal addresses (loopback, link-local, metadata...)
    /// that nobody allowed (403).
    LocalAddress,
}

/// A failure to reach the origin, with a message that says what to check.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// Which failure, for the status code.
    pub kind: ConnectErrorKind,
    /// What failed and why, shown to the client in the 502/504 body.
    pub message: String,
}

impl ConnectError {
    fn new(kind: ConnectErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The status the client gets for this failure.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            ConnectErrorKind::Timeout | ConnectErrorKind::HandshakeTimeout => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            ConnectErrorKind::LocalAddress => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

/// Loads the system trust store plus the PEM file given with `--upstream-ca-file`.
pub(crate) fn root_store(extra: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping part of the system trust store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system trust store loaded");
    if let Some(path) = extra {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read upstream CA file {}: {e}", path.display()))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("upstream CA file {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "upstream CA file {} holds no certificate",
                path.display()
            ));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                format!(
                    "upstream CA file {} holds a bad certificate: {e}",
                    path.display()
                )
            })?;
        }
    }
    Ok(roots)
}

/// A TLS client configuration offering the given ALPN protocols.
pub(crate) fn client_config(roots: Arc<rustls::RootCertStore>, alpn: &[&[u8]]) -> ClientConfig {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Settings shared by every connector clone.
pub(crate) struct ConnectorSettings {
    pub resolve: HashMap<String, IpAddr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub upstream_proxy: Option<UpstreamProxy>,
    /// TLS to the corporate proxy itself (no ALPN).
    pub proxy_tls: Arc<ClientConfig>,
    /// The proxy's own listening addresses, never to be connected to.
    pub listen_addrs: Arc<RwLock<Vec<SocketAddr>>>,
    /// Connect to loopback, link-local and metadata addresses too (`--upstream-allow-local`).
    pub allow_local: bool,
    /// Checked answers the connector uses instead of resolving again.
    pub(crate) pins: addr::Pins,
}

impl ConnectorSettings {
    /// Whether connecting to `addr` would reach this proxy.
    pub(crate) fn is_self(&self, addr: SocketAddr) -> bool {
        let addrs = self.listen_addrs.read().unwrap_or_else(|e| e.into_inner());
        addrs.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || (l.ip().is_unspecified()
                        && (addr.ip().is_loopback() || is_local(addr.ip())))
                    || (l.ip().is_loopback() && addr.ip().is_unspecified()))
        })
    }

    /// Addresses for `host`: an IP literal, a `--resolve` override, or system resolution.
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        let name = crate::host::normal_form(host);
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.resolve.get(&name) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let query = format!("{name}:{port}");
        match tokio::net::lookup_host(query).await {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                if addrs.is_empty() {
                    Err(ConnectError::new(
                        ConnectErrorKind::Resolve,
                        format!("could not resolve host {name}: no addresses"),
                    ))
                } else {
                    Ok(addrs)
                }
            }
            Err(e) => Err(ConnectError::new(
                ConnectErrorKind::Resolve,
                format!("could not resolve host {name}: {e}"),
            )),
        }
    }

    /// Checks, before a request is forwarded, where it would connect; `rule_names_ip` says the
    /// deciding rule names this IP literal exactly (which allows it). `Err` only for a refused
    /// address ([`ConnectErrorKind::LocalAddress`]): a name that does not resolve is left to
    /// the connector, which answers 502. With a corporate proxy, names are resolved by that
    /// proxy, so only IP literals are checked here.
    pub(crate) async fn check_destination(
        &self,
        host: &str,
        port: u16,
        rule_names_ip: bool,
    ) -> Result<(), ConnectError> {
        let bare = bare_host(host);
        let literal = bare.parse::<IpAddr>().is_ok();
        if self.allow_local || (!literal && self.upstream_proxy.is_some()) {
            return Ok(());
        }
        // A literal is checked every time: whether it is allowed depends on the rule.
        if !literal && self.pins.is_fresh(&bare, port) {
            return Ok(());
        }
        let Ok(addrs) = self.resolve(host, port).await else {
            return Ok(());
        };
        // A rule naming a host exempts it only when the host is the IP literal itself.
        let addrs = self.screen(host, port, addrs, literal && rule_names_ip)?;
        self.pins.put(&bare, port, addrs);
        Ok(())
    }

    /// Drops the addresses nobody allowed; an error when none is left.
    fn screen(
        &self,
        host: &str,
        port: u16,
        addrs: Vec<SocketAddr>,
        exempt: bool,
    ) -> Result<Vec<SocketAddr>, ConnectError> {
        let bare = bare_host(host);
        if exempt || self.allow_local || self.resolve.contains_key(&bare) {
            return Ok(addrs);
        }
        let first = addrs[0];
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| local_reason(a.ip()).is_none())
            .collect();
        if !kept.is_empty() {
            return Ok(kept);
        }
        let reason = local_reason(first.ip()).unwrap_or("local");
        let ip = first.ip();
        Err(ConnectError::new(
            ConnectErrorKind::LocalAddress,
            format!(
                "{host}:{port} resolves to {ip}, a {reason} address, and boundary does not connect \
                 upstream to host-internal addresses unless told to: map the name with \
                 --resolve {bare}={ip}, allow the IP literal with a rule naming it \
                 (domain={ip}), or set --upstream-allow-local"
            ),
        ))
    }

    /// The addresses to connect to for `host:port`: the answer checked when the request was
    /// decided, or (when there is none) a fresh answer, checked now.
    async fn checked_addrs(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(addrs) = self.pins.get(&bare_host(host), port) {
            return Ok(addrs);
        }
        let addrs = self.resolve(host, port).await?;
        self.screen(host, port, addrs, false)
    }

    async fn tcp(&self, host: &str, port: u16, checked: bool) -> Result<TcpStream, ConnectError> {
        let addrs = if checked {
            self.checked_addrs(host, port).await?
        } else {
            self.resolve(host, port).await?
        };
        if let Some(a) = addrs.iter().find(|a| self.is_self(**a)) {
            return Err(ConnectError::new(
                ConnectErrorKind::Loop,
                format!(
                    "refusing to connect to {host}:{port} ({a}): that is this proxy's own listener"
                ),
            ));
        }
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Ok(Err(e)) => {
                    last = Some(ConnectError::new(
                        ConnectErrorKind::Connect,
                        format!("could not connect to {host}:{port} ({addr}): {e}"),
                    ))
                }
                Err(_) => {
                    last = Some(ConnectError::new(
                        ConnectErrorKind::Timeout,
                        format!(
                            "timed out connecting to {host}:{port} ({addr}) after {:?}",
                            self.connect_timeout
                        ),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ConnectError::new(ConnectErrorKind::Connect, format!("no address for {host}"))
        }))
    }

    async fn tls(
        &self,
        config: Arc<ClientConfig>,
        host: &str,
        stream: Conn,
    ) -> Result<tokio_rustls::client::TlsStream<Conn>, ConnectError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|e| {
            ConnectError::new(
                ConnectErrorKind::Tls,
                format!("bad TLS server name {host}: {e}"),
            )
        })?;
        let connector = TlsConnector::from(config);
        match tokio::time::timeout(self.handshake_timeout, connector.connect(name, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ConnectError::new(
                ConnectErrorKind::Tls,
                format!("TLS handshake with {host} failed: {e}"),
            )),
            Err(_) => Err(ConnectError::new(
                ConnectErrorKind::HandshakeTimeout,
                format!(
                    "TLS handshake with {host} timed out after {:?}",
                    self.handshake_timeout
                ),
            )),
        }
    }

    /// A byte stream to `host:port`, through the corporate proxy when one is configured. Waits
    /// while the connection caps are reached; the connection holds its permit until closed.
    async fn stream_to(
        &self,
        limits: &Limits,
        host: &str,
        port: u16,
    ) -> Result<Conn, ConnectError> {
        let permit = limits.acquire(&bare_host(host), port).await;
        let Some(up) = &self.upstream_proxy else {
            let stream = self.tcp(host, port, true).await?;
            return Ok(Conn::Plain {
                stream,
                _permit: permit,
            });
        };
        if bare_host(host).parse::<IpAddr>().is_ok() {
            self.checked_addrs(host, port).await?;
        }
        // The corporate proxy is the user's own choice: its address is not checked.
        let tcp = self
            .tcp(&up.host, up.port, false)
            .await
            .map_err(|e| ConnectError {
                kind: match e.kind {
                    ConnectErrorKind::Timeout => ConnectErrorKind::Timeout,
                    _ => ConnectErrorKind::UpstreamProxy,
                },
                message: format!("upstream proxy: {}", e.message),
            })?;
        let mut conn = Conn::Plain {
            stream: tcp,
            _permit: permit,
        };
        if up.tls {
            conn = Conn::Tls(Box::new(
                self.tls(self.proxy_tls.clone(), &up.host, conn).await?,
            ));
        }
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &up.authorization {
            head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        let fut = async {
            conn.write_all(head.as_bytes()).await?;
            conn.flush().await?;
            read_connect_reply(&mut conn).await
        };
        let status = match tokio::time::timeout(self.handshake_timeout, fut).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ConnectError::new(
                    ConnectErrorKind::UpstreamProxy,
                    format!(
                        "upstream proxy {}:{} failed the CONNECT: {e}",
                        up.host, up.port
                    ),
                ))
            }
            Err(_) => {
                return Err(ConnectError::new(
                    ConnectErrorKind::HandshakeTimeout,
                    format!(
                        "upstream proxy {}:{} did not answer the CONNECT in time",
                        up.host, up.port
                    ),
                ))
            }
        };
        if !(200..300).contains(&status) {
            return Err(ConnectError::new(
                ConnectErrorKind::UpstreamProxy,
                format!(
                    "upstream proxy {}:{} answered {status} to CONNECT {authority}",
                    up.host, up.port
                ),
            ));
        }
        Ok(conn)
    }
}

/// The host's normal form: the key of `--resolve`, pins and per-origin caps.
fn bare_host(host: &str) -> String {
    crate::host::normal_form(host)
}

fn is_local(ip: IpAddr) -> bool {
    // Binding a probe socket to the address succeeds only for addresses of this host.
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The connector the pooled hyper client uses: one per ALPN offer.
///
/// Each connector has caps of its own. Shared caps deadlocked: the general pool's connections
/// (HTTP/2 ones stay open while they are used, so they never time out) held every permit of an
/// origin, and WebSocket upgrades, which go through the HTTP/1.1-only pool, waited forever.
#[derive(Clone)]
pub(crate) struct Connector {
    pub settings: Arc<ConnectorSettings>,
    pub tls: Arc<ClientConfig>,
    pub limits: Arc<Limits>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri
                .host()
                .ok_or_else(|| ConnectError::new(ConnectErrorKind::Connect, "URI without a host"))?
                .to_string();
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let conn = this.settings.stream_to(&this.limits, &host, port).await?;
            if https {
                let tls = this.settings.tls(this.tls.clone(), &host, conn).await?;
                Ok(TokioIo::new(Conn::Tls(Box::new(tls))))
            } else {
                Ok(TokioIo::new(conn))
            }
        })
    }
}
