//! What the forked child does between `fork` and `exec`.
//!
//! This runs after `fork` in a possibly multi-threaded parent, so it only makes raw syscalls on
//! data prepared before the fork: no allocation, no locks, no logging. Order:
//! 0. join a new, empty session keyring (the caller's keys stay outside);
//! 1. lock the root special cases and drop every capability (bounding, ambient, effective,
//!    permitted, inheritable), and fail if root would regain any on `exec`;
//! 2. `no_new_privs`;
//! 3. enter the Landlock domain prepared by the parent;
//! 4. install the seccomp filter with a user-notification listener;
//! 5. send the listener to the supervisor over a Unix socketpair (`SCM_RIGHTS`), close our copy
//!    (a target holding it could answer its own notifications), and wait for the supervisor's
//!    one-byte "ready" before returning, so the target never runs unsupervised;
//! 6. mark every inherited descriptor above stderr close-on-exec.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use libc::{c_int, c_ulong};

use crate::seccomp::Program;
use crate::sys;

/// Everything the child needs, prepared by the parent before the fork.
pub(crate) struct ChildSetup {
    pub(crate) ruleset_fd: RawFd,
    pub(crate) sock_fd: RawFd,
    pub(crate) program: Program,
    pub(crate) last_cap: c_int,
    /// Our controlling terminal while we are its foreground group: the target takes it over.
    pub(crate) tty: Option<RawFd>,
    /// Boundary's pid: if it is gone before `PR_SET_PDEATHSIG` took effect, give up.
    pub(crate) parent_pid: libc::pid_t,
    /// Test builds only (`insecure-test-hooks`): skip seccomp, leaving Landlock alone, to show
    /// what the supervisor closes. Always false otherwise.
    pub(crate) insecure_no_seccomp: bool,
}

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl ChildSetup {
    /// Runs the steps listed in the module documentation; an error aborts the spawn.
    pub(crate) fn run(&self) -> io::Result<()> {
        // If boundary dies (even by SIGKILL) the target dies too, instead of living on
        // unsupervised. The death signal follows the thread that forked us.
        // SAFETY: prctl and getppid with integer arguments.
        unsafe {
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as c_ulong,
                0,
                0,
                0,
            ))?;
            if libc::getppid() != self.parent_pid {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        // Own process group, in the terminal's foreground: Ctrl-C reaches the target once (not
        // also through boundary's forwarding), and job control works in interactive shells.
        // SAFETY: setpgid on ourselves.
        check(unsafe { libc::setpgid(0, 0) })?;
        if let Some(fd) = self.tty {
            crate::process::take_foreground(fd)?;
        }
        crate::sys::join_new_session_keyring()?;
        sys::drop_all_capabilities(self.last_cap)?;
        sys::set_no_new_privs()?;
        // SAFETY: landlock_restrict_self takes a ruleset fd and flags; the fd was created by
        // the parent and stays open across fork.
        check(unsafe {
            libc::syscall(libc::SYS_landlock_restrict_self, self.ruleset_fd, 0u32) as c_int
        })?;
        // SAFETY: closing our copy of the ruleset fd, which nothing else in the child uses.
        unsafe { libc::close(self.ruleset_fd) };
        if self.insecure_no_seccomp {
            // SAFETY: the supervisor sees EOF and stops; nothing else uses this fd.
            unsafe { libc::close(self.sock_fd) };
            close_inherited_descriptors();
            return Ok(());
        }
        let notify = self.install_filter()?;
        let sent = self.send_fd(notify.as_raw_fd());
        // The listener must not survive into the target (it could answer its own notifications).
        drop(notify);
        sent?;
        let mut ack = [0u8; 1];
        // SAFETY: reads one byte into a local buffer.
        let n = unsafe { libc::read(self.sock_fd, ack.as_mut_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::other(
                "landjail supervisor went away before the target started",
            ));
        }
        // SAFETY: the socketpair end is not needed by the target.
        unsafe { libc::close(self.sock_fd) };
        close_inherited_descriptors();
        Ok(())
    }

    fn install_filter(&self) -> io::Result<OwnedFd> {
        crate::sys::seccomp_install(&self.program, true)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn send_fd(&self, fd: c_int) -> io::Result<()> {
        // SAFETY: the socketpair end stays open for the duration of the call.
        let sock = unsafe { BorrowedFd::borrow_raw(self.sock_fd) };
        if sys::send_with_fds(sock, &[1], &[fd])? != 1 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        Ok(())
    }
}

/// Marks every descriptor above stderr close-on-exec: whatever boundary's own parent leaked
/// into it (a connected socket, for one) must not reach the target. Close-on-exec rather than
/// close, so std's exec-error pipe still works.
fn close_inherited_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with a flag only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // Before Linux 5.11: one by one up to the descriptor limit.
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 20) as c_int;
    for fd in 3..max {
        // SAFETY: fcntl on a possibly closed fd fails with EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}
