//! Caps on upstream connections, per origin and in total, so a jailed process opening many
//! parallel requests (HTTP/2 streams to an HTTP/1.1 origin, or many client connections) cannot
//! make the proxy open descriptors without bound. Beyond a cap a new connection waits for a
//! permit instead of failing; the permit lives as long as the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Raises this process's soft descriptor limit to its hard limit, so a proxy started under a
/// low default (often 1,024) is not starved by a jailed process that opens many connections.
/// Returns the limit before and after.
pub fn raise_descriptor_limit() -> Result<(u64, u64), nix::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// Default upstream connections per origin (`host:port`).
pub const PER_ORIGIN: usize = 64;

/// The default total: a quarter of the descriptor limit (client connections, the audit path
/// and the jail need the rest), at least 64 and at most 8,192.
pub fn default_total() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(8192).clamp(64, 8192)
}

/// How long a connect waits for a permit before it goes ahead without one. Caps must never
/// hang a request: permits are held by pooled connections that hyper's pool itself may be
/// waiting on (a soak with 1,000 clients stalled for good on a strict per-origin cap), so a
/// cap slows a flood down and bounds it in the common case, and never blocks for longer.
pub const CAP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Held by one upstream connection: a permit of its origin and one of the total, each absent
/// when the connection went ahead after waiting `CAP_WAIT` for it.
#[derive(Debug)]
pub(crate) struct Permit {
    _origin: Option<OwnedSemaphorePermit>,
    _total: Option<OwnedSemaphorePermit>,
}

/// The semaphores.
#[derive(Debug)]
pub(crate) struct Limits {
    per_origin: usize,
    total: Arc<Semaphore>,
    origins: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

impl Limits {
    pub(crate) fn new(per_origin: usize, total: usize) -> Self {
        Self {
            per_origin: per_origin.max(1),
            total: Arc::new(Semaphore::new(total.max(1))),
            origins: Mutex::new(HashMap::new()),
        }
    }

    /// Waits (at most `CAP_WAIT` for each) until a connection to `host:port` may be opened.
    /// The origin permit is taken first, so requests to a busy origin queue there without
    /// holding a total permit.
    pub(crate) async fn acquire(&self, host: &str, port: u16) -> Permit {
        let origin = {
            let mut map = self.origins.lock().unwrap_or_else(|e| e.into_inner());
            // Forget origins with no open connection once the map grows.
            if map.len() > 4096 {
                let full = self.per_origin;
                map.retain(|_, s| s.available_permits() < full);
            }
            map.entry((crate::host::normal_form(host), port))
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_origin)))
                .clone()
        };
        let origin = wait(origin, host, port, "to this origin").await;
        let total = wait(self.total.clone(), host, port, "in total").await;
        Permit {
            _origin: origin,
            _total: total,
        }
    }
}

async fn wait(
    sem: Arc<Semaphore>,
    host: &str,
    port: u16,
    which: &str,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = sem.clone().try_acquire_owned() {
        return Some(permit);
    }
    tracing::debug!(
        host,
        port,
        "upstream connections {which} at the cap; waiting"
    );
    match tokio::time::timeout(CAP_WAIT, sem.acquire_owned()).await {
        Ok(permit) => Some(permit.expect("never closed")),
        Err(_) => {
            tracing::warn!(
                host,
                port,
                "upstream connections {which} stayed at the cap for {CAP_WAIT:?}; connecting beyond it"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn beyond_a_cap_a_connection_waits_until_one_closes() {
        let limits = Limits::new(2, 3);
        let a = limits.acquire("a.test", 80).await;
        let _b = limits.acquire("A.test", 80).await;
        // A third connection to the same origin waits (the name is case-insensitive).
        assert!(limits.acquire("a.test", 80).now_or_never().is_none());
        // Another origin gets the last total permit; then every origin waits.
        let c = limits.acquire("b.test", 80).await;
        assert!(limits.acquire("c.test", 80).now_or_never().is_none());
        // A closed connection lets the next one in.
        drop(c);
        assert!(limits.acquire("c.test", 80).now_or_never().is_some());
        drop(a);
        assert!(limits.acquire("a.test", 80).now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_cap_never_holds_a_connection_longer_than_cap_wait() {
        let limits = Limits::new(1, 1);
        let _a = limits.acquire("a.test", 80).await;
        let b = limits.acquire("a.test", 80).await;
        assert!(b._origin.is_none() && b._total.is_none());
    }
}
