//! The policy engine and the intercepting proxy.
//!
//! `rules` parses allow rules and compiles them into a [`rules::Policy`]; the rest of the crate
//! accepts connections on listeners it is handed (from a jail, or bound by a test), sniffs TLS,
//! plain HTTP and CONNECT, decides every request against the policy, forwards what is allowed
//! and answers 403 to the rest, reporting each decision to an [`boundary_audit::AuditSink`].
//! It knows nothing of how the jail was made.
//!
//! Transparent connections are forwarded to the *name* the client asked for (SNI or Host,
//! resolved again here, `--resolve` first) on the original destination's port, never blindly
//! to the original IP: a jailed process must not be able to send an allowed-looking request to
//! an address of its own choosing. Only TLS without SNI (or HTTP without Host) goes to the
//! original IP, which is then also the host the policy decides on.
//!
//! Other choices worth knowing:
//! - A CONNECT is accepted and intercepted even to a host no rule allows, so explicit and
//!   transparent clients alike get the 403 page for each request, audited as itself. Only such
//!   a tunnel that carried no request (no TLS, our certificate refused) is audited as the
//!   CONNECT, once, with the URL `https://host:port`, the port always written.
//! - Requests whose content type is `application/grpc*` get `grpc-status` (7 on a denial, 14 or
//!   4 on upstream failure) next to the 403/502/504, so gRPC clients report the real reason.
//! - Only WebSocket upgrades (`GET` + `Upgrade: websocket`) go over an HTTP/1.1-only upstream
//!   connection and are piped after 101; any other `Upgrade` (`h2c` included) is removed and
//!   the request goes upstream as plain HTTP/1.1. An origin's unasked 101 answers 502.
//! - A body on `GET`/`HEAD`/`OPTIONS`/`TRACE` is refused (400, audited): an origin ignoring it
//!   would run it as a request no one decided. Method and path override headers must be
//!   allowed by the rules too (403 otherwise). See docs/policies.md.
//! - One HTTP/2 client connection may open [`MAX_CONCURRENT_STREAMS`] streams at once; more
//!   wait in the client. Requests in flight are capped per origin and in total, hard: beyond a
//!   cap a request waits its turn, and after the idle timeout gets a 503 (see
//!   `upstream::Cap`).
//! - A response whose client reads nothing of it for the client stall timeout is ended (its
//!   upstream permit freed), so never-read answers cannot hold the caps (see `stall`).
//! - Only HTTP is spoken inside a tunnel or on a redirected connection: anything else (SSH over
//!   CONNECT, say) gets a 400 or is closed, because there is no request to decide.
//! - WebSocket over HTTP/2 (RFC 8441) is not offered; clients fall back to HTTP/1.1 for it.

#![forbid(unsafe_code)]

pub mod ca;
pub mod host;
mod io;
pub mod metrics;
mod release;
pub mod rules;
mod server;
mod slots;
mod stall;
mod trust;
pub mod upstream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use ca::{CaError, CertificateAuthority};
pub use server::{Proxy, ProxyBody, BLOCKED_TITLE, MAX_CONCURRENT_STREAMS};
pub use stall::DEFAULT_CLIENT_STALL_TIMEOUT;
pub use upstream::hide_password;

/// Idle client connections are closed after this unless configured otherwise. The binary's
/// `--idle-timeout` default is this constant, so the two cannot disagree.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Checks an upstream proxy URL exactly as [`Proxy::new`] will parse it, so the binary can
/// refuse a bad one before it starts a jail. Returns the host and port it will connect to
/// (so the binary can refuse its own listener as the upstream proxy).
pub fn check_upstream_proxy(url: &str) -> Result<(String, u16), String> {
    upstream::UpstreamProxy::parse(url).map(|p| (p.host, p.port))
}

/// Reads an upstream CA file exactly as the proxy's trust store will (and nothing else), so the
/// binary can refuse a missing or malformed one before it starts a jail.
pub fn check_upstream_ca_file(path: &Path) -> Result<(), String> {
    trust::check_extra(path)
}

