//! The upstream leg: resolving, connecting (directly or through a corporate proxy), TLS to the
//! origin, and the pooled hyper client built on top.
//!
//! Connection errors carry a [`ConnectErrorKind`] so the proxy can answer 502, 503 or 504 with
//! a reason a person can act on. Loopback, link-local, metadata and similar host-internal
//! addresses are refused unless the user named them ([`addr`]). Dialling is in [`dial`], the
//! caps in [`limits`].

mod addr;
mod conn;
mod corp;
mod dial;
mod limits;

pub(crate) use conn::Conn;
pub use corp::hide_password;
pub(crate) use corp::UpstreamProxy;
pub(crate) use dial::ConnectorSettings;

pub(crate) use crate::trust::UpstreamTls;
pub use addr::local_reason;
pub use limits::{
    default_total as default_connection_total, raise_descriptor_limit, Cap,
    PER_ORIGIN as DEFAULT_PER_ORIGIN,
};
pub(crate) use limits::{Limits, Permit};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;

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
    /// The origin's connection cap stayed full for the whole wait (503).
    AtCap,
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

    /// No connection permit for pool key `key` (cap `cap`) within `waited`.
    fn at_cap(key: &str, cap: usize, waited: Duration) -> Self {
        Self::new(
            ConnectErrorKind::AtCap,
            format!(
                "all {cap} upstream connections to {key} stayed busy for {waited:?}, the most \
                 Boundary opens to one origin; try again when fewer requests are running"
            ),
        )
    }

    /// The status the client gets for this failure.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            ConnectErrorKind::Timeout | ConnectErrorKind::HandshakeTimeout => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            ConnectErrorKind::LocalAddress => http::StatusCode::FORBIDDEN,
            ConnectErrorKind::AtCap => http::StatusCode::SERVICE_UNAVAILABLE,
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

/// The connector the pooled hyper client uses: one per ALPN offer.
///
/// Each connector (each pool) has caps of its own, per pool key, at least as large as the
/// request caps of what goes through it (see [`limits`]): idle connections of one pool hold
/// permits only that pool can hand over.
#[derive(Clone)]
pub(crate) struct Connector {
    pub settings: Arc<ConnectorSettings>,
    pub tls: Arc<UpstreamTls>,
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
            let started = std::time::Instant::now();
            let result = this.connect(uri).await;
            let metrics = &this.settings.metrics;
            match &result {
                Ok(_) => metrics.upstream_connect.observe(started.elapsed()),
                Err(e) => metrics.upstream_failed(e.kind),
            }
            result
        })
    }
}

impl Connector {
    /// A connection to the origin of `uri`: TCP (or the corporate proxy's tunnel), then TLS
    /// for https.
    async fn connect(&self, uri: Uri) -> Result<TokioIo<Conn>, ConnectError> {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::new(ConnectErrorKind::Connect, "URI without a host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // The pool's own key, so permits and pooled connections correspond one to one.
        let key = format!(
            "{}://{}:{port}",
            uri.scheme_str().unwrap_or("http"),
            crate::host::normal_form(&host)
        );
        if https {
            self.tls.begin();
        }
        let conn = self
            .settings
            .stream_to(&self.limits, &key, &host, port)
            .await?;
        if https {
            let tls = self.settings.tls(&self.tls, &host, conn).await?;
            Ok(TokioIo::new(Conn::Tls(Box::new(tls))))
        } else {
            Ok(TokioIo::new(conn))
        }
    }
}
