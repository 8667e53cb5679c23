//! Freed memory goes back to the system after a burst of parked or closed connections.
//! Parking frees each idle HTTP/1.1 connection's hyper buffers and state (~28 KB), closing
//! frees all of a connection, but the C allocator keeps freed chunks that sit between live ones
//! for reuse, so after a burst of connections the process stays as large as it was at the
//! burst's peak (see BENCHMARKS.md, "Memory per idle connection"). Once
//! [`RELEASE_AFTER_PARKS`] connections have parked or closed since the last time,
//! the proxy calls the release hook its embedder gave it (`release_memory` in
//! [`crate::ProxyConfig`]; boundary passes glibc's `malloc_trim`) on a blocking thread every
//! [`RELEASE_DELAY`] while the burst goes on, and once more for the burst's tail (the
//! connections that parked or closed in its last second), then stops. Nothing of this runs
//! per request: a connection parks at most once per idle spell and closes once, so a steady
//! trickle of them releases once per [`RELEASE_AFTER_PARKS`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections parked or closed since the last release before another one is worth its cost
/// (a walk of the allocator's free lists under its locks): at least ~1.8 MB freed.
pub(crate) const RELEASE_AFTER_PARKS: usize = 64;

/// How long after the burst's 64th connection the first release runs, and how far apart the
/// next ones are while connections go on parking or closing.
pub(crate) const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// Counts parked and closed connections and calls the release hook after a burst of them.
pub(crate) struct Release {
    hook: Option<fn()>,
    parks: AtomicUsize,
    scheduled: AtomicBool,
}

impl Release {
    /// `None`: nothing is released (the memory is reused by later connections).
    pub(crate) fn new(hook: Option<fn()>) -> Arc<Self> {
        Arc::new(Self {
            hook,
            parks: AtomicUsize::new(0),
            scheduled: AtomicBool::new(false),
        })
    }

    /// Notes one connection that parked or closed; the one that completes a burst schedules
    /// the releases.
    pub(crate) fn freed(self: &Arc<Self>) {
        let Some(hook) = self.hook else {
            return;
        };
        if self.parks.fetch_add(1, Ordering::Relaxed) + 1 < RELEASE_AFTER_PARKS
            || self.scheduled.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Once a second while the burst goes on, and once more for its tail.
            loop {
                tokio::time::sleep(RELEASE_DELAY).await;
                let parked = this.parks.swap(0, Ordering::Relaxed);
                if parked > 0 {
                    if let Err(e) = tokio::task::spawn_blocking(hook).await {
                        tracing::debug!(error = %e, "releasing freed memory failed");
                    }
                }
                if parked < RELEASE_AFTER_PARKS {
                    break;
                }
            }
            this.scheduled.store(false, Ordering::Release);
        });
    }
}
