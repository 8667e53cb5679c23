//! The durable spool: batches the agent has not confirmed, on disk, so an absent agent or a
//! killed boundary loses nothing (issue 12 item 7; Vector's disk buffer and Fluent Bit's
//! filesystem storage are the models).
//!
//! Layout: `<root>/<start-nanos>-<session>/` per run, holding `lock` (an exclusive `flock`
//! while the run lives), `data` (entries appended in order) and `ack` (the byte offset up to
//! which the agent confirmed reading, replaced by rename). An entry is a 20-byte header
//! (payload length, CRC-32 of the rest, record count, first and last sequence number, all
//! little-endian) and the encoded `ReportBoundaryLogsRequest`. A run first adopts the
//! directories of runs that are gone (their lock is free) and delivers them before its own,
//! oldest first; a directory fully delivered is removed. A torn or corrupt tail (a crash in
//! the middle of an append) is detected by length and CRC, cut off and counted.
//!
//! Durability: every entry is written with one `write(2)` when its batch closes, so it
//! survives boundary being killed (the kernel holds it); `fdatasync` runs at most once a second
//! and at shutdown, so a power loss can lose the last second. Records still in memory (the
//! open batch, at most the flush interval) are lost if boundary is killed.

mod disk;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::batch::Batch;
use disk::{
    adopt, encode_entry, entry_at, lock_file, open_dir, own_data, private_dir, write_ack, HEADER,
};

const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Where and how much.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool root; each run gets a directory in it.
    pub dir: PathBuf,
    /// Bytes the spool may hold (all runs' undelivered entries in this process's view).
    pub max_bytes: u64,
}

/// One run's directory: adopted from a dead run, or this run's own.
struct Source {
    /// The directory's name, for messages and its removal.
    path: PathBuf,
    /// The directory itself: its files are opened and replaced through it, so a rename of
    /// the path cannot redirect them.
    dir: OwnedFd,
    _lock: File,
    data: File,
    len: u64,
    read: u64,
    acked: u64,
    own: bool,
}

/// What opening found, for the start-up log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Opened {
    /// Runs whose undelivered records this run will deliver.
    pub adopted_runs: usize,
    /// Bytes of undelivered entries adopted.
    pub adopted_bytes: u64,
    /// Torn or corrupt entries cut off the end of adopted files.
    pub torn: u64,
}

/// The spool of this run.
pub(crate) struct Spool {
    sources: Vec<Source>,
    max_bytes: u64,
    /// (source index at send time is unstable; the dir is not) dir, end offset, records.
    inflight: Vec<(usize, u64, usize)>,
    last_sync: Instant,
    dirty: bool,
}

