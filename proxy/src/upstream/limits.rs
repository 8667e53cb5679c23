//! Hard caps on upstream work, so a jailed process opening many parallel requests (HTTP/2
//! streams to an HTTP/1.1 origin, or many client connections) cannot make the proxy open
//! descriptors without bound. Beyond a cap a request waits for its turn (first come, first
//! served) instead of failing, for at most a patience the caller gives; it never goes past.
//!
//! Two layers use [`Limits`]:
//! - requests in flight, per origin (`host:port`) and in total: a permit is taken before the
//!   request goes upstream and held until its response body (or upgraded pipe) ends;
//! - the connector, per pool key (`scheme://host:port`) with the same per-origin number: a
//!   connection holds its permit until it closes. This bounds what hyper's pool may open
//!   beyond the requests in flight (a connect it finishes in the background after an idle
//!   connection came back first). It cannot deadlock: a request that needs a connection
//!   holds a request permit, so fewer than the cap of other requests to that key are busy, and
//!   every other connection permit belongs to an idle connection (which the pool hands over),
//!   or to a connect that will end as one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Default cap on requests in flight (and so upstream connections) per origin (`host:port`).
pub const PER_ORIGIN: usize = 64;

/// The default total: a quarter of the descriptor limit (client connections, the audit path
/// and the jail need the rest), at least 64 and at most 8,192.
pub fn default_total() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(8192).clamp(64, 8192)
}

/// Which cap stayed full for the whole patience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// The cap of one origin (or pool key).
    PerOrigin,
    /// The cap over all origins.
    Total,
}

/// Held while one request is in flight or one connection is open; frees its place when
/// dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    _key: OwnedSemaphorePermit,
    _total: Option<OwnedSemaphorePermit>,
    /// Counts the connection as open in `/metrics` while it is held.
    _open: Option<crate::metrics::OpenUpstream>,
}

impl Permit {
    /// The permit, counted as an open upstream connection until dropped.
    pub(crate) fn counted(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self._open = Some(metrics.open_upstream());
        self
    }
}

/// The semaphores: one per key, created on first use, and an optional total.
#[derive(Debug)]
pub(crate) struct Limits {
    per_key: usize,
    total_size: usize,
    total: Option<Arc<Semaphore>>,
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    /// `per_key` permits for each key, and `total` over all keys when given (each at least 1).
    pub(crate) fn new(per_key: usize, total: Option<usize>) -> Self {
        Self {
            per_key: per_key.max(1),
            total_size: total.map_or(usize::MAX, |t| t.max(1)),
            total: total.map(|t| Arc::new(Semaphore::new(t.max(1)))),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The per-key cap.
    pub(crate) fn per_key(&self) -> usize {
        self.per_key
    }

    /// The total cap (`usize::MAX` when there is none).
    pub(crate) fn total(&self) -> usize {
        self.total_size
    }

    /// Waits, at most `patience` in all, for a place under `key`'s cap and then under the
    /// total. The key's permit is taken first, so work for a busy key queues there without
    /// holding a total permit that other keys could use. `Err` names the cap that stayed full.
    pub(crate) async fn acquire(&self, key: &str, patience: Duration) -> Result<Permit, Cap> {
        let sem = {
            let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            // Forget keys nobody holds a permit of once the map grows.
            if map.len() > 4096 {
                let full = self.per_key;
                map.retain(|_, s| s.available_permits() < full);
            }
            // Looked up by `&str` first: the key is allocated once per origin, not per request.
            match map.get(key) {
                Some(sem) => sem.clone(),
                None => map
                    .entry(key.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_key)))
                    .clone(),
            }
        };
        let deadline = tokio::time::Instant::now() + patience;
        let key_permit = wait(sem, deadline, key, Cap::PerOrigin).await?;
        let total = match &self.total {
            Some(t) => Some(wait(t.clone(), deadline, key, Cap::Total).await?),
            None => None,
        };
        Ok(Permit {
            _key: key_permit,
            _total: total,
            _open: None,
        })
    }
}

async fn wait(
    sem: Arc<Semaphore>,
    deadline: tokio::time::Instant,
    key: &str,
    cap: Cap,
) -> Result<OwnedSemaphorePermit, Cap> {
    if let Ok(permit) = sem.clone().try_acquire_owned() {
        return Ok(permit);
    }
    tracing::debug!(key, ?cap, "upstream cap reached; waiting for a turn");
    match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
        Ok(permit) => Ok(permit.expect("the semaphores are never closed")),
        Err(_) => Err(cap),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cap, Limits};
    use futures_util::FutureExt;
    use std::time::Duration;

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn beyond_a_cap_work_waits_until_a_place_frees() {
        let limits = Limits::new(2, Some(3));
        let a = limits.acquire("a.test:80", LONG).await.unwrap();
        let _b = limits.acquire("a.test:80", LONG).await.unwrap();
        // A third under the same key waits.
        assert!(limits.acquire("a.test:80", LONG).now_or_never().is_none());
        // Another key gets the last total permit; then every key waits.
        let c = limits.acquire("b.test:80", LONG).await.unwrap();
        assert!(limits.acquire("c.test:80", LONG).now_or_never().is_none());
        // A freed place lets the next one in.
        drop(c);
        assert!(limits.acquire("c.test:80", LONG).now_or_never().is_some());
        drop(a);
        assert!(limits.acquire("a.test:80", LONG).now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_full_cap_is_never_exceeded_it_names_itself_after_the_patience() {
        let limits = Limits::new(1, Some(2));
        let _a = limits.acquire("a.test:80", LONG).await.unwrap();
        let late = limits.acquire("a.test:80", Duration::from_millis(20)).await;
        assert_eq!(late.unwrap_err(), Cap::PerOrigin);
        let _b = limits.acquire("b.test:80", LONG).await.unwrap();
        let late = limits.acquire("c.test:80", Duration::from_millis(20)).await;
        assert_eq!(late.unwrap_err(), Cap::Total);
        // Without a total, only the key counts.
        let keys_only = Limits::new(1, None);
        let _x = keys_only.acquire("a", LONG).await.unwrap();
        assert!(keys_only.acquire("b", LONG).now_or_never().is_some());
    }
}
