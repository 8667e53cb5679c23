//! The policy a running proxy decides with, replaceable while it runs (live reload).
//!
//! A reload builds a whole new [`Policy`] and swaps it in with one atomic pointer store; the
//! proxy takes one [`PolicySnapshot`] per request and decides everything about that request
//! with it (the verdict, the 403 page's suggestions, the audit record), so no request is ever
//! decided half under the old rules and half under the new. Each snapshot carries its
//! generation, 1 for the policy the run started with and one more for every reload, which
//! every audit record names.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Policy;

/// One generation of the policy: the rules, and which load of them this is.
#[derive(Debug)]
pub struct PolicySnapshot {
    /// 1 at start, one more per successful reload.
    pub generation: u64,
    pub policy: Arc<Policy>,
}

/// The current policy of a run; readers never wait for a reload and see either the old or the
/// new generation, whole.
#[derive(Debug)]
pub struct LivePolicy {
    current: ArcSwap<PolicySnapshot>,
}

impl LivePolicy {
    /// The policy a run starts with: generation 1.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            current: ArcSwap::from_pointee(PolicySnapshot {
                generation: 1,
                policy,
            }),
        }
    }

    /// The current generation, to decide one request with from start to end.
    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Makes `policy` the current one and returns its generation. Concurrent replacements each
    /// get their own number (the swap retries on a race).
    pub fn replace(&self, policy: Arc<Policy>) -> u64 {
        let previous = self.current.rcu(|cur| {
            Arc::new(PolicySnapshot {
                generation: cur.generation + 1,
                policy: policy.clone(),
            })
        });
        previous.generation + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_count_from_one_and_each_snapshot_keeps_its_rules() {
        let live = LivePolicy::new(Arc::new(Policy::parse(&["domain=a.test"]).unwrap()));
        let first = live.snapshot();
        assert_eq!(first.generation, 1);
        assert_eq!(
            live.replace(Arc::new(Policy::parse(&["domain=b.test"]).unwrap())),
            2
        );
        // A request that took generation 1 keeps deciding with it after the swap.
        assert!(first.policy.decide("GET", "a.test", "/").allowed);
        let second = live.snapshot();
        assert_eq!(second.generation, 2);
        assert!(second.policy.decide("GET", "b.test", "/").allowed);
        assert!(!second.policy.decide("GET", "a.test", "/").allowed);
    }

    #[test]
    fn concurrent_replacements_get_distinct_generations() {
        let live = Arc::new(LivePolicy::new(Arc::new(Policy::from_rules(Vec::new()))));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let live = live.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .map(|_| live.replace(Arc::new(Policy::from_rules(Vec::new()))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (2..=401).collect::<Vec<u64>>());
        assert_eq!(live.snapshot().generation, 401);
    }
}
