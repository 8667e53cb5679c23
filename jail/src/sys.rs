//! The jails' system-call layer: safe wrappers around the raw calls that have none in `nix`,
//! `rustix` or `caps`. Every `unsafe` block of the crate's syscall plumbing belongs here, each
//! with its `SAFETY` note, so the rest of the crate calls functions with ordinary types.
//!
//! Functions marked async-signal-safe allocate nothing and take no locks: they may run between
//! `fork` and `exec` in a multi-threaded parent.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::seccomp::Program;

/// Installs `prog` as a seccomp filter on the calling thread (and, with `TSYNC` not used, on
/// it alone: call it before starting threads, or before `exec`). With `listener`, the filter
/// gets a user-notification listener, returned for the caller to hand over (and close). Needs `no_new_privs` (or `CAP_SYS_ADMIN`). Async-signal-safe.
///
/// Where the kernel knows it (Linux 5.19), the listener waits killably: once the supervisor has
/// received a notification only a fatal signal interrupts the caller, so a Go program's
/// preemption signals do not abort connects half done.
pub(crate) fn seccomp_install(prog: &Program, listener: bool) -> io::Result<Option<OwnedFd>> {
    let fprog = prog.fprog();
    let attempts: &[libc::c_ulong] = if listener {
        &[
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        ]
    } else {
        &[0]
    };
    for &flags in attempts {
        // SAFETY: seccomp(SET_MODE_FILTER) reads the sock_fprog, whose program (borrowed from
        // `prog`) outlives the call; it returns a new fd with a listener, 0 without.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r >= 0 {
            // SAFETY: with a listener, r is a new descriptor nothing else owns.
            return Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(r as RawFd) }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    Err(io::Error::last_os_error())
}
