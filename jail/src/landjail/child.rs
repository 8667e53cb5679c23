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

use libc::c_int;

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

impl ChildSetup {
    /// Runs the steps listed in the module documentation; an error aborts the spawn.
    pub(crate) fn run(&self) -> io::Result<()> {
        // If boundary dies (even by SIGKILL) the target dies too, instead of living on
        // unsupervised. The death signal follows the thread that forked us.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        if nix::unistd::getppid().as_raw() != self.parent_pid {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Own process group, in the terminal's foreground: Ctrl-C reaches the target once (not
        // also through boundary's forwarding), and job control works in interactive shells.
        nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
        if let Some(fd) = self.tty {
            sys::take_foreground(fd)?;
        }
        crate::sys::join_new_session_keyring()?;
        sys::drop_all_capabilities(self.last_cap)?;
        sys::set_no_new_privs()?;
        sys::landlock_restrict_self(self.ruleset_fd)?;
        // Our copy of the ruleset is not needed by the target.
        let _ = nix::unistd::close(self.ruleset_fd);
        if self.insecure_no_seccomp {
            // The supervisor sees EOF and stops.
            let _ = nix::unistd::close(self.sock_fd);
            sys::cloexec_from(3);
            return Ok(());
        }
        let notify = self.install_filter()?;
        let sent = self.send_fd(notify.as_raw_fd());
        // The listener must not survive into the target (it could answer its own notifications).
        drop(notify);
        sent?;
        let mut ack = [0u8; 1];
        if nix::unistd::read(self.sock_fd, &mut ack) != Ok(1) {
            return Err(io::Error::other(
                "landjail supervisor went away before the target started",
            ));
        }
        // The socketpair end is not needed by the target.
        let _ = nix::unistd::close(self.sock_fd);
        sys::cloexec_from(3);
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
