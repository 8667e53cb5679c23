//! The proxy's live figures for `/metrics`: requests decided by decision, upstream failures by
//! kind, open client and upstream connections, and the decision and upstream-connect latency
//! histograms. Plain atomics, updated where the proxy already decides and connects, and
//! written out in the Prometheus text format by [`Metrics::render`].

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::upstream::ConnectErrorKind;

/// Bucket bounds (seconds) of both histograms: sub-millisecond decisions to slow connects.
const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every failure kind with its label value, in the order `/metrics` lists them.
const KINDS: [(ConnectErrorKind, &str); 9] = [
    (ConnectErrorKind::Resolve, "resolve"),
    (ConnectErrorKind::Connect, "connect"),
    (ConnectErrorKind::Timeout, "timeout"),
    (ConnectErrorKind::Tls, "tls"),
    (ConnectErrorKind::HandshakeTimeout, "handshake_timeout"),
    (ConnectErrorKind::UpstreamProxy, "upstream_proxy"),
    (ConnectErrorKind::Loop, "loop"),
    (ConnectErrorKind::LocalAddress, "local_address"),
    (ConnectErrorKind::AtCap, "at_cap"),
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The proxy's counters, shared by all its connections.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    failures: [AtomicU64; KINDS.len()],
    upstream_open: Arc<AtomicI64>,
    /// Idle HTTP/1.1 client connections parked (holding no HTTP buffers) right now.
    parked: Arc<AtomicI64>,
    /// From the request arriving to the verdict (rules, overrides, address checks).
    pub decision: Histogram,
    /// From asking for an upstream connection to having it (TCP, corporate proxy, TLS).
    pub upstream_connect: Histogram,
}

/// Counts one open upstream connection (or one parked client connection) for as long as it
/// is held.
#[derive(Debug)]
pub(crate) struct OpenUpstream(Arc<AtomicI64>);

impl Drop for OpenUpstream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts one decided (and audited) request.
    pub fn decided(&self, allowed: bool) {
        let c = if allowed { &self.allowed } else { &self.denied };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failure to reach an origin.
    pub fn upstream_failed(&self, kind: ConnectErrorKind) {
        if let Some(i) = KINDS.iter().position(|(k, _)| *k == kind) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A guard that counts an upstream connection as open until it is dropped.
    pub(crate) fn open_upstream(&self) -> OpenUpstream {
        self.upstream_open.fetch_add(1, Ordering::Relaxed);
        OpenUpstream(self.upstream_open.clone())
    }

    /// A guard that counts a client connection as parked until it is dropped.
    pub(crate) fn parked(&self) -> OpenUpstream {
        self.parked.fetch_add(1, Ordering::Relaxed);
        OpenUpstream(self.parked.clone())
    }

    /// Client connections parked right now (idle HTTP/1.1 connections holding no buffers).
    pub fn client_connections_parked(&self) -> i64 {
        self.parked.load(Ordering::Relaxed).max(0)
    }

    /// Requests decided so far: (allowed, denied).
    pub fn decisions(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        )
    }

    /// Writes every figure in the Prometheus text format (version 0.0.4), with
    /// `client_connections` open client connections.
    pub fn render(&self, out: &mut String, client_connections: usize) {
        let (allowed, denied) = self.decisions();
        let _ = writeln!(
            out,
            "# HELP boundary_requests_total Requests decided, by decision.\n\
             # TYPE boundary_requests_total counter\n\
             boundary_requests_total{{decision=\"allow\"}} {allowed}\n\
             boundary_requests_total{{decision=\"deny\"}} {denied}"
        );
        let _ = writeln!(
            out,
            "# HELP boundary_upstream_failures_total Failures to reach an origin, by kind.\n\
             # TYPE boundary_upstream_failures_total counter"
        );
        for ((_, label), n) in KINDS.iter().zip(&self.failures) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "boundary_upstream_failures_total{{kind=\"{label}\"}} {n}"
            );
        }
        let upstream = self.upstream_open.load(Ordering::Relaxed).max(0);
        let parked = self.client_connections_parked();
        let _ = writeln!(
            out,
            "# HELP boundary_client_connections Open connections from jailed programs.\n\
             # TYPE boundary_client_connections gauge\n\
             boundary_client_connections {client_connections}\n\
             # HELP boundary_client_connections_parked Idle HTTP/1.1 client connections holding no HTTP buffers.\n\
             # TYPE boundary_client_connections_parked gauge\n\
             boundary_client_connections_parked {parked}\n\
             # HELP boundary_upstream_connections Open (or opening) connections to origins.\n\
             # TYPE boundary_upstream_connections gauge\n\
             boundary_upstream_connections {upstream}"
        );
        self.decision.render(
            out,
            "boundary_decision_duration_seconds",
            "Time from a request's arrival to its verdict.",
        );
        self.upstream_connect.render(
            out,
            "boundary_upstream_connect_duration_seconds",
            "Time to open a connection to an origin (TCP, corporate proxy, TLS).",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.0005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.05\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"10\"} 2\n"), "{s}");
        assert!(
            s.contains("x_bucket{le=\"+Inf\"} 3\nx_sum 60.0303\nx_count 3\n"),
            "{s}"
        );
    }

    #[test]
    fn open_upstream_connections_count_until_dropped() {
        let m = Metrics::default();
        let a = m.open_upstream();
        let b = m.open_upstream();
        drop(a);
        let mut s = String::new();
        m.render(&mut s, 4);
        assert!(s.contains("boundary_upstream_connections 1\n"), "{s}");
        assert!(s.contains("boundary_client_connections 4\n"), "{s}");
        assert!(s.contains("boundary_client_connections_parked 0\n"), "{s}");
        drop(b);
    }
}
