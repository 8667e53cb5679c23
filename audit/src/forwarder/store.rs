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
    /// The spool, and batches it could not take (its disk full: a jail can fill the disk the
    /// spool shares with its writable `$HOME`), kept in memory for a connected agent instead
    /// of dropped.
    Disk(Spool, Overflow),
}

/// Most bytes of batches kept in memory while the spool cannot take them (about 500 full
/// frames, tens of thousands of ordinary records).
const OVERFLOW_BYTES: usize = 16 << 20;

/// Batches the spool refused, in order, for the agent; newer batches join them (not the
/// spool) until they are all confirmed, so the agent reads records in sequence order.
#[derive(Default)]
pub(crate) struct Overflow {
    unsent: VecDeque<Batch>,
    inflight: VecDeque<Batch>,
    bytes: usize,
}

impl Overflow {
    fn is_empty(&self) -> bool {
        self.unsent.is_empty() && self.inflight.is_empty()
    }

    fn take(&mut self, mut b: Batch, why: String) -> Result<(), (Batch, String)> {
        if self.bytes + b.req.len() > OVERFLOW_BYTES {
            return Err((
                b,
                format!("{why}; and {OVERFLOW_BYTES} bytes already wait in memory"),
            ));
        }
        if self.is_empty() {
            tracing::error!(
                error = %why,
                "cannot spool audit records; keeping them in memory for the Coder agent (lost \
                 if boundary exits before the agent takes them)"
            );
        }
        b.dequeued = true;
        self.bytes += b.req.len();
        self.unsent.push_back(b);
        Ok(())
    }

    fn records(q: &VecDeque<Batch>) -> usize {
        q.iter().map(|b| b.records).sum()
    }
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
                    Store::Disk(s, Overflow::default())
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
            Store::Disk(s, o) => {
                stats.queued.fetch_sub(b.records, Ordering::SeqCst);
                let records = b.records as u64;
                if !o.is_empty() {
                    return o.take(b, "earlier records already wait in memory".into());
                }
                match s.push(b) {
                    Ok(()) => {
                        stats.spooled.fetch_add(records, Ordering::SeqCst);
                        Ok(())
                    }
                    Err((b, why)) => o.take(b, why),
                }
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
            Store::Disk(s, o) => s.next_unsent().or_else(|| {
                let b = o.unsent.pop_front()?;
                o.inflight.push_back(b.clone());
                Some(b)
            }),
        }
    }

    pub fn has_unsent(&self) -> bool {
        match self {
            Store::Memory { unsent, .. } => !unsent.is_empty(),
            Store::Disk(s, o) => s.has_unsent() || !o.unsent.is_empty(),
        }
    }

    pub fn inflight_records(&self) -> usize {
        match self {
            Store::Memory { inflight, .. } => inflight.iter().map(|b| b.records).sum(),
            Store::Disk(s, o) => s.inflight_records() + Overflow::records(&o.inflight),
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
            // Overflow batches are sent after the spool's: the last in flight is one of them.
            Store::Disk(s, o) if !o.inflight.is_empty() => {
                s.ack_inflight(false);
                let last = if keep_last {
                    o.inflight.pop_back()
                } else {
                    None
                };
                for b in o.inflight.drain(..) {
                    o.bytes -= b.req.len();
                }
                last.map_or(0, |b| {
                    let n = b.records;
                    o.unsent.push_front(b);
                    n
                })
            }
            Store::Disk(s, _) => s.ack_inflight(keep_last),
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
            Store::Disk(s, o) => {
                s.rewind();
                while let Some(b) = o.inflight.pop_back() {
                    o.unsent.push_front(b);
                }
            }
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
            Store::Disk(s, o) => {
                s.undelivered_records()
                    + (Overflow::records(&o.unsent) + Overflow::records(&o.inflight)) as u64
            }
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, Store::Disk(..))
    }

    /// At shutdown: batches waiting in memory go to the spool if it takes them now (the next
    /// run delivers them), and the spool is flushed to the disk. Returns what stays in memory
    /// (lost at exit).
    pub fn sync(&mut self) -> Vec<Batch> {
        let mut lost = Vec::new();
        if let Store::Disk(s, o) = self {
            let waiting: Vec<Batch> = o.inflight.drain(..).chain(o.unsent.drain(..)).collect();
            o.bytes = 0;
            for b in waiting {
                if !lost.is_empty() {
                    lost.push(b);
                } else if let Err((b, _)) = s.push(b) {
                    lost.push(b);
                }
            }
            s.sync_if_due(true);
        }
        lost
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

    /// The spool cannot take a batch (its bound here; a full disk the same way): the batch
    /// and those after it wait in memory and reach the agent in order, none is dropped; once
    /// they are confirmed the spool takes new batches again.
    #[test]
    fn batches_the_spool_refuses_wait_in_memory_in_order() {
        let root = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: root.path().to_path_buf(),
            max_bytes: 30,
        };
        let run = RunContext::new("test", crate::Identity::default());
        let stats = ForwarderStats::default();
        stats.queued.store(1000, Ordering::SeqCst);
        let mut s = Store::open(Some(cfg), &run);
        assert!(s.is_disk());
        // The first fits the 30-byte spool (20-byte header + 1), the rest do not.
        for i in 0..5 {
            s.push(batch(i * 10, 10), &stats)
                .expect("kept, not dropped");
        }
        let mut seen = Vec::new();
        while let Some(b) = s.next_unsent(&stats) {
            seen.push(b.first_seq);
        }
        assert_eq!(seen, [0, 10, 20, 30, 40]);
        assert_eq!(s.inflight_records(), 50);
        // A frame cut short: the last batch goes again, then everything is confirmed.
        assert_eq!(s.ack(true), 10);
        assert_eq!(s.next_unsent(&stats).map(|b| b.first_seq), Some(40));
        assert_eq!(s.ack(false), 0);
        assert_eq!(s.undelivered(), 0);
        // The spool takes batches again.
        s.push(batch(50, 10), &stats).unwrap();
        assert_eq!(stats.spooled.load(Ordering::SeqCst), 20);
        assert_eq!(s.next_unsent(&stats).map(|b| b.first_seq), Some(50));
    }
}
