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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::batch::Batch;

const HEADER: usize = 20;
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
    dir: PathBuf,
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

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = (c >> 1) ^ (0xEDB8_8320 & (!(c & 1)).wrapping_add(1));
            }
        }
    }
    !c
}

fn read_ack(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("ack"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_ack(dir: &Path, offset: u64) -> io::Result<()> {
    let tmp = dir.join("ack.tmp");
    std::fs::write(&tmp, offset.to_string())?;
    std::fs::rename(tmp, dir.join("ack"))
}

/// Reads the entry header at `at`: (payload length, records, first seq, last seq), or `None`
/// when the bytes there are not a whole, intact entry.
fn entry_at(f: &File, at: u64, len: u64) -> Option<(Bytes, usize, i32, i32, u64)> {
    if at + HEADER as u64 > len {
        return None;
    }
    let mut h = [0u8; HEADER];
    f.read_exact_at(&mut h, at).ok()?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let n = u64::from(word(0));
    if at + HEADER as u64 + n > len {
        return None;
    }
    let mut payload = vec![0u8; n as usize];
    f.read_exact_at(&mut payload, at + HEADER as u64).ok()?;
    if crc32(&[&h[8..], &payload]) != word(4) {
        return None;
    }
    let end = at + HEADER as u64 + n;
    Some((
        Bytes::from(payload),
        word(8) as usize,
        word(12) as i32,
        word(16) as i32,
        end,
    ))
}

fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
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
                p.is_dir()
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
        let lock = lock_file(&setup)?.ok_or_else(|| io::Error::other("spool directory in use"))?;
        // Locked before it is visible under its real name: no other run can adopt it.
        let dir = cfg.dir.join(name);
        std::fs::rename(&setup, &dir)?;
        let data = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("data"))?;
        write_ack(&dir, 0)?;
        sources.push(Source {
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
        let mut meta = [0u8; 12];
        meta[0..4].copy_from_slice(&(b.records as u32).to_le_bytes());
        meta[4..8].copy_from_slice(&b.first_seq.to_le_bytes());
        meta[8..12].copy_from_slice(&b.last_seq.to_le_bytes());
        let mut entry = Vec::with_capacity(need as usize);
        entry.extend_from_slice(&(b.req.len() as u32).to_le_bytes());
        entry.extend_from_slice(&crc32(&[&meta, &b.req]).to_le_bytes());
        entry.extend_from_slice(&meta);
        entry.extend_from_slice(&b.req);
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
                    dir = %s.dir.display(),
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

    /// The agent read everything in flight: commit, and drop what is fully delivered.
    pub fn ack_inflight(&mut self) {
        for (i, end, _) in self.inflight.drain(..) {
            let s = &mut self.sources[i];
            s.acked = s.acked.max(end);
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
                tracing::error!(dir = %s.dir.display(), error = %e,
                    "cannot record audit delivery progress; records may be sent again by a later run");
            }
        }
        self.sources.retain(|s| {
            if s.own || s.acked < s.len {
                return true;
            }
            let _ = std::fs::remove_dir_all(&s.dir);
            false
        });
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
                let _ = std::fs::remove_dir_all(&s.dir);
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

fn lock_file(dir: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("lock"))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Takes over a dead run's directory: `None` when its run is alive (locked) or nothing is left.
fn adopt(dir: &Path) -> io::Result<Option<(Source, u64)>> {
    let Some(lock) = lock_file(dir)? else {
        return Ok(None);
    };
    let data = match OpenOptions::new()
        .read(true)
        .append(true)
        .open(dir.join("data"))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_dir_all(dir);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let len = data.metadata()?.len();
    let acked = read_ack(dir).min(len);
    // Walk the entries; cut a torn or corrupt tail.
    let mut at = acked;
    let mut torn = 0;
    while at < len {
        match entry_at(&data, at, len) {
            Some((.., end)) => at = end,
            None => {
                torn = 1;
                data.set_len(at)?;
                break;
            }
        }
    }
    if torn > 0 {
        tracing::error!(
            dir = %dir.display(),
            offset = at,
            cut_bytes = len - at,
            "an earlier run's audit spool ended in a torn entry (boundary was killed while \
             writing it); the incomplete entry was cut off and is lost"
        );
    }
    let len = at;
    if acked >= len {
        std::fs::remove_dir_all(dir)?;
        return Ok(None);
    }
    Ok(Some((
        Source {
            dir: dir.to_path_buf(),
            _lock: lock,
            data,
            len,
            read: acked,
            acked,
            own: false,
        },
        torn,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, n: usize) -> Batch {
        Batch {
            req: Bytes::from(vec![first as u8; 100 + n]),
            records: n,
            first_seq: first,
            last_seq: first + n as i32 - 1,
            dequeued: false,
        }
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    }

    #[test]
    fn a_dead_runs_records_are_adopted_in_order_and_a_torn_tail_is_cut() {
        let root = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: root.path().to_path_buf(),
            max_bytes: 1 << 20,
        };
        let (mut first, _) = Spool::open(&cfg, "a").unwrap();
        for i in 0..3 {
            first.push(batch(i * 10, 10)).unwrap();
        }
        // The agent read the first batch only.
        assert_eq!(first.next_unsent().unwrap().first_seq, 0);
        first.ack_inflight();
        let dir = first.sources.last().unwrap().dir.clone();
        drop(first);
        // A crash in the middle of a fourth append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("data"))
            .unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

        let (mut second, opened) = Spool::open(&cfg, "b").unwrap();
        assert_eq!((opened.adopted_runs, opened.torn), (1, 1));
        second.push(batch(100, 5)).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = second.next_unsent() {
            seen.push(b.first_seq);
        }
        assert_eq!(seen, [10, 20, 100]);
        assert_eq!(second.inflight_records(), 25);
        second.rewind();
        assert_eq!(second.next_unsent().unwrap().first_seq, 10);
        while second.next_unsent().is_some() {}
        second.ack_inflight();
        assert!(!dir.exists(), "a delivered run's directory is removed");
        assert_eq!(second.used(), 0);
    }

    #[test]
    fn a_live_runs_spool_is_not_adopted_and_the_bound_holds() {
        let root = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: root.path().to_path_buf(),
            max_bytes: 400,
        };
        let (mut live, _) = Spool::open(&cfg, "a").unwrap();
        live.push(batch(0, 1)).unwrap();
        let (_other, opened) = Spool::open(&cfg, "b").unwrap();
        assert_eq!(opened.adopted_runs, 0);
        live.push(batch(1, 1)).unwrap();
        assert!(live.push(batch(2, 200)).is_err(), "past the bound");
    }
}
