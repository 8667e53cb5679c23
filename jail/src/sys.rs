//! The jails' system-call layer: safe wrappers around the raw calls that have none in `nix`,
//! `rustix` or `caps`. Every `unsafe` block of the crate's syscall plumbing belongs here, each
//! with its `SAFETY` note, so the rest of the crate calls functions with ordinary types.
//!
//! Functions marked async-signal-safe allocate nothing and take no locks: they may run between
//! `fork` and `exec` in a multi-threaded parent.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

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

/// `ioctl(fd, TIOCSTI, &byte)`: pushes one byte into the input queue of terminal `fd` (which
/// must be the caller's controlling terminal). The selftest's probe uses it on a pty of its own.
pub(crate) fn tiocsti(fd: BorrowedFd<'_>, byte: u8) -> io::Result<()> {
    // SAFETY: TIOCSTI reads one byte from the pointer, which points at a local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI, &byte as *const u8) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` as the leader of a new session, without a controlling terminal (it may then
/// take one of its own).
pub(crate) fn spawn_in_new_session(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs between fork and exec and only calls setsid, which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// The id of the caller's user keyring (`keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING)`,
/// without creating it): whether the keyrings are reachable at all.
pub(crate) fn user_keyring_id() -> io::Result<i64> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    // SAFETY: integer arguments only; the kernel reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_USER_KEYRING,
            0 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A `userfaultfd` for user-space faults only (which unprivileged users may create).
pub(crate) fn userfaultfd() -> io::Result<OwnedFd> {
    const UFFD_USER_MODE_ONLY: libc::c_long = 1;
    // SAFETY: integer flags only; on success the kernel returns a new descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            UFFD_USER_MODE_ONLY | libc::O_CLOEXEC as libc::c_long,
        )
    };
    owned(r)
}

/// An io_uring instance with one entry (closed again by dropping it).
pub(crate) fn io_uring_setup() -> io::Result<OwnedFd> {
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u64; 15];
    // SAFETY: the kernel reads and writes the 120-byte params struct, a valid local.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    owned(r)
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}
