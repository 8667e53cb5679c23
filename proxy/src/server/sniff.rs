//! Phase 2, sniffing: TLS or plain HTTP on the first byte, and TLS interception with a leaf
//! minted for the name the client asked for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::Proxy;
use crate::host::Host;
use crate::io::Rewind;

/// Where a connection's requests are going, as far as the connection itself tells.
#[derive(Debug, Clone)]
pub(super) enum Leg {
    /// Connected to the proxy on purpose: requests name their target (absolute-form/CONNECT).
    Explicit,
    /// Redirected by netfilter: the original destination gives the port (and the IP when the
    /// request names no host).
    Transparent(SocketAddr),
    /// Inside a CONNECT tunnel to this host and port. `unruled` is set when no rule can allow
    /// the host: the tunnel is intercepted all the same (so each request in it is decided,
    /// answered with the 403 page and audited as itself), and the flag records whether any
    /// request was decided; if none was (no TLS, our certificate refused), the CONNECT itself
    /// is audited once as denied.
    Tunnel {
        host: Host,
        port: u16,
        unruled: Option<Arc<AtomicBool>>,
    },
}

/// The jailed process behind a client connection, when the proxy serves a jail.
pub(super) type Who = Option<Arc<boundary_audit::Requester>>;

/// The requester of a connection being looked up (on a blocking thread, while the client's
/// first bytes and TLS handshake arrive), or already known (inside a tunnel).
pub(super) enum Pending {
    Known(Who),
    Looking(tokio::task::JoinHandle<Who>),
}

impl Pending {
    /// The answer; a lookup that failed to run names no process.
    pub(super) async fn resolve(self) -> Who {
        match self {
            Pending::Known(who) => who,
            Pending::Looking(task) => task.await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the requester lookup failed; the records name no process");
                None
            }),
        }
    }
}

/// What every request on one client connection shares.
#[derive(Debug, Clone)]
pub(super) struct ConnCtx {
    pub leg: Leg,
    /// TLS was intercepted on this connection: requests are https to `fixed`.
    pub tls: bool,
    /// Host and port fixed by the connection (SNI / CONNECT / original destination).
    pub fixed: Option<(Host, u16)>,
    /// When the connection's own names disagree (SNI vs CONNECT authority), every request on it
    /// is denied with this reason.
    pub mismatch: Option<String>,
    /// The process that made the connection (every record of it names it).
    pub requester: Who,
}

impl ConnCtx {
    /// Inside a tunnel to a host no rule allows.
    pub(super) fn unruled_tunnel(&self) -> bool {
        matches!(
            self.leg,
            Leg::Tunnel {
                unruled: Some(_),
                ..
            }
        )
    }

    /// Records that a request on this connection was decided (and so audited).
    pub(super) fn decided(&self) {
        if let Leg::Tunnel {
            unruled: Some(flag),
            ..
        } = &self.leg
        {
            flag.store(true, Ordering::Release);
        }
    }
}

impl Proxy {
    /// Sniffs the first byte and serves TLS (intercepted) or plain HTTP on `io`.
    pub(super) async fn serve_stream<S>(self: Arc<Self>, mut io: S, leg: Leg, requester: Pending)
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
            self.serve_tls(io, leg, requester).await;
        } else {
            let fixed = match &leg {
                Leg::Tunnel { host, port, .. } => Some((host.clone(), *port)),
                _ => None,
            };
            let Some(requester) = self.admitted(requester).await else {
                return;
            };
            let ctx = ConnCtx {
                leg,
                tls: false,
                fixed,
                mismatch: None,
                requester,
            };
            self.serve_http(io, ctx).await;
        }
    }

    async fn serve_tls<S>(self: Arc<Self>, io: S, leg: Leg, requester: Pending)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let hs = self.config.handshake_timeout;
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        // The handshake's futures are boxed, so the connection's task does not keep room for
        // them for its whole life (likewise the TLS stream below: moved from phase to phase,
        // a stream held by value would be copied into each one's state).
        let start = match Box::pin(tokio::time::timeout(hs, acceptor)).await {
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
        let sni = match start.client_hello().server_name() {
            None => None,
            Some(raw) => match Host::parse(raw) {
                Some(h) => Some(h),
                None => {
                    tracing::debug!(sni = raw, "TLS server name is not a host name; closing");
                    return;
                }
            },
        };
        // The certificate names what the client asked for (SNI), else the host we route to.
        let cert_host = sni.clone();
        let Some((host, port, mismatch)) = route_tls(&leg, sni) else {
            tracing::debug!("TLS straight to the proxy without a server name; closing");
            return;
        };
        let cert_host = cert_host.unwrap_or_else(|| host.clone());
        let config = match self.ca.server_config(cert_host.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, host = %cert_host, "cannot mint a leaf certificate");
                return;
            }
        };
        let tls = match Box::pin(tokio::time::timeout(hs, start.into_stream(config))).await {
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
        let tls = Box::new(tls);
        let Some(requester) = self.admitted(requester).await else {
            return;
        };
        let ctx = ConnCtx {
            leg,
            tls: true,
            fixed: Some((host, port)),
            mismatch,
            requester,
        };
        self.serve_http(tls, ctx).await;
    }

    /// The connection's requester, or `None` when it is not a process of the jail (see
    /// `ProxyConfig::stranger`): the caller closes the connection unserved.
    async fn admitted(&self, requester: Pending) -> Option<Who> {
        let who = requester.resolve().await;
        let stranger = self.config.stranger;
        if let (Some(is_stranger), Some(r)) = (stranger, &who) {
            if is_stranger(r) {
                tracing::warn!(
                    "refused a connection to the proxy that no jailed process made (another \
                     process on this machine connected to it); closed unserved"
                );
                return None;
            }
        }
        Some(who)
    }
}

/// The host and port an intercepted TLS connection is routed to, and why its names disagree
/// if they do; `None` when nothing names a host.
fn route_tls(leg: &Leg, sni: Option<Host>) -> Option<(Host, u16, Option<String>)> {
    Some(match (leg, sni) {
        (Leg::Tunnel { host, port, .. }, Some(sni)) => {
            let mismatch = (sni != *host).then(|| {
                format!("the TLS server name {sni} does not match the CONNECT target {host}")
            });
            (host.clone(), *port, mismatch)
        }
        (Leg::Tunnel { host, port, .. }, None) => (host.clone(), *port, None),
        (Leg::Transparent(dst), Some(sni)) => (sni, dst.port(), None),
        (Leg::Transparent(dst), None) => (Host::parse(&dst.ip().to_string())?, dst.port(), None),
        (Leg::Explicit, Some(sni)) => (sni, 443, None),
        (Leg::Explicit, None) => return None,
    })
}
