//! What the forked child does between `fork` and `exec`, and the typed report it leaves when a
//! step fails.
//!
//! This runs after `fork` in a possibly multi-threaded parent, so it only makes raw syscalls on
//! data prepared before the fork: no allocation, no locks, no logging. Order:
//! 0. join a new, empty session keyring (the caller's keys stay outside);
//! 1. lock the root special cases and drop every capability (bounding, ambient, effective,
//!    permitted, inheritable), and fail if root would regain any on `exec`;
//! 2. `no_new_privs`, then become the OOM killer's first choice (`process::prefer_for_oom_kill`);
//! 3. enter the Landlock domain prepared by the parent;
//! 4. install the seccomp filter with a user-notification listener;
//! 5. offer the listener to the supervisor over a Unix socketpair (its number and our pid: the
//!    supervisor copies it with `pidfd_getfd`, since the filter already sends every `sendmsg`
//!    to the supervisor), wait for the supervisor's one-byte "taken" before returning, so the
//!    target never runs unsupervised, then close our copy (a target holding it could answer
//!    its own notifications);
//! 6. mark every inherited descriptor above stderr close-on-exec.
//!
//! std's spawn carries only an errno back from a failed pre-exec closure, so a failing step
//! first writes a [`ChildFailure`] (the step and its errno, five bytes) to a close-on-exec
//! pipe; the parent reads it when the spawn fails and turns it into a message naming the step
//! and its fix.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use libc::c_int;

use crate::seccomp::Program;
use crate::sys;

/// Everything the child needs, prepared by the parent before the fork. The parent's copies of
/// the descriptors close when the spawned `Command` (which holds this) is dropped.
pub(crate) struct ChildSetup {
    pub(crate) ruleset: OwnedFd,
    pub(crate) sock: UnixStream,
    /// Write end of the failure report pipe (close-on-exec, non-blocking).
    pub(crate) report: OwnedFd,
    pub(crate) program: Program,
    pub(crate) last_cap: c_int,
    /// Our controlling terminal while we are its foreground group: the target takes it over.
    pub(crate) tty: Option<c_int>,
    /// Boundary's pid: if it is gone before `PR_SET_PDEATHSIG` took effect, give up.
    pub(crate) parent_pid: libc::pid_t,
    /// Test builds only (`insecure-test-hooks`): skip seccomp, leaving Landlock alone, to show
    /// what the supervisor closes. Always false otherwise.
    pub(crate) insecure_no_seccomp: bool,
}

/// One confinement step of the child, as named in its failure report (see [`Step::what`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// `PR_SET_PDEATHSIG`.
    DeathSignal = 1,
    /// Boundary exited before the death signal was set.
    ParentGone = 2,
    /// `setpgid`.
    ProcessGroup = 3,
    /// `tcsetpgrp` on boundary's terminal.
    Terminal = 4,
    /// Joining a new session keyring.
    Keyring = 5,
    /// Dropping capabilities and locking securebits.
    Capabilities = 6,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs = 7,
    /// `landlock_restrict_self`.
    Landlock = 8,
    /// Installing the seccomp filter with its listener.
    Seccomp = 9,
    /// Sending the listener to the supervisor.
    HandOver = 10,
    /// The supervisor's "ready" never came.
    SupervisorGone = 11,
    /// Making the target the OOM killer's first choice.
    OomScore = 12,
}

const STEPS: [Step; 12] = [
    Step::DeathSignal,
    Step::ParentGone,
    Step::ProcessGroup,
    Step::Terminal,
    Step::Keyring,
    Step::Capabilities,
    Step::NoNewPrivs,
    Step::Landlock,
    Step::Seccomp,
    Step::HandOver,
    Step::SupervisorGone,
    Step::OomScore,
];

