//! Escape probes run inside a jail by `boundary selftest` (`argv[1]` = `__boundary-probe`).
//!
//! Each probe tries one way out at the system-call level and prints one line, a
//! [`ProbeResult`] (`#<index> <kind> <word> <detail>`), where `<word>` is what happened, not a
//! verdict: `connected`, `sent`, `reply`, `created`, `changed`, `read`, `signalled`,
//! `entered`, `injected` mean the operation worked; `refused` means the kernel said no (the
//! errno is in the detail). The selftest decides what each outcome means for the backend in
//! use. Probes never send to anything but the addresses they are given. Several probes may be
//! given, separated by `;`. The network probes are in `net.rs`, the netlink ones in
//! `netlink.rs`, the others in this file and the files named after what they probe.
//!
//! The `tcp` probe optionally writes a request and prints the response bytes (escaped), so the
//! caller can speak any protocol through it without this crate knowing that protocol.

mod kernel;
mod net;
mod netlink;
mod result;
mod seccomp;
mod unix;

pub use result::{probe_args, NotAResult, ProbeResult};

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

/// `argv[1]` that selects the probes.
pub const PROBE_ARG: &str = "__boundary-probe";

/// `read PATH`: read a file. A leading `$NAME` is the jailed environment's variable (so the
/// selftest can ask for "the CA the jail was told to trust": `$SSL_CERT_DIR/ca-key.pem`).
fn read(args: &[String]) -> Result<String, String> {
    let raw = args.first().ok_or("missing path")?;
    let path = &expand_env(raw)?;
    let mut buf = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
        Ok(0) => Ok(format!("refused: {path} reads as empty")),
        Ok(n) => Ok(format!("read {n} bytes from {path}")),
        Err(e) => Ok(format!("refused: {path}: {e}")),
    }
}

fn expand_env(raw: &str) -> Result<String, String> {
    let Some(rest) = raw.strip_prefix('$') else {
        return Ok(raw.to_string());
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let value = std::env::var(&rest[..end])
        .map_err(|_| format!("{} is not set in the jail", &rest[..end]))?;
    Ok(format!("{value}{}", &rest[end..]))
}

/// `unix PATH`: connect to a Unix stream socket and write a byte.
fn unix(args: &[String]) -> Result<String, String> {
    let path = args.first().ok_or("missing path")?;
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(mut s) => match s.write_all(b"\0") {
            Ok(()) => Ok(format!("connected to {path}")),
            Err(e) => Ok(format!("connected to {path} but write failed: {e}")),
        },
        Err(e) => Ok(format!("refused: {path}: {e}")),
    }
}

/// `procs HOSTPID`: which processes are visible, and whether HOSTPID is one of them.
fn procs(args: &[String]) -> Result<String, String> {
    let host_pid = args.first().ok_or("missing pid")?;
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("refused /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let host_visible = pids.iter().any(|p| p.to_string() == *host_pid);
    let comm1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    Ok(format!(
        "visible={} host_pid_visible={host_visible} pid1={}",
        pids.len(),
        comm1.trim()
    ))
}

/// `signal PID`: send SIGCONT (harmless) to PID.
fn signal(args: &[String]) -> Result<String, String> {
    let pid: i32 = args
        .first()
        .ok_or("missing pid")?
        .parse()
        .map_err(|_| "bad pid")?;
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    ) {
        Ok(()) => Ok(format!("signalled {pid}")),
        Err(e) => Ok(format!("refused: kill {pid}: {e}")),
    }
}

/// `setns PATH`: join the network namespace at PATH.
fn setns(args: &[String]) -> Result<String, String> {
    let path = args.first().ok_or("missing path")?;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(format!("refused open {path}: {e}")),
    };
    match nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) => Ok(format!("entered {path}")),
        Err(e) => Ok(format!("refused setns {path}: {e}")),
    }
}

fn one(kind: &str, args: &[String]) -> Result<String, String> {
    match kind {
        "tcp" => net::tcp(args),
        "udp" => net::udp(args),
        "icmp" => net::icmp(args),
        "raw" => net::raw(args),
        "netlink" => netlink::netlink(args),
        "nft" => netlink::nft(args),
        "read" => read(args),
        "unix" => unix(args),
        "procs" => procs(args),
        "signal" => signal(args),
        "setns" => setns(args),
        k if seccomp::KINDS.contains(&k) => seccomp::one(k, args),
        "listen" => unix::listen(args),
        "udgram" => unix::udgram(args),
        k if kernel::KINDS.contains(&k) => kernel::one(k, args),
        _ => Err(format!("unknown probe {kind}")),
    }
}

/// Runs the probes in `args` (after argv[1]); exit code 0 unless a probe was malformed.
pub(crate) fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut code = 0;
    let mut out = io::stdout().lock();
    for (i, group) in args.split(|a| a == ";").enumerate() {
        let Some((kind, rest)) = group.split_first() else {
            continue;
        };
        let line = match one(kind, rest) {
            Ok(text) => ProbeResult::from_text(i, kind, &text),
            Err(e) => {
                code = 2;
                ProbeResult::from_text(i, kind, &format!("error {e}"))
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    code
}
