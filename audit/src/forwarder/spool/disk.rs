//! The spool's files: the entry format (length, CRC-32, counts, sequence numbers, payload),
//! the `ack` offset, the run's `lock`, and taking over the directory of a run that is gone.
//!
//! The spool root may lie where a jailed program of the same user writes (landjail, or a
//! spool under the jail's writable paths), so a run directory found there is untrusted: every
//! file in it is opened relative to the directory's descriptor without following symbolic
//! links, an adopted `data` must be a regular file of ours with one link, and nothing found
//! there is ever truncated or written in place (a planted `data -> ~/.bash_history` or
//! `ack.tmp -> /etc/shadow` must not make boundary cut or overwrite that file).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::Path;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, CWD};

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

/// Opens a run directory (or the root) without following a symbolic link at its last step.
pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `name` in `dir`, never through a symbolic link, and without waiting (a FIFO planted
/// as `lock` or `data` must not hang boundary's start; regular files ignore the flag).
fn open_in(dir: &OwnedFd, name: &str, flags: OFlags) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

pub(super) fn read_ack(dir: &OwnedFd) -> u64 {
    let mut text = String::new();
    open_in(dir, "ack", OFlags::RDONLY)
        .and_then(|f| f.take(32).read_to_string(&mut text))
        .ok()
        .and_then(|_| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Replaces `ack` with a new file (never written in place: whatever `ack.tmp` was, it is
/// unlinked and created afresh, then renamed over `ack`).
pub(super) fn write_ack(dir: &OwnedFd, offset: u64) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, "ack.tmp", rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let mut f = open_in(
        dir,
        "ack.tmp",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
    )?;
    f.write_all(offset.to_string().as_bytes())?;
    Ok(rustix::fs::renameat(dir, "ack.tmp", dir, "ack")?)
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
    // A batch is one frame to the agent, so no entry we wrote is longer than a frame's
    // payload; a longer one (planted: a 4 GiB length over a sparse file) is not read.
    if n > boundary_proto::frame::MAX_PAYLOAD as u64 || at + HEADER as u64 + n > len {
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

/// This run's `data`, created in its fresh directory.
pub(super) fn own_data(dir: &OwnedFd) -> io::Result<File> {
    open_in(
        dir,
        "data",
        OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL,
    )
}

pub(super) fn lock_file(dir: &OwnedFd) -> io::Result<Option<File>> {
    let f = open_in(dir, "lock", OFlags::WRONLY | OFlags::CREATE)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("its lock is not a regular file"));
    }
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Why an adopted `data` is not boundary's own spool file, if it is not.
fn foreign(f: &File) -> io::Result<Option<&'static str>> {
    let m = f.metadata()?;
    Ok(if !m.is_file() {
        Some("not a regular file")
    } else if m.uid() != rustix::process::geteuid().as_raw() {
        Some("owned by another user")
    } else if m.nlink() != 1 {
        Some("a hard link to another file")
    } else {
        None
    })
}

/// Takes over a dead run's directory: `None` when its run is alive (locked), nothing is left,
/// or what is there is not a spool boundary wrote (logged and left alone).
pub(super) fn adopt(path: &Path) -> io::Result<Option<(Source, u64)>> {
    let dir = open_dir(path)?;
    let Some(lock) = lock_file(&dir)? else {
        return Ok(None);
    };
    let data = match open_in(&dir, "data", OFlags::RDONLY) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_dir_all(path);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if let Some(why) = foreign(&data)? {
        tracing::error!(
            dir = %path.display(),
            why,
            "an audit spool directory holds a data file boundary did not write (planted by a \
             jailed program?); left alone, not delivered"
        );
        return Ok(None);
    }
    let len = data.metadata()?.len();
    let acked = read_ack(&dir).min(len);
    // Walk the entries; a torn or corrupt tail ends the file (it is not cut: the file is
    // only read, and removed with its directory once delivered).
    let mut at = acked;
    let mut torn = 0;
    while at < len {
        match entry_at(&data, at, len) {
            Some((.., end)) => at = end,
            None => {
                torn = 1;
                break;
            }
        }
    }
    if torn > 0 {
        tracing::error!(
            dir = %path.display(),
            offset = at,
            cut_bytes = len - at,
            "an earlier run's audit spool ended in a torn entry (boundary was killed while \
             writing it); the incomplete entry is skipped and lost"
        );
    }
    let len = at;
    if acked >= len {
        std::fs::remove_dir_all(path)?;
        return Ok(None);
    }
    Ok(Some((
        Source {
            path: path.to_path_buf(),
            dir,
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