impl Step {
    /// What the child was doing.
    pub fn what(self) -> &'static str {
        match self {
            Step::DeathSignal => "asking for the target's death with boundary (PR_SET_PDEATHSIG)",
            Step::ParentGone => "starting the target: boundary exited meanwhile",
            Step::ProcessGroup => "giving the target its own process group",
            Step::Terminal => "handing the terminal to the target",
            Step::Keyring => "giving the target a new, empty session keyring (keyctl)",
            Step::Capabilities => "dropping every capability of the target",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Landlock => "entering the Landlock domain",
            Step::Seccomp => "installing the seccomp filter with its notification listener",
            Step::HandOver => "handing the seccomp listener to the connect supervisor",
            Step::SupervisorGone => {
                "waiting for the connect supervisor: it stopped before the target started"
            }
            Step::OomScore => {
                "making the target the first to go when memory runs out \
                (writing 1000 to /proc/self/oom_score_adj)"
            }
        }
    }

    /// What the user can do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Step::Keyring | Step::Seccomp => {
                "boundary itself runs in a sandbox that refuses this (another landjail, or a \
                 container's seccomp profile); run boundary outside it, or use --jail-type nsjail"
            }
            Step::Landlock => {
                "boundary already runs in nested Landlock sandboxes (the kernel allows 16 levels); \
                 start it from a less confined shell"
            }
            Step::Capabilities => {
                "boundary's parent locked its securebits (capsh --secbits); start boundary \
                 without locked securebits"
            }
            Step::Terminal => {
                "run boundary in the foreground of its terminal, or redirect its input from a file"
            }
            Step::ParentGone => "see why boundary was stopped while it started the jail",
            Step::SupervisorGone => "run with RUST_LOG=debug to see why the supervisor stopped",
            Step::OomScore => {
                "boundary needs a writable /proc/self/oom_score_adj (a /proc mounted read-only \
                 by a container?); give it a normal /proc, or use --jail-type nsjail"
            }
            Step::DeathSignal | Step::ProcessGroup | Step::NoNewPrivs | Step::HandOver => {
                "this is unexpected on Linux 6.7+; please report it with `uname -r`"
            }
        }
    }
}

/// What a failed child reports: the step and, if the step failed with one, its errno. Its text
/// says what failed, why and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    /// The step that failed.
    pub step: Step,
    /// The step's errno, if it failed with one.
    pub errno: Option<i32>,
}

impl ChildFailure {
    /// The report's bytes: the step's number, then the errno (0: none), little-endian.
    fn encode(self) -> [u8; 5] {
        let e = self.errno.unwrap_or(0).to_le_bytes();
        [self.step as u8, e[0], e[1], e[2], e[3]]
    }

    /// Reads a report; `None` for anything but a whole one (no report was written).
    pub(crate) fn decode(buf: &[u8]) -> Option<ChildFailure> {
        let [step, a, b, c, d] = *buf else {
            return None;
        };
        let step = *STEPS.iter().find(|s| **s as u8 == step)?;
        let errno = i32::from_le_bytes([a, b, c, d]);
        Some(ChildFailure {
            step,
            errno: (errno != 0).then_some(errno),
        })
    }

    /// Reads the report the child left on `pipe` (non-blocking), if any.
    pub(crate) fn read(pipe: &OwnedFd) -> Option<ChildFailure> {
        let mut buf = [0u8; 6];
        let n = nix::unistd::read(pipe.as_raw_fd(), &mut buf).ok()?;
        Self::decode(&buf[..n])
    }
}

impl std::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.step.what())?;
        if let Some(errno) = self.errno {
            write!(f, ": {}", io::Error::from_raw_os_error(errno))?;
        }
        write!(f, ". Fix: {}", self.step.fix())
    }
}

/// Tags a step's error with the step.
fn at<T, E: Into<io::Error>>(step: Step, r: Result<T, E>) -> Result<T, (Step, io::Error)> {
    r.map_err(|e| (step, e.into()))
}

impl ChildSetup {
    /// Runs the steps listed in the module documentation; an error aborts the spawn, after the
    /// failed step was reported on the report pipe.
    pub(crate) fn run(&self) -> io::Result<()> {
        let Err((step, err)) = self.steps() else {
            return Ok(());
        };
        let report = ChildFailure {
            step,
            errno: err.raw_os_error(),
        };
        let _ = nix::unistd::write(&self.report, &report.encode());
        Err(err)
    }

