//! Dialling an origin: resolving (with `--resolve` and the checked pins), refusing
//! host-internal addresses nobody allowed and the proxy's own listener, TCP with a timeout,
//! TLS, and the detour through a corporate proxy. The connector's caps are taken here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{
    addr, corp, local_reason, Conn, ConnectError, ConnectErrorKind, Limits, UpstreamProxy,
    UpstreamTls,
};

/// Settings shared by every connector clone.
pub(crate) struct ConnectorSettings {
    pub resolve: HashMap<String, IpAddr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub upstream_proxy: Option<UpstreamProxy>,
    /// TLS to the corporate proxy itself (no ALPN).
    pub proxy_tls: UpstreamTls,
    /// The proxy's own listening addresses, never to be connected to.
    pub listen_addrs: Arc<RwLock<Vec<SocketAddr>>>,
    /// Connect to loopback, link-local and metadata addresses too (`--upstream-allow-local`).
    pub allow_local: bool,
    /// Checked answers the connector uses instead of resolving again.
    pub(crate) pins: addr::Pins,
    /// How long a connect waits at the connection cap (the client idle timeout).
    pub cap_wait: Duration,
    /// Where connect latency, failures and open connections are counted.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl ConnectorSettings {
    /// Whether connecting to `addr` would reach this proxy.
    pub(crate) fn is_self(&self, addr: SocketAddr) -> bool {
        let addrs = self.listen_addrs.read().unwrap_or_else(|e| e.into_inner());
        addrs.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || (l.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr::host_reason(addr.ip()).is_some()))
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
        // Borrowed when `host` is in normal form already (a decided target's host is).
        let bare = crate::host::normal_form_cow(host);
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
            .filter(|a| refused_reason(a.ip()).is_none())
            .collect();
        if !kept.is_empty() {
            return Ok(kept);
        }
        let reason = refused_reason(first.ip()).unwrap_or("local");
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

    /// TLS over `stream`. The handshake timeout also bounds the wait for the trust anchors
    /// (the first handshake may wait for them to finish loading).
    pub(super) async fn tls(
        &self,
        tls: &UpstreamTls,
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
        let deadline = tokio::time::Instant::now() + self.handshake_timeout;
        let config = match tokio::time::timeout_at(deadline, tls.config()).await {
            Ok(Ok(config)) => config,
            Ok(Err(e)) => {
                return Err(ConnectError::new(
                    ConnectErrorKind::Tls,
                    format!("cannot verify {host}: {e}"),
                ))
            }
            Err(_) => {
                return Err(ConnectError::new(
                    ConnectErrorKind::HandshakeTimeout,
                    format!(
                        "TLS handshake with {host} timed out after {:?}: the trust anchors \
                         (system trust store, --upstream-ca-file) were still loading",
                        self.handshake_timeout
                    ),
                ))
            }
        };
        let connector = TlsConnector::from(config);
        match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
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
    /// while the connection cap of `key` (the pool key) is reached; the connection holds its
    /// permit until closed.
    pub(super) async fn stream_to(
        &self,
        limits: &Limits,
        key: &str,
        host: &str,
        port: u16,
    ) -> Result<Conn, ConnectError> {
        let permit = limits
            .acquire(key, self.cap_wait)
            .await
            .map_err(|_| ConnectError::at_cap(key, limits.per_key(), self.cap_wait))?
            .counted(&self.metrics);
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
            conn = Conn::Tls(Box::new(self.tls(&self.proxy_tls, &up.host, conn).await?));
        }
        corp::connect_through(&mut conn, up, host, port, self.handshake_timeout).await?;
        Ok(conn)
    }
}

/// The host's normal form: the key of `--resolve`, pins and per-origin caps.
fn bare_host(host: &str) -> String {
    crate::host::normal_form(host)
}

/// Why an upstream address is refused unless named: host-internal ranges, or one of this
/// host's own addresses.
fn refused_reason(ip: IpAddr) -> Option<&'static str> {
    local_reason(ip).or_else(|| addr::host_reason(ip))
}
