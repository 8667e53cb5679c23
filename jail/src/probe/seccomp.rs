//! Probes for what the jails' seccomp filter refuses (terminal injection, host-wide kernel
//! interfaces, acting on host processes). Each is safe even where the filter is missing: it
//! injects only into a terminal it created itself, creates and closes a socket without
//! connecting it, reads a keyring id without creating anything, and sets a process's nice value
//! to the value it already has.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::{ProbeResult, PROBE_ARG};
use crate::sys;

/// The probe kinds of this file.
pub(super) const KINDS: &[&str] = &["tty", "tty-own", "vsock", "kernel", "renice"];

pub(super) fn one(kind: &str, args: &[String]) -> Result<String, String> {
    match kind {
        "tty" => tty(),
        "tty-own" => tty_own(),
        "vsock" => vsock(),
        "kernel" => kernel(),
        "renice" => renice(args),
        _ => Err(format!("unknown probe {kind}")),
    }
}

/// `tty`: runs `tty-own` in a new session (TIOCSTI works only on the caller's controlling
/// terminal, and the probe itself leads a process group, so it cannot start a session).
fn tty() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the probe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([PROBE_ARG, "tty-own"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = sys::spawn_in_new_session(&mut cmd).map_err(|e| format!("spawning: {e}"))?;
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let _ = child.wait();
    match ProbeResult::find(&out, 0) {
        Some(r) if r.kind == "tty-own" && r.word != "error" => {
            Ok(format!("{} {}", r.word, r.detail))
        }
        _ => Err(format!(
            "the session probe said {:?}",
            out.lines().next().unwrap_or("")
        )),
    }
}

/// `tty-own`: makes a fresh pty its controlling terminal and pushes a byte into it.
fn tty_own() -> Result<String, String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    rustix::process::ioctl_tiocsctty(&pty.slave)
        .map_err(|e| format!("taking the new pty as controlling terminal: {e}"))?;
    let result = match sys::tiocsti(pty.slave.as_fd(), b'#') {
        Ok(()) => "injected a byte into a terminal of its own (TIOCSTI works)".to_string(),
        Err(e) => format!("refused TIOCSTI: {e}"),
    };
    // Closing the master would hang up our session (SIGHUP) before the line is printed; the
    // descriptors close when the probe exits.
    std::mem::forget(pty);
    Ok(result)
}

/// `vsock`: creates an AF_VSOCK socket and closes it, never connecting.
fn vsock() -> Result<String, String> {
    let r = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    );
    Ok(match r {
        Ok(_fd) => "created an AF_VSOCK socket (closed unused)".to_string(),
        Err(e) => format!("refused AF_VSOCK socket: {e}"),
    })
}

/// `kernel`: the user keyring, userfaultfd and io_uring; `refused` only if all three are.
fn kernel() -> Result<String, String> {
    let results = [
        ("keyring", sys::user_keyring_id().map(|_| ())),
        ("userfaultfd", sys::userfaultfd().map(drop)),
        ("io_uring", sys::io_uring_setup().map(drop)),
    ];
    let open: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| *n)
        .collect();
    let detail: Vec<String> = results
        .iter()
        .map(|(n, r)| match r {
            Ok(()) => format!("{n}: available"),
            Err(e) => format!("{n}: {e}"),
        })
        .collect();
    Ok(if open.is_empty() {
        format!("refused {}", detail.join(", "))
    } else {
        format!("created {}", detail.join(", "))
    })
}

/// `renice PID`: sets PID's nice value to the value it already has (changes nothing).
fn renice(args: &[String]) -> Result<String, String> {
    let pid: i32 = args
        .first()
        .ok_or("missing pid")?
        .parse()
        .map_err(|_| "bad pid")?;
    let pid = rustix::process::Pid::from_raw(pid).ok_or("bad pid")?;
    let nice = match rustix::process::getpriority_process(Some(pid)) {
        Ok(n) => n,
        Err(e) => return Ok(format!("refused getpriority {}: {e}", pid.as_raw_nonzero())),
    };
    Ok(
        match rustix::process::setpriority_process(Some(pid), nice) {
            Ok(()) => format!(
                "changed nice of {} (to its own value {nice})",
                pid.as_raw_nonzero()
            ),
            Err(e) => format!("refused setpriority {}: {e}", pid.as_raw_nonzero()),
        },
    )
}
