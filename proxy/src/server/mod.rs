//! The client leg, as phases with typed hand-offs:
//!
//! 1. [`accept`]: the accept loop and the original destination of a redirected connection;
//! 2. [`sniff`]: TLS or plain HTTP on the first byte; TLS interception with a minted leaf;
//! 3. [`conn`]: serving one client connection (HTTP/1.1 or HTTP/2, idle timeout) and routing
//!    each request through the phases below;
//! 4. [`decide`]: where the request goes ([`target`]) and whether it may, as one
//!    [`decide::Verdict`]; the only place that writes an audit record;
//! 5. [`forward`]: the upstream request (headers, body, upgrades, CONNECT tunnels);
//! 6. [`respond`]: every answer the proxy writes itself (refusals, upstream failures), with
//!    the HTTP status and, for gRPC, `grpc-status` set together.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use boundary_audit::AuditSink;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::ca::CertificateAuthority;
use crate::upstream::{self, Connector, ConnectorSettings, UpstreamProxy};
use crate::{host, ProxyConfig, ProxyError};

mod accept;
mod body;
mod conn;
mod decide;
mod forward;
mod framing;
mod overrides;
mod park;
mod respond;
mod sniff;
mod target;

use body::RequestBody;
pub use respond::BLOCKED_TITLE;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the proxy produces.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// HTTP/1 response header count limit: hyper's default of 100 is below what some real sites
/// send. Requests keep hyper's 100 (no client needs more), because a larger limit costs a
/// per-message allocation and initialisation proportional to it.
const MAX_RESPONSE_HEADERS: usize = 256;
/// The most an HTTP/1.1 request head may take, in bytes (hyper's read buffer, kept while the
/// head is incomplete). Without it hyper keeps up to ~400 KB of an unfinished head per
/// connection until the idle timeout: a jailed process holding thousands of them grows the
/// proxy by gigabytes. 64 KiB is twice what common servers accept (nginx 32 KiB, Node 16 KiB);
/// a longer head is answered 431 and the connection closed.
pub(crate) const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// HTTP/2 header list limit in bytes (large cookies and tokens must pass).
const MAX_HEADER_LIST: u32 = 256 * 1024;
/// HTTP/2 streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
/// each may need an upstream connection, so a flood of streams must queue in the client, not
/// turn into thousands of descriptors here. Browsers and gRPC default to 100 as well.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

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
    /// Requests in flight per origin and in total (WebSocket upgrades excepted).
    requests: upstream::Limits,
    /// WebSocket upgrades in flight and open pipes: one per client connection, so they cannot
    /// multiply descriptors; counted apart, so long-lived pipes never starve requests.
    pipes: upstream::Limits,
    listen_addrs: Arc<RwLock<Vec<SocketAddr>>>,
    /// Open client connections, for the cap (see `slots`).
    slots: Arc<crate::slots::Slots>,
    /// Live figures for `/metrics`, shared with the connectors.
    metrics: Arc<crate::metrics::Metrics>,
    /// Ends responses whose clients stop reading (the client stall timeout).
    sweeper: Arc<crate::stall::Sweeper>,
    /// Gives freed memory back after a burst of parked connections.
    release: Arc<crate::release::Release>,
}

impl Proxy {
    /// Builds the proxy and its pooled upstream clients. The trust anchors are read only when
    /// the first HTTPS connection upstream needs them (see `trust`).
    pub fn new(
        config: ProxyConfig,
        ca: Arc<CertificateAuthority>,
        sink: Arc<dyn AuditSink>,
    ) -> Result<Arc<Self>, ProxyError> {
        let trust = crate::trust::TrustStore::new(config.upstream_ca_file.clone());
        let upstream_proxy = config
            .upstream_proxy
            .as_deref()
            .map(UpstreamProxy::parse)
            .transpose()
            .map_err(ProxyError::UpstreamProxy)?;
        let listen_addrs = Arc::new(RwLock::new(Vec::new()));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let settings = Arc::new(ConnectorSettings {
            resolve: config
                .resolve
                .iter()
                .map(|(k, v)| (host::normal_form(k), *v))
                .collect(),
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            upstream_proxy,
            proxy_tls: upstream::UpstreamTls::new(trust.clone(), &[]),
            listen_addrs: listen_addrs.clone(),
            allow_local: config.upstream_allow_local,
            pins: Default::default(),
            cap_wait: config.idle_timeout,
            metrics: metrics.clone(),
        });
        // The total is shared out: three quarters to requests, a quarter to WebSocket pipes.
        let pipes_total = (config.upstream_total / 4).max(1);
        let requests_total = config.upstream_total.saturating_sub(pipes_total).max(1);
        let requests = upstream::Limits::new(config.upstream_per_origin, Some(requests_total));
        let pipes = upstream::Limits::new(pipes_total, Some(pipes_total));
        // Each pool's connection cap per key is the request cap of what goes through it.
        let build = |alpn: &[&[u8]], per_key: usize| {
            let connector = Connector {
                settings: settings.clone(),
                tls: Arc::new(upstream::UpstreamTls::new(trust.clone(), alpn)),
                limits: Arc::new(upstream::Limits::new(per_key, None)),
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
        let client = build(&[b"h2", b"http/1.1"], requests.per_key());
        let client_h1 = build(&[b"http/1.1"], pipes.per_key());
        let slots = crate::slots::Slots::new(config.client_connections);
        let sweeper = crate::stall::Sweeper::new(config.client_stall_timeout);
        let release = crate::release::Release::new(config.release_memory);
        Ok(Arc::new(Self {
            config,
            ca,
            sink,
            sequence: AtomicI32::new(0),
            settings,
            client,
            client_h1,
            requests,
            pipes,
            listen_addrs,
            slots,
            metrics,
            sweeper,
            release,
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

    /// Live figures (decisions, upstream failures and latency, open connections) and the
    /// number of open client connections, for `/metrics`.
    pub fn metrics(&self) -> (&crate::metrics::Metrics, usize) {
        (&self.metrics, self.slots.open())
    }

    /// The sequence number the next decided request gets (also how many were decided).
    pub fn next_sequence_number(&self) -> i32 {
        self.sequence.load(Ordering::SeqCst)
    }
}