/// Everything the proxy needs to know about one run. Its `Debug` hides the upstream proxy's
/// password.
pub struct ProxyConfig {
    /// The allow rules every request is decided against; a reload replaces them while the
    /// proxy runs (keep a clone of this handle to do so).
    pub policy: Arc<rules::LivePolicy>,
    /// `--resolve NAME=ADDR` overrides (lowercase names), consulted before system resolution.
    pub resolve: HashMap<String, IpAddr>,
    /// Extra trust anchors for origins (PEM, may hold several), added to the system store.
    pub upstream_ca_file: Option<PathBuf>,
    /// `http://host:port` or `https://...`: reach origins through CONNECT on this proxy.
    pub upstream_proxy: Option<String>,
    /// Session correlation headers (docs/interop.md §6), when enabled.
    pub correlation: Option<Correlation>,
    /// Idle client connections (no request in flight) are closed after this.
    pub idle_timeout: Duration,
    /// A response whose client takes nothing of it for this long is ended, freeing its place
    /// under the upstream caps (see `stall`).
    pub client_stall_timeout: Duration,
    /// Upstream TCP connect; exceeding it answers 504.
    pub connect_timeout: Duration,
    /// Upstream TLS handshake, and reading the client's first bytes / ClientHello.
    pub handshake_timeout: Duration,
    /// Connect upstream to loopback, link-local, metadata and other host-internal addresses
    /// even when neither `--resolve` nor a rule names them (`--upstream-allow-local`).
    pub upstream_allow_local: bool,
    /// Requests in flight, and so pooled upstream connections, per origin (`host:port`);
    /// more wait for their turn (at most `idle_timeout`, then 503), never go past.
    pub upstream_per_origin: usize,
    /// Upstream work in total: three quarters for requests in flight, a quarter for WebSocket
    /// pipes; more wait as above.
    pub upstream_total: usize,
    /// Client connections kept open; at the cap the oldest idle one is closed for a new one.
    pub client_connections: usize,
    /// Names the jailed process behind a client connection from its peer address and the
    /// address it connected to (see [`RequesterLookup`]); `None` outside a jail.
    pub requesters: Option<RequesterLookup>,
    /// Gives the allocator's free memory back to the system (boundary passes glibc's
    /// `malloc_trim`). Called on a blocking thread a second after a burst of client
    /// connections parked when idle or closed (64 or more since the last call), so the memory
    /// they freed does not keep the process at the burst's peak size. `None`: never called.
    pub release_memory: Option<fn()>,
    /// Says a requester is not a process of the jail: its connection is closed before any
    /// request is read or audited (landjail's proxy listens on the host's loopback, where any
    /// local process could otherwise use the run's policy, mappings and upstream credentials
    /// and write into its audit trail). `None`: every client is served.
    pub stranger: Option<fn(&boundary_audit::Requester) -> bool>,
}

/// Asked once per accepted connection with `(peer, destination)`: the peer's address and the
/// address the client connected to (the original destination of a redirected connection, else
/// the proxy's own); its answer goes into every audit record of the connection. The jail
/// provides it; the proxy knows nothing of how it finds the process.
pub type RequesterLookup =
    Arc<dyn Fn(SocketAddr, SocketAddr) -> boundary_audit::Requester + Send + Sync>;

impl ProxyConfig {
    /// Defaults: no overrides, no upstream proxy, no correlation, [`DEFAULT_IDLE_TIMEOUT`] idle,
    /// [`DEFAULT_CLIENT_STALL_TIMEOUT`] for a client that stops reading, 10 s connect and
    /// handshake, no host-internal upstream addresses, 64 upstream connections per origin and a
    /// quarter of the descriptor limit in total, client connections up to half of it.
    pub fn new(policy: Arc<rules::Policy>) -> Self {
        Self {
            policy: Arc::new(rules::LivePolicy::new(policy)),
            resolve: HashMap::new(),
            upstream_ca_file: None,
            upstream_proxy: None,
            correlation: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            client_stall_timeout: DEFAULT_CLIENT_STALL_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            upstream_allow_local: false,
            upstream_per_origin: upstream::DEFAULT_PER_ORIGIN,
            upstream_total: upstream::default_connection_total(),
            client_connections: slots::default_client_connections(),
            requesters: None,
            release_memory: None,
            stranger: None,
        }
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("policy", &self.policy)
            .field("resolve", &self.resolve)
            .field("upstream_ca_file", &self.upstream_ca_file)
            .field(
                "upstream_proxy",
                &self.upstream_proxy.as_deref().map(hide_password),
            )
            .field("correlation", &self.correlation)
            .field("idle_timeout", &self.idle_timeout)
            .field("client_stall_timeout", &self.client_stall_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("upstream_allow_local", &self.upstream_allow_local)
            .field("upstream_per_origin", &self.upstream_per_origin)
            .field("upstream_total", &self.upstream_total)
            .field("client_connections", &self.client_connections)
            .field("requesters", &self.requesters.is_some())
            .field("release_memory", &self.release_memory.is_some())
            .field("stranger", &self.stranger.is_some())
            .finish()
    }
}

/// Session correlation (docs/interop.md §6): allowed requests matching `targets` get the session id
/// and their sequence number as headers.
#[derive(Debug)]
pub struct Correlation {
    pub session_id: uuid::Uuid,
    pub targets: rules::Policy,
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("bad --upstream-proxy: {0}")]
    UpstreamProxy(String),
}
