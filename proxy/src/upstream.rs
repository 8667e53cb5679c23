//! The upstream leg: resolving, connecting (directly or through a corporate proxy), TLS to the
//! origin, and the pooled hyper client built on top.
//!
//! Connection errors carry a [`ConnectErrorKind`] so the proxy can answer 502 or 504 with a
//! reason a person can act on.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// A parsed `--upstream-proxy` URL.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamProxy {
    tls: bool,
    host: String,
    port: u16,
    authorization: Option<String>,
}

impl UpstreamProxy {
    /// Parses `http://[user:pass@]host[:port]` or `https://...`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "upstream proxy {url:?} must start with http:// or https://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!(
                "upstream proxy {url:?} must not have a path; use scheme://host:port"
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let authority: http::uri::Authority = hostport
            .parse()
            .map_err(|e| format!("upstream proxy {url:?} has a bad host: {e}"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(format!("upstream proxy {url:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authorization = userinfo.map(|u| {
            let decoded = percent_encoding::percent_decode_str(u).decode_utf8_lossy();
            format!("Basic {}", base64(decoded.as_bytes()))
        });
        Ok(Self {
            tls,
            host,
            port,
            authorization,
        })
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

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
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
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

    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addrs = self.resolve(host, port).await?;
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

    /// A byte stream to `host:port`, through the corporate proxy when one is configured.
    async fn stream_to(&self, host: &str, port: u16) -> Result<Conn, ConnectError> {
        let Some(up) = &self.upstream_proxy else {
            return Ok(Conn::Plain(self.tcp(host, port).await?));
        };
        let tcp = self
            .tcp(&up.host, up.port)
            .await
            .map_err(|e| ConnectError {
                kind: match e.kind {
                    ConnectErrorKind::Timeout => ConnectErrorKind::Timeout,
                    _ => ConnectErrorKind::UpstreamProxy,
                },
                message: format!("upstream proxy: {}", e.message),
            })?;
        let mut conn = Conn::Plain(tcp);
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

fn is_local(ip: IpAddr) -> bool {
    // Binding a probe socket to the address succeeds only for addresses of this host.
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Reads the reply head of a CONNECT byte by byte (so no tunnel byte is consumed) and returns
/// the status code.
async fn read_connect_reply<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<u16> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply head too long",
            ));
        }
        let b = s.read_u8().await?;
        head.push(b);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP reply: {}", line.trim()),
        ));
    }
    parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "reply without a status code"))
}

/// A connection to the origin: plain TCP, or TLS over a connection (which may itself be TLS
/// to a corporate proxy).
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<Conn>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(_) => Connected::new(),
            Conn::Tls(s) => {
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

/// The connector the pooled hyper client uses: one per ALPN offer.
#[derive(Clone)]
pub(crate) struct Connector {
    pub settings: Arc<ConnectorSettings>,
    pub tls: Arc<ClientConfig>,
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
            let conn = this.settings.stream_to(&host, port).await?;
            if https {
                let tls = this.settings.tls(this.tls.clone(), &host, conn).await?;
                Ok(TokioIo::new(Conn::Tls(Box::new(tls))))
            } else {
                Ok(TokioIo::new(conn))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn upstream_proxy_urls() {
        let p = UpstreamProxy::parse("http://u:p%40ss@corp.example:3128").unwrap();
        assert!(!p.tls);
        assert_eq!((p.host.as_str(), p.port), ("corp.example", 3128));
        assert_eq!(p.authorization.as_deref(), Some("Basic dTpwQHNz"));
        let p = UpstreamProxy::parse("https://[::1]/").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.tls), ("::1", 443, true));
        assert!(UpstreamProxy::parse("socks5://x:1").is_err());
        assert!(UpstreamProxy::parse("http://x:1/path").is_err());
        assert!(UpstreamProxy::parse("http://").is_err());
    }
}
