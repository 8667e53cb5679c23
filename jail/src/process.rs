//! Supervision shared by both backends: waiting for the jailed command, signal forwarding, the
//! grace period before SIGKILL, exit status (code, or 128+signal), the terminal's foreground
//! process group, and dropping privileges before exec.
//!
//! Signals are sent through pidfds, so a pid that was reaped and reused can never be hit.

use std::io;
use std::net::TcpListener;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::sys::{pidfd_open, pidfd_signal, take_foreground};

/// Signals `wait()` forwards (and nsjail's init forwards on to the target); caught from the
/// moment the jail starts (see [`catch_early`]). SIGHUP only when it is the terminal closing
/// (see [`sighup_is_terminal_hangup`]); otherwise it asks boundary to reload its policy.
pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

static EARLY: [std::sync::atomic::AtomicBool; 65] =
    [const { std::sync::atomic::AtomicBool::new(false) }; 65];

extern "C" fn note_early(sig: libc::c_int) {
    if let Some(flag) = EARLY.get(sig as usize) {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Between starting the jail and the first poll of [`RunningJail::wait`] (where tokio takes the
/// signals over) a SIGINT/SIGTERM would kill boundary with its default action and leave the
/// target without its signal. So from start on, signals still at their default disposition are
/// caught into flags that `wait()` replays once it listens. Backends call it before they start
/// the target; calling it again is harmless.
pub(crate) fn catch_early() {
    HAD_TERMINAL.get_or_init(has_controlling_terminal);
    for sig in FORWARDED {
        // SAFETY: `note_early` only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { crate::sys::catch_if_default(sig, note_early) } {
            tracing::debug!("catching {sig} early: {e}");
        }
    }
}

/// Whether boundary had a controlling terminal when the jail started.
static HAD_TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// `/dev/tty` opens only while the process has a controlling terminal; after a hangup the
/// kernel has detached it from every process of the session.
fn has_controlling_terminal() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/tty")
        .is_ok()
}

/// What a SIGHUP to boundary means. A closing terminal hangs up the whole session first (the
/// kernel detaches the terminal from each of its processes) and the shell then sends SIGHUP
/// to its jobs: boundary had a terminal when the jail started and has none now, and the
/// signal goes on to the jailed command as before, so the run ends with its terminal. Any
/// other SIGHUP (`kill -HUP`, a supervisor) asks boundary to reload its policy and is not
/// forwarded.
pub fn sighup_is_terminal_hangup() -> bool {
    *HAD_TERMINAL.get().unwrap_or(&false) && !has_controlling_terminal()
}

/// Notes whether boundary has a controlling terminal now, for [`sighup_is_terminal_hangup`].
/// Call it before anything that takes time, so a terminal that closes while the jail starts
/// is still known to have been there; the jail's start notes it too if this was not called.
pub fn remember_terminal() {
    HAD_TERMINAL.get_or_init(has_controlling_terminal);
}

/// Whether `sig`, received by boundary, goes on to the jail.
fn forwards(sig: Signal) -> bool {
    sig != Signal::SIGHUP || sighup_is_terminal_hangup()
}

/// How long the jail may take to exit after SIGINT/SIGTERM was forwarded before it is SIGKILLed.
pub(crate) const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// A started jail: the proxy listeners it hands to the caller and the process to supervise.
pub struct RunningJail {
    /// Listening sockets the proxy must serve (nsjail: created inside the jail's namespace).
    pub listeners: Vec<TcpListener>,
    child: Option<Child>,
    child_pidfd: Option<OwnedFd>,
    /// Where forwarded signals go (nsjail: the jail's init; landjail: the target itself).
    forward_pidfd: Option<OwnedFd>,
    forward_pid: u32,
    grace: Duration,
    tty: Option<RawFd>,
    exit: Option<i32>,
    guards: Vec<Box<dyn Send>>,
    attributor: Option<std::sync::Arc<crate::attribution::Attributor>>,
}

impl std::fmt::Debug for RunningJail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningJail")
            .field("listeners", &self.listeners)
            .field("pid", &self.pid())
            .field("forward_pid", &self.forward_pid)
            .field("exit", &self.exit)
            .finish()
    }
}

/// Shell convention for an exit status: the code, or 128+N for death by signal N.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    }
}