impl Spool {
    /// Creates this run's directory under `cfg.dir` and adopts the ones of runs that are gone.
    pub fn open(cfg: &SpoolConfig, session: &str) -> io::Result<(Self, Opened)> {
        private_dir(&cfg.dir)?;
        let mut opened = Opened::default();
        let mut others: Vec<PathBuf> = std::fs::read_dir(&cfg.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // A run still setting up its directory uses a dot name until it holds the lock.
            .filter(|p| {
                // Not `is_dir`: a symbolic link to a directory elsewhere is not a run.
                p.symlink_metadata().is_ok_and(|m| m.is_dir())
                    && !p
                        .file_name()
                        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
            .collect();
        others.sort();
        let mut sources = Vec::new();
        for dir in others {
            match adopt(&dir) {
                Ok(Some((src, torn))) => {
                    opened.adopted_runs += 1;
                    opened.adopted_bytes += src.len - src.acked;
                    opened.torn += torn;
                    sources.push(src);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot read an earlier run's audit spool; its records stay on disk"
                ),
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:024}-{session}");
        let setup = cfg.dir.join(format!(".{name}"));
        private_dir(&setup)?;
        let dir = open_dir(&setup)?;
        let lock = lock_file(&dir)?.ok_or_else(|| io::Error::other("spool directory in use"))?;
        // Locked before it is visible under its real name: no other run can adopt it.
        let path = cfg.dir.join(name);
        std::fs::rename(&setup, &path)?;
        let data = own_data(&dir)?;
        write_ack(&dir, 0)?;
        sources.push(Source {
            path,
            dir,
            _lock: lock,
            data,
            len: 0,
            read: 0,
            acked: 0,
            own: true,
        });
        let spool = Spool {
            sources,
            max_bytes: cfg.max_bytes,
            inflight: Vec::new(),
            last_sync: Instant::now(),
            dirty: false,
        };
        Ok((spool, opened))
    }

    /// Bytes held and not yet confirmed by the agent.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.sources.iter().map(|s| s.len - s.acked).sum()
    }

    /// Appends a batch; `Err(batch)` when it would pass the bound or the write failed (the
    /// caller counts and logs the drop).
    pub fn push(&mut self, b: Batch) -> Result<(), (Batch, String)> {
        let need = (HEADER + b.req.len()) as u64;
        // The file only shrinks when fully delivered, so its length is what it occupies.
        let occupied: u64 = self.sources.iter().map(|s| s.len).sum();
        if occupied + need > self.max_bytes {
            return Err((b, format!("the spool is full ({} bytes)", self.max_bytes)));
        }
        let entry = encode_entry(&b);
        let own = self.sources.last_mut().expect("own source is last");
        if let Err(e) = own.data.write_all(&entry) {
            // A short write leaves a torn tail: cut it so the next entry is readable.
            let _ = own.data.set_len(own.len);
            return Err((b, format!("cannot write the spool: {e}")));
        }
        own.len += need;
        self.dirty = true;
        self.sync_if_due(false);
        Ok(())
    }

    /// Flushes to the disk at most once a second (always with `now`).
    pub fn sync_if_due(&mut self, now: bool) {
        if self.dirty && (now || self.last_sync.elapsed() >= SYNC_EVERY) {
            let own = self.sources.last().expect("own source is last");
            let _ = own.data.sync_data();
            self.last_sync = Instant::now();
            self.dirty = false;
        }
    }

    /// The next batch not yet sent, now in flight.
    pub fn next_unsent(&mut self) -> Option<Batch> {
        for (i, s) in self.sources.iter_mut().enumerate() {
            if s.read >= s.len {
                continue;
            }
            let Some((req, records, first_seq, last_seq, end)) = entry_at(&s.data, s.read, s.len)
            else {
                // Cannot happen for entries checked at open or written by us; skip the rest
                // of this file rather than loop on it.
                tracing::error!(
                    dir = %s.path.display(),
                    offset = s.read,
                    "unreadable audit spool entry; skipping the rest of this file"
                );
                s.read = s.len;
                continue;
            };
            s.read = end;
            self.inflight.push((i, end, records));
            return Some(Batch {
                req,
                records,
                first_seq,
                last_seq,
                dequeued: true,
            });
        }
        None
    }

    /// Records sent and not confirmed.
    pub fn inflight_records(&self) -> usize {
        self.inflight.iter().map(|e| e.2).sum()
    }

    /// Records not yet sent.
    pub fn has_unsent(&self) -> bool {
        self.sources.iter().any(|s| s.read < s.len)
    }

    /// The agent read everything in flight (with `keep_last`, all but the last entry, which
    /// is sent again): commit, and drop what is fully delivered. Returns the records resent.
    pub fn ack_inflight(&mut self, keep_last: bool) -> usize {
        let kept = if keep_last { self.inflight.pop() } else { None };
        for (i, end, _) in self.inflight.drain(..) {
            let s = &mut self.sources[i];
            s.acked = s.acked.max(end);
        }
        let resent = kept.map_or(0, |k| k.2);
        if kept.is_some() {
            // Read again from the first entry not confirmed: the kept one.
            for s in &mut self.sources {
                s.read = s.acked;
            }
        }
        for s in &mut self.sources {
            if s.own && s.acked == s.len && s.len > 0 {
                // Empty again: start the file over so it does not grow for ever.
                if s.data.set_len(0).is_ok() {
                    s.len = 0;
                    s.read = 0;
                    s.acked = 0;
                }
            }
            if let Err(e) = write_ack(&s.dir, s.acked) {
                tracing::error!(dir = %s.path.display(), error = %e,
                    "cannot record audit delivery progress; records may be sent again by a later run");
            }
        }
        self.sources.retain(|s| {
            if s.own || s.acked < s.len {
                return true;
            }
            let _ = std::fs::remove_dir_all(&s.path);
            false
        });
        resent
    }

    /// The connection broke with frames unread: send them again.
    pub fn rewind(&mut self) {
        self.inflight.clear();
        for s in &mut self.sources {
            s.read = s.acked;
        }
    }

    /// At exit: this run's directory goes when nothing in it waits for the agent.
    pub fn close(self) {
        for s in &self.sources {
            if s.own && s.acked >= s.len {
                let _ = std::fs::remove_dir_all(&s.path);
            }
        }
    }

    /// Records on disk not confirmed by the agent (for the exit summary).
    pub fn undelivered_records(&self) -> u64 {
        let mut n = 0u64;
        for s in &self.sources {
            let mut at = s.acked;
            while let Some((_, records, _, _, end)) = entry_at(&s.data, at, s.len) {
                n += records as u64;
                at = end;
            }
        }
        n
    }
}
