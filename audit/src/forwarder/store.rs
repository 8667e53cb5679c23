//! Batches waiting for the agent: in memory (bounded by the queue size) or in the durable
//! [`Spool`]. The task sees one queue: push, take the next unsent batch, confirm or rewind
//! what is in flight.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::batch::Batch;
use super::spool::{Spool, SpoolConfig};
use super::ForwarderStats;
use crate::RunContext;

/// Where batches wait.
pub(crate) enum Store {
    Memory {
        unsent: VecDeque<Batch>,
        inflight: VecDeque<Batch>,
    },
    Disk(Spool),
}

impl Store {
    /// The spool when configured and usable, else memory (said loudly).
    pub fn open(spool: Option<SpoolConfig>, run: &RunContext) -> Self {
        match spool {
            None => Store::memory(),
            Some(sc) => match Spool::open(&sc, &run.session_id.to_string()) {
                Ok((s, opened)) => {
                    if opened.adopted_runs > 0 {
                        tracing::warn!(
                            runs = opened.adopted_runs,
                            bytes = opened.adopted_bytes,
                            torn_entries = opened.torn,
                            dir = %sc.dir.display(),
                            "earlier boundary runs left audit records undelivered; sending them \
                             to the Coder agent first"
                        );
                    }
                    Store::Disk(s)
                }
                Err(e) => {
                    tracing::error!(
                        dir = %sc.dir.display(),
                        error = %e,
                        "cannot open the audit spool directory; records wait in memory only \
                         (bounded by --audit-queue-size) and are lost if boundary exits before \
                         the agent takes them; fix the directory's permissions"
                    );
                    Store::memory()
                }
            },
        }
    }

    pub fn memory() -> Self {
        Store::Memory {
            unsent: VecDeque::new(),
            inflight: VecDeque::new(),
        }
    }

    /// Takes a closed batch. On disk the in-memory queue count drops now; in memory it drops
    /// when the batch is first written. `Err` is a drop the caller reports.
    pub fn push(&mut self, b: Batch, stats: &ForwarderStats) -> Result<(), (Batch, String)> {
        match self {
            Store::Memory { unsent, .. } => {
                unsent.push_back(b);
                Ok(())
            }
            Store::Disk(s) => {
                stats.queued.fetch_sub(b.records, Ordering::SeqCst);
                let records = b.records as u64;
                let pushed = s.push(b);
                if pushed.is_ok() {
                    stats.spooled.fetch_add(records, Ordering::SeqCst);
                }
                pushed
            }
        }
    }

    /// The next batch to write; it is in flight until [`Store::ack`] or [`Store::rewind`].
    pub fn next_unsent(&mut self, stats: &ForwarderStats) -> Option<Batch> {
        match self {
            Store::Memory { unsent, inflight } => {
                let mut b = unsent.pop_front()?;
                if !b.dequeued {
                    b.dequeued = true;
                    stats.queued.fetch_sub(b.records, Ordering::SeqCst);
                }
                inflight.push_back(b.clone());
                Some(b)
            }
            Store::Disk(s) => s.next_unsent(),
        }
    }

    pub fn has_unsent(&self) -> bool {
        match self {
            Store::Memory { unsent, .. } => !unsent.is_empty(),
            Store::Disk(s) => s.has_unsent(),
        }
    }

    pub fn inflight_records(&self) -> usize {
        match self {
            Store::Memory { inflight, .. } => inflight.iter().map(|b| b.records).sum(),
            Store::Disk(s) => s.inflight_records(),
        }
    }

    /// The agent read everything in flight; with `keep_last`, all but the last batch, whose
    /// frame was only partly written: it is sent again. Returns the records sent again.
    pub fn ack(&mut self, keep_last: bool) -> usize {
        match self {
            Store::Memory { unsent, inflight } => {
                let last = if keep_last { inflight.pop_back() } else { None };
                inflight.clear();
                last.map_or(0, |b| {
                    let n = b.records;
                    unsent.push_front(b);
                    n
                })
            }
            Store::Disk(s) => s.ack_inflight(keep_last),
        }
    }

    /// The agent left with frames unread: they are sent again, first.
    pub fn rewind(&mut self) {
        match self {
            Store::Memory { unsent, inflight } => {
                while let Some(b) = inflight.pop_back() {
                    unsent.push_front(b);
                }
            }
            Store::Disk(s) => s.rewind(),
        }
    }

    /// Records never confirmed: in memory they are lost at exit, on disk a later run sends them.
    pub fn undelivered(&self) -> u64 {
        match self {
            Store::Memory { unsent, inflight } => unsent
                .iter()
                .chain(inflight)
                .map(|b| b.records as u64)
                .sum(),
            Store::Disk(s) => s.undelivered_records(),
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, Store::Disk(_))
    }

    /// Flushes the spool to the disk (shutdown).
    pub fn sync(&mut self) {
        if let Store::Disk(s) = self {
            s.sync_if_due(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(first: i32, n: usize) -> Batch {
        Batch {
            req: Bytes::from_static(b"x"),
            records: n,
            first_seq: first,
            last_seq: first + n as i32 - 1,
            dequeued: false,
        }
    }

    #[test]
    fn memory_keeps_a_partly_written_last_batch_first_in_line() {
        let stats = ForwarderStats::default();
        stats.queued.store(30, Ordering::SeqCst);
        let mut s = Store::memory();
        for i in 0..3 {
            s.push(batch(i * 10, 10), &stats).unwrap();
        }
        while s.next_unsent(&stats).is_some() {}
        assert_eq!(s.ack(true), 10);
        assert_eq!(s.inflight_records(), 0);
        assert_eq!(s.next_unsent(&stats).map(|b| b.first_seq), Some(20));
        assert!(s.next_unsent(&stats).is_none());
        assert_eq!(stats.queued.load(Ordering::SeqCst), 0, "counted off once");
    }
}