/// The standard stream (0, 1 or 2) that is our controlling terminal while we are its
/// foreground process group; the jailed command then takes the foreground from us.
pub(crate) fn foreground_terminal() -> Option<RawFd> {
    use std::os::fd::{AsFd, AsRawFd};
    let own = nix::unistd::getpgrp();
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    let streams = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    let ours = streams.into_iter().find(|fd| {
        nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
            && nix::unistd::tcgetpgrp(fd) == Ok(own)
    });
    ours.map(|fd| fd.as_raw_fd())
}

/// Drops every capability in every set (bounding, ambient, effective, permitted, inheritable)
/// and sets no_new_privs, so neither this process nor anything it execs can regain privilege.
pub(crate) fn drop_all_privileges() -> io::Result<()> {
    drop_privileges_but(None)
}

/// [`drop_all_privileges`], but capability `keep` stays, for this process and what it execs
/// (a root-started nsjail's init with nested sandboxes keeps `CAP_SETFCAP`).
pub(crate) fn drop_privileges_but(keep: Option<u32>) -> io::Result<()> {
    crate::sys::drop_capabilities_but(crate::sys::cap_last_cap(), keep)?;
    crate::sys::set_no_new_privs()
}

/// Makes this process and everything it starts the kernel's first choice when memory runs
/// out (`oom_score_adj` 1000, inherited across fork and exec). A jailed program that makes the
/// machine run short (by its own allocations, or by opening thousands of connections that
/// grow boundary's proxy) is then the one killed: the run ends and boundary, the largest
/// process otherwise, lives to write every audit record. Written by a process with
/// `CAP_SYS_RESOURCE` (boundary run by root) the kernel also makes it the floor, and landjail's
/// Landlock rules refuse writes under `/proc`; an unprivileged nsjail's program can lower it
/// to 0 again (the kernel lets any process go down to its floor, here 0), boundary's own.
/// Runs between fork and exec (no allocation: a fixed path, one write).
pub(crate) fn prefer_for_oom_kill() -> io::Result<()> {
    use rustix::fs::{open, Mode, OFlags};
    let fd = open(
        c"/proc/self/oom_score_adj",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::io::write(&fd, b"1000")?;
    Ok(())
}

impl RunningJail {
    /// Supervises `child`; signals are forwarded to the child itself until
    /// [`forward_signals_to`](Self::forward_signals_to) names another process.
    pub(crate) fn new(child: Child, listeners: Vec<TcpListener>) -> io::Result<Self> {
        let pid = child.id();
        let child_pidfd = pidfd_open(pid)?;
        let forward_pidfd = pidfd_open(pid)?;
        catch_early();
        Ok(RunningJail {
            listeners,
            child: Some(child),
            child_pidfd: Some(child_pidfd),
            forward_pidfd: Some(forward_pidfd),
            forward_pid: pid,
            grace: DEFAULT_GRACE_PERIOD,
            tty: None,
            exit: None,
            guards: Vec::new(),
            attributor: None,
        })
    }

    /// Forward signals to `pidfd` (pid `pid`) instead of the child, e.g. the jail's own init.
    pub(crate) fn forward_signals_to(mut self, pidfd: OwnedFd, pid: u32) -> Self {
        self.forward_pidfd = Some(pidfd);
        self.forward_pid = pid;
        self
    }

    /// After the jail exits, take terminal `fd`'s foreground back for our own process group.
    pub(crate) fn reclaim_terminal(mut self, fd: Option<RawFd>) -> Self {
        self.tty = fd;
        self
    }

    /// Keeps `guard` alive as long as the jail (e.g. a background DNS server's shutdown handle).
    pub(crate) fn keep_alive(mut self, guard: impl Send + 'static) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    /// Names the process behind each proxy connection with `attributor`.
    pub(crate) fn with_attributor(mut self, attributor: crate::attribution::Attributor) -> Self {
        self.attributor = Some(std::sync::Arc::new(attributor));
        self
    }

    /// Finds which jailed process made a connection the proxy accepted (see
    /// [`Attributor::requester`](crate::attribution::Attributor::requester)).
    pub fn attributor(&self) -> Option<std::sync::Arc<crate::attribution::Attributor>> {
        self.attributor.clone()
    }

    /// Pid of the process boundary waits for (nsjail: the namespace helper; landjail: target).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `sig` to the jail (the process signals are forwarded to).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        match &self.forward_pidfd {
            Some(fd) if self.exit.is_none() => pidfd_signal(fd, sig),
            _ => Ok(()),
        }
    }

    /// SIGKILLs the whole jail at once (nsjail: killing init ends every process in its PID
    /// namespace).
    pub fn kill(&self) {
        if self.exit.is_some() {
            return;
        }
        for fd in [&self.forward_pidfd, &self.child_pidfd]
            .into_iter()
            .flatten()
        {
            if let Err(e) = pidfd_signal(fd, Signal::SIGKILL) {
                tracing::debug!("SIGKILL to the jail: {e}");
            }
        }
    }

    /// Waits for the target; forwards SIGINT, SIGTERM, SIGQUIT, SIGWINCH, SIGUSR1, SIGUSR2,
    /// and SIGHUP when it is the terminal closing ([`sighup_is_terminal_hangup`]). After SIGINT/SIGTERM to us the jail gets the grace period, then SIGKILL. Returns
    /// the exit code (code, or 128+signal). Needs a tokio runtime with IO and signals enabled.
    pub async fn wait(&mut self) -> i32 {
        if let Some(code) = self.exit {
            return code;
        }
        let code = match self.wait_inner().await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("supervising the jail failed: {e}; killing it");
                self.kill();
                self.reap_blocking()
            }
        };
        self.exit = Some(code);
        self.child_pidfd = None;
        self.forward_pidfd = None;
        if let Some(fd) = self.tty {
            if let Err(e) = take_foreground(fd) {
                tracing::debug!("taking the terminal back: {e}");
            }
        }
        code
    }

    fn reap_blocking(&mut self) -> i32 {
        match self.child.as_mut().map(Child::wait) {
            Some(Ok(status)) => exit_code(status),
            Some(Err(e)) => {
                tracing::error!("waiting for the jail: {e}");
                1
            }
            None => 1,
        }
    }

    async fn wait_inner(&mut self) -> io::Result<i32> {
        let pidfd = self
            .child_pidfd
            .as_ref()
            .ok_or_else(|| io::Error::other("jail already waited for"))?
            .try_clone()?;
        let exited = crate::sys::async_readable(pidfd)?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut quit = signal(SignalKind::quit())?;
        let mut winch = signal(SignalKind::window_change())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        let mut deadline: Option<tokio::time::Instant> = None;
        // Signals that arrived before tokio listened: forward them now.
        for sig in FORWARDED {
            if EARLY[sig as usize].swap(false, std::sync::atomic::Ordering::SeqCst) {
                if !forwards(sig) {
                    // Not for the jail: raised again now that boundary's own listeners (the
                    // policy reload, the audit log reopen) are installed.
                    tracing::debug!("{sig} arrived during startup; raising it again for boundary");
                    if let Err(e) = nix::sys::signal::raise(sig) {
                        tracing::warn!("{sig} arrived during startup and is lost: {e}");
                    }
                    continue;
                }
                tracing::debug!("forwarding {sig} (arrived during startup) to the jail");
                let _ = self.signal(sig);
                if matches!(sig, Signal::SIGINT | Signal::SIGTERM) && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + self.grace);
                }
            }
        }
        loop {
            let grace_over = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let forward = tokio::select! {
                guard = exited.readable() => {
                    let _ = guard?;
                    break;
                }
                _ = int.recv() => Some(Signal::SIGINT),
                _ = term.recv() => Some(Signal::SIGTERM),
                _ = hup.recv() => Some(Signal::SIGHUP).filter(|s| forwards(*s)),
                _ = quit.recv() => Some(Signal::SIGQUIT),
                _ = winch.recv() => Some(Signal::SIGWINCH),
                _ = usr1.recv() => Some(Signal::SIGUSR1),
                _ = usr2.recv() => Some(Signal::SIGUSR2),
                _ = grace_over => {
                    tracing::warn!("the jail did not exit within {:?} of the signal; killing it", self.grace);
                    self.kill();
                    deadline = None;
                    None
                }
            };
            if let Some(sig) = forward {
                tracing::debug!("forwarding {sig} to the jail");
                if let Err(e) = self.signal(sig) {
                    tracing::debug!("forwarding {sig}: {e}");
                }
                if matches!(sig, Signal::SIGINT | Signal::SIGTERM) && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + self.grace);
                }
            }
        }
        // The pidfd is readable: the child has exited, so this wait does not block.
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| io::Error::other("no child"))?;
        Ok(exit_code(child.wait()?))
    }
}

impl Drop for RunningJail {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
            let _ = self.reap_blocking();
        }
        self.guards.clear();
    }
}
