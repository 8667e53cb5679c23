//! The spool's files: the entry format (length, CRC-32, counts, sequence numbers, payload),
//! the `ack` offset, the run's `lock`, and taking over the directory of a run that is gone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;

use super::Source;
use crate::forwarder::batch::Batch;

/// Bytes before an entry's payload.
pub(super) const HEADER: usize = 20;

/// CRC-32 (IEEE, reflected) of the parts one after another: every batch is checksummed when
/// spooled and when read back, so a byte at a time through a table, not a bit at a time.
pub(super) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
        }
    }
    !c
}

/// The CRC of each byte value, built at compile time.
static CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The bytes of one entry for `b`.
pub(super) fn encode_entry(b: &Batch) -> Vec<u8> {
    let mut meta = [0u8; 12];
    meta[0..4].copy_from_slice(&(b.records as u32).to_le_bytes());
    meta[4..8].copy_from_slice(&b.first_seq.to_le_bytes());
    meta[8..12].copy_from_slice(&b.last_seq.to_le_bytes());
    let mut entry = Vec::with_capacity(HEADER + b.req.len());
    entry.extend_from_slice(&(b.req.len() as u32).to_le_bytes());
    entry.extend_from_slice(&crc32(&[&meta, &b.req]).to_le_bytes());
    entry.extend_from_slice(&meta);
    entry.extend_from_slice(&b.req);
    entry
}

pub(super) fn read_ack(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("ack"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn write_ack(dir: &Path, offset: u64) -> io::Result<()> {
    let tmp = dir.join("ack.tmp");
    std::fs::write(&tmp, offset.to_string())?;
    std::fs::rename(tmp, dir.join("ack"))
}

/// Reads the entry header at `at`: (payload length, records, first seq, last seq), or `None`
/// when the bytes there are not a whole, intact entry.
pub(super) fn entry_at(f: &File, at: u64, len: u64) -> Option<(Bytes, usize, i32, i32, u64)> {
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

pub(super) fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

pub(super) fn lock_file(dir: &Path) -> io::Result<Option<File>> {
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
pub(super) fn adopt(dir: &Path) -> io::Result<Option<(Source, u64)>> {
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
