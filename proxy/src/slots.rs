//! Client connection slots: a cap on the client connections the proxy keeps open, below the
//! descriptor limit, and the rule that makes room when the cap is reached: the oldest
//! connection with nothing in flight is closed. So a jailed process holding thousands of idle
//! connections cannot starve a well-behaved client in the same jail: the newcomer is accepted
//! and the idle flood is what gets closed.
//!
//! A connection's task runs inside [`Slot::run`], which carries the slot in a task-local so the
//! HTTP phase can attach its in-flight counter ([`attach`]) and a CONNECT tunnel or upgrade
//! pipe spawned from it keeps the same slot ([`carry`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::io::Activity;

/// The default cap: half the descriptor limit (upstream connections get a quarter, the rest
/// is left for the audit path, logs and the jail), at least 16.
pub fn default_client_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 2).unwrap_or(usize::MAX).max(16)
}

struct Entry {
    /// The HTTP phase's counter; `None` while the connection has not reached HTTP yet.
    activity: Option<Arc<Activity>>,
    /// Never idle (an upgraded pipe whose traffic is not counted as requests).
    busy: bool,
    evict: CancellationToken,
}

impl Entry {
    fn idle(&self) -> bool {
        !self.busy && self.activity.as_ref().is_none_or(|a| a.in_flight() == 0)
    }
}

/// Every open client connection, oldest first.
pub(crate) struct Slots {
    cap: usize,
    open: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// One client connection's place; frees it when the last holder is dropped.
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotInner>);

struct SlotInner {
    id: u64,
    slots: Arc<Slots>,
    evict: CancellationToken,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.slots.lock().1.remove(&self.id);
    }
}

tokio::task_local! {
    static CURRENT: Slot;
}

impl Slots {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            open: Mutex::new((0, BTreeMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Entry>)> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection just accepted; at the cap, the oldest idle connection is
    /// closed to make room (when every connection is busy, none is).
    pub(crate) fn admit(self: &Arc<Self>) -> Slot {
        let mut open = self.lock();
        if open.1.len() >= self.cap {
            evict_oldest_idle(&mut open.1);
        }
        open.0 += 1;
        let id = open.0;
        let evict = CancellationToken::new();
        open.1.insert(
            id,
            Entry {
                activity: None,
                busy: false,
                evict: evict.clone(),
            },
        );
        Slot(Arc::new(SlotInner {
            id,
            slots: self.clone(),
            evict,
        }))
    }

    /// How many client connections are open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().1.len()
    }

    /// Closes the oldest idle connection (accept ran out of descriptors); false when every
    /// connection is busy.
    pub(crate) fn shed(&self) -> bool {
        evict_oldest_idle(&mut self.lock().1)
    }
}

fn evict_oldest_idle(open: &mut BTreeMap<u64, Entry>) -> bool {
    let Some(id) = open.iter().find(|(_, e)| e.idle()).map(|(id, _)| *id) else {
        return false;
    };
    if let Some(e) = open.remove(&id) {
        tracing::debug!(id, "closing the oldest idle client connection to make room");
        e.evict.cancel();
    }
    true
}

impl Slot {
    /// Runs a connection's future until it ends or the connection is evicted.
    pub(crate) async fn run<F: Future<Output = ()>>(self, fut: F) {
        let evict = self.0.evict.clone();
        CURRENT
            .scope(self, async move {
                tokio::select! {
                    _ = fut => {}
                    _ = evict.cancelled() => {}
                }
            })
            .await
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.0.slots.lock().1.get_mut(&self.0.id) {
            f(e);
        }
    }
}

/// Tells the current connection's slot (if any) which in-flight counter says it is busy.
pub(crate) fn attach(activity: &Arc<Activity>) {
    let _ = CURRENT.try_with(|s| s.update(|e| e.activity = Some(activity.clone())));
}

/// Wraps a future spawned from a connection (a CONNECT tunnel, an upgrade pipe) so it keeps
/// the connection's slot; `busy` marks a pipe that must never count as idle.
pub(crate) fn carry<F: Future<Output = ()>>(fut: F, busy: bool) -> impl Future<Output = ()> {
    let slot = CURRENT.try_with(|s| s.clone()).ok();
    async move {
        match slot {
            Some(slot) => {
                if busy {
                    slot.update(|e| e.busy = true);
                }
                slot.run(fut).await
            }
            None => fut.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use crate::io::Activity;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let slots = Slots::new(2);
        let a = slots.admit();
        let b = slots.admit();
        let busy = Activity::new();
        let _req = busy.begin();
        b.update(|e| e.activity = Some(busy.clone()));
        let _c = slots.admit();
        assert!(a.0.evict.is_cancelled(), "the idle one is closed");
        assert!(!b.0.evict.is_cancelled(), "the busy one is kept");
        // Nobody idle left but c (not yet at HTTP, so idle): it goes next.
        let _d = slots.admit();
        assert!(!b.0.evict.is_cancelled());
    }
}