    fn steps(&self) -> Result<(), (Step, io::Error)> {
        // If boundary dies (even by SIGKILL) the target dies too, instead of living on
        // unsupervised. The death signal follows the thread that forked us.
        at(
            Step::DeathSignal,
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL),
        )?;
        if nix::unistd::getppid().as_raw() != self.parent_pid {
            return Err((Step::ParentGone, io::Error::from_raw_os_error(libc::ESRCH)));
        }
        // Own process group, in the terminal's foreground: Ctrl-C reaches the target once (not
        // also through boundary's forwarding), and job control works in interactive shells.
        let zero = nix::unistd::Pid::from_raw(0);
        at(Step::ProcessGroup, nix::unistd::setpgid(zero, zero))?;
        if let Some(fd) = self.tty {
            at(Step::Terminal, sys::take_foreground(fd))?;
        }
        at(Step::Keyring, sys::join_new_session_keyring())?;
        at(
            Step::Capabilities,
            sys::drop_all_capabilities(self.last_cap),
        )?;
        at(Step::NoNewPrivs, sys::set_no_new_privs())?;
        // `/proc/self` is ours to write only once we are dumpable again (the fork inherited
        // boundary's flag); the Landlock domain below then refuses every write under `/proc`,
        // so the target cannot lower the value. Dumpable from here on exposes this copy of
        // boundary's memory to no one new: only to processes outside any Landlock domain with
        // our uid, as it is after the hand-over below.
        at(Step::OomScore, sys::make_dumpable())?;
        at(Step::OomScore, crate::process::prefer_for_oom_kill())?;
        at(
            Step::Landlock,
            sys::landlock_restrict_self(self.ruleset.as_raw_fd()),
        )?;
        // Our copy of the ruleset is not needed by the target.
        let _ = nix::unistd::close(self.ruleset.as_raw_fd());
        if self.insecure_no_seccomp {
            // The supervisor sees EOF and stops.
            let _ = nix::unistd::close(self.sock.as_raw_fd());
            sys::cloexec_from(3);
            return Ok(());
        }
        let notify = at(Step::Seccomp, sys::seccomp_install(&self.program, true))?
            .ok_or((Step::Seccomp, io::Error::from_raw_os_error(libc::EINVAL)))?;
        // `pidfd_getfd` needs ptrace access to us, and the fork inherited boundary's
        // non-dumpable flag (`exec` would reset it; until then only processes outside any
        // Landlock domain, with our uid, could read this copy of boundary's memory).
        at(Step::HandOver, sys::make_dumpable())?;
        // The number and our pid (`supervisor::take_listener` copies it with pidfd_getfd).
        let mut offer = [0u8; 8];
        offer[..4].copy_from_slice(&notify.as_raw_fd().to_ne_bytes());
        offer[4..].copy_from_slice(&nix::unistd::getpid().as_raw().to_ne_bytes());
        let sent = nix::unistd::write(&self.sock, &offer);
        let mut ack = [0u8; 1];
        let taken = match sent {
            Ok(8) => nix::unistd::read(self.sock.as_raw_fd(), &mut ack),
            _ => Ok(0),
        };
        // The listener must not survive into the target (it could answer its own notifications).
        drop(notify);
        match at(Step::HandOver, sent.map_err(io::Error::from))? {
            8 => {}
            _ => return Err((Step::HandOver, io::ErrorKind::WriteZero.into())),
        }
        match taken {
            Ok(1) => {}
            Ok(_) => return Err((Step::SupervisorGone, io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err((Step::SupervisorGone, e.into())),
        }
        // The socketpair end is not needed by the target.
        let _ = nix::unistd::close(self.sock.as_raw_fd());
        sys::cloexec_from(3);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_anything_else_is_no_report() {
        for step in STEPS {
            for errno in [None, Some(libc::EPERM), Some(libc::EBUSY)] {
                let f = ChildFailure { step, errno };
                assert_eq!(ChildFailure::decode(&f.encode()), Some(f));
            }
        }
        assert_eq!(ChildFailure::decode(&[]), None);
        assert_eq!(ChildFailure::decode(&[5, 1, 0, 0]), None);
        assert_eq!(ChildFailure::decode(&[0, 1, 0, 0, 0]), None);
        assert_eq!(ChildFailure::decode(&[13, 1, 0, 0, 0]), None);
        let text = ChildFailure {
            step: Step::Keyring,
            errno: Some(libc::EPERM),
        }
        .to_string();
        assert!(
            text.starts_with("giving the target a new, empty session keyring"),
            "{text}"
        );
        assert!(text.contains("Operation not permitted"), "{text}");
        assert!(
            text.contains("Fix: boundary itself runs in a sandbox"),
            "{text}"
        );
    }
}
