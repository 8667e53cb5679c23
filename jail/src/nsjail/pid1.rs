//! The jail's init (PID 1 of the jail's PID namespace): mounts a fresh `/proc`, builds the
//! jail's view of the kernel's files and hides the paths the target must not reach (see
//! [`super::mounts`]), starts the jail's process numbers at a random point, gives the target a
//! fresh session keyring, drops every privilege, starts the target, forwards signals to it,
//! reaps every zombie and exits with the target's status (code, or 128+signal). When init exits
//! the kernel kills whatever else is left in the namespace.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::wire::{Failure, Request, SetupStatus};
use crate::process::{drop_privileges_but, FORWARDED};

/// Runs init; never returns.
pub fn main(req: &Request, status: OwnedFd, listener_to: UnixStream) -> ! {
    let mut status = fs::File::from(status);
    let mut fail = |failure: Failure| -> ! {
        let _ = status.write_all(&SetupStatus::Failed(failure).encode());
        std::process::exit(125);
    };
    if let Err(failure) = setup(req, &listener_to) {
        fail(failure);
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        fail(format!("blocking signals in the jail's init: {e}").into());
    }
    let _ = status.write_all(&SetupStatus::Ready.encode());
    drop(status);
    std::process::exit(run(req, &set))
}

fn setup(req: &Request, listener_to: &UnixStream) -> Result<(), Failure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("setting the parent-death signal: {e}"))?;
    // Nothing we mount may propagate back to the host's mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making the jail's mounts private: {e}"))?;
    // Before the fresh /proc, sysfs and /dev, which stay the jail's own and writable as before.
    if let Some(writable) = &req.writable_paths {
        super::rootfs::readonly_except(writable)?;
    }
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Failure::Namespaces {
        detail: format!("mounting a fresh /proc for the jail's PID namespace: {e}"),
        hint: "a container that masks parts of /proc forbids this; run boundary where /proc is \
               fully visible, or use --jail-type landjail"
            .into(),
    })?;
    spread_pids();
    super::mounts::build(&req.hide_paths, &req.readonly_paths)?;
    if req.writable_paths.is_some() {
        super::rootfs::reenter_workdir()?;
    }
    crate::sys::join_new_session_keyring()
        .map_err(|e| format!("giving the jail a fresh session keyring: {e}"))?;
    let nested = super::filter::Nested::of(req.nested_sandboxes, nix::unistd::getuid().as_raw());
    drop_privileges_but(nested.kept_capability())
        .map_err(|e| format!("dropping privileges: {e}"))?;
    // A helper that became the caller with capabilities (sudo, file capabilities) is not
    // dumpable, and init inherits that; with nothing privileged left init is dumpable again,
    // as in the other modes, so the helper (without CAP_SYS_PTRACE) can take the listener.
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("making init dumpable: {e}"))?;
    // Binds init and everything it starts (see nsjail/filter.rs); connects go to boundary's
    // supervisor (jail/src/supervisor), which gets the listener through the helper.
    let mut rules = super::filter::rules(nested);
    crate::supervisor::add_rules(&mut rules);
    crate::supervisor::add_send_rules(&mut rules);
    let listener = super::filter::install(&rules)
        .map_err(|e| format!("installing the seccomp filter: {e}"))?
        .ok_or("the seccomp filter has no notification listener")?;
    crate::supervisor::offer_listener(listener_to, &listener)
        .map_err(|e| format!("handing the seccomp listener to boundary: {e}"))?;
    Ok(())
}

/// Starts the jail's process numbers at a random point (`ns_last_pid`, writable by init while
/// it holds its capabilities over the namespace). Every jail numbers its processes from 1 and
/// concurrent jails share the host's `/tmp`, so programs that name files there by pid collided
/// across runs: two jailed Claude Code sessions are both pid 2 and both bind
/// `/tmp/cc-socks-<uid>/2.sock`, and the second broke the first's sandbox proxy (its tool's
/// fetches failed with 502). With a random start they collide no more often than on a host
/// whose pids wrap. Best effort: a kernel or build route that refuses the write leaves the
/// numbering as it was, which costs nothing in enforcement.
fn spread_pids() {
    use std::io::Read;
    let pid_max = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(32768);
    let mut r = [0u8; 4];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .is_err()
    {
        return;
    }
    // Low pids stay free (init is 1); the upper half stays free for the jail to grow into.
    let span = (pid_max / 2).saturating_sub(300).max(1);
    let start = 300 + u32::from_ne_bytes(r) % span;
    let _ = fs::write("/proc/sys/kernel/ns_last_pid", start.to_string());
}

fn run(req: &Request, blocked: &SigSet) -> i32 {
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args);
    for k in &req.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    crate::sys::exec_unblocked_in_foreground(&mut cmd, req.tty_fd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let name = req.program.to_string_lossy();
            let code = if e.kind() == io::ErrorKind::NotFound {
                eprintln!("boundary: {name}: command not found");
                127
            } else {
                eprintln!("boundary: cannot run {name}: {e}");
                126
            };
            return code;
        }
    };
    let target = Pid::from_raw(child.id() as i32);
    // std's Child is not used for waiting: init reaps every process itself.
    std::mem::forget(child);
    loop {
        let sig = match blocked.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(target, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == target => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == target => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
}
