//! Reaching into the thread that made a supervised call: a pidfd for it and copies of its
//! memory. What is read here is trusted only after `SECCOMP_IOCTL_NOTIF_ID_VALID` confirms the
//! thread is still in that call (see the parent module).

use std::io;
use std::os::fd::OwnedFd;

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
