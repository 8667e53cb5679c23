//! Reaching into the thread that made a supervised call: a pidfd for it and copies of its
//! memory. What is read here is trusted only after `SECCOMP_IOCTL_NOTIF_ID_VALID` confirms the
//! thread is still in that call (see the parent module).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use tracing::debug;

/// A pidfd for the calling thread. Before Linux 6.9 (no `PIDFD_THREAD`) only thread-group
/// leaders have pidfds, so the thread's process is used; its descriptor table is the thread's
/// unless the thread was made without `CLONE_FILES`, which threading libraries never do.
pub(super) fn thread_pidfd(tid: u32) -> io::Result<OwnedFd> {
    match crate::sys::pidfd_open_thread(tid) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
                .map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
            crate::sys::pidfd_open(tgid)
        }
        other => other,
    }
}

/// Copies `len` bytes at `addr` out of thread `tid`'s memory. `EACCES` when the thread cannot
/// be inspected (non-dumpable: refuse, do not guess), `EFAULT` for a short or bad read.
pub(super) fn read_mem(tid: u32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let mut local = [io::IoSliceMut::new(&mut buf)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let who = nix::unistd::Pid::from_raw(tid as i32);
    match nix::sys::uio::process_vm_readv(who, &mut local, &remote) {
        Ok(n) if n == len => Ok(buf),
        Ok(_) => Err(libc::EFAULT),
        Err(e) => {
            debug!(error = %e, tid, "jail supervisor: cannot read the caller's memory");
            Err(match e {
                nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => libc::EACCES,
                _ => libc::EFAULT,
            })
        }
    }
}
/// Writes `bytes` at `addr` in thread `tid`'s memory (results a call returns through memory,
/// such as `sendmmsg`'s `msg_len`). Call it while the thread is still in the call.
pub(super) fn write_mem(tid: u32, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    let local = [io::IoSlice::new(bytes)];
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: bytes.len(),
    }];
    let who = nix::unistd::Pid::from_raw(tid as i32);
    match nix::sys::uio::process_vm_writev(who, &local, &remote) {
        Ok(n) if n == bytes.len() => Ok(()),
        _ => Err(libc::EFAULT),
    }
}

/// Copies the NUL-terminated string at `addr` (at most `max` bytes before the NUL) out of
/// thread `tid`'s memory, a page at a time so a string near the end of a mapping is read.
/// `EFAULT` for a bad address, `ENAMETOOLONG` when no NUL comes within `max` bytes.
pub(super) fn read_cstr(tid: u32, addr: u64, max: usize) -> Result<Vec<u8>, i32> {
    const PAGE: u64 = 4096;
    if addr == 0 {
        return Err(libc::EFAULT);
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() <= max {
        let chunk = (PAGE - at % PAGE) as usize;
        let bytes = read_mem(tid, at, chunk)?;
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..end]);
            return if out.len() > max {
                Err(libc::ENAMETOOLONG)
            } else {
                Ok(out)
            };
        }
        out.extend_from_slice(&bytes);
        at += chunk as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Opens `path` with `O_PATH` (and `extra` flags, such as `O_NOFOLLOW`) as thread `tid` would
/// resolve it: from its root for an absolute path (absolute symbolic links stay inside that
/// root), from `dir` (a copy of the caller's directory descriptor) or else its working
/// directory otherwise. Magic links (`/proc/<pid>/fd/<n>`) are refused with `ELOOP`: here
/// they would name the supervisor's own files.
pub(super) fn open_in_target_at(
    tid: u32,
    dir: Option<&OwnedFd>,
    path: &[u8],
    extra: OFlags,
) -> io::Result<OwnedFd> {
    let absolute = path.first() == Some(&b'/');
    let opened;
    let base = match (absolute, dir) {
        (false, Some(d)) => d.as_fd(),
        _ => {
            let proc = if absolute { "root" } else { "cwd" };
            opened = std::fs::File::open(format!("/proc/{tid}/{proc}"))?;
            opened.as_fd()
        }
    };
    let rel = if absolute { &path[1..] } else { path };
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    let resolve = if absolute {
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
    } else {
        ResolveFlags::NO_MAGICLINKS
    };
    openat2(
        base,
        OsStr::from_bytes(rel),
        OFlags::PATH | OFlags::CLOEXEC | extra,
        Mode::empty(),
        resolve,
    )
    .map_err(io::Error::from)
}
