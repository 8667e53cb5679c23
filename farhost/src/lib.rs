//! The one far host: a host a jail must never reach, and the one definition of "nothing
//! escaped".
//!
//! Two fresh network namespaces joined by a veth pair. The *near* namespace is where boundary
//! runs (outside the jail, but not on the real host network); the *far* namespace is the host
//! the jail must never reach. The far host has private test addresses (IPv4 `10.213.x.y/30`,
//! IPv6 ULA and link-local), listeners on TCP and UDP ports, and nftables counters on every
//! protocol, counted at the earliest hook so nothing that arrives can be missed. Kernel
//! neighbour discovery and multicast-listener noise (ICMPv6 types 130-137 and 143) is not
//! counted: it is not traffic a jail could have sent, and it would make a zero count race with
//! link setup.
//!
//! A user (the `boundary selftest` command, the jail crate's tests, the end-to-end tests):
//!
//! 1. `let far = FarHost::new()?;` (needs root; fails with the reason otherwise),
//! 2. runs the jail in the near namespace (`far.near_command(program)` is
//!    `ip netns exec <near> program`; `far.in_near(f)` runs `f` on a thread there),
//! 3. from inside the jail tries to reach `far.far_v4`, `far.far_v6`, `far.far_v6_ll` (scoped
//!    with the near interface name `far.near_if`), any port or protocol,
//! 4. judges with [`FarHost::verdict`] (or [`FarHost::assert_nothing_escaped`] in a test):
//!    nothing arrived since the baseline, and the positive control from outside the jail then
//!    did arrive. That judgement is [`Verdict`], written once here for every user.
//!
//! Everything is torn down on `Drop` (the namespaces, `/etc/netns/<near>`, listener threads).
//! Namespace names are unique per process and instance (`bnd-<pid>-<n>-near`/`-far`), so tests
//! in parallel threads and other test binaries never collide.
//!
//! Why a crate of its own: the `boundary` binary ships it (its selftest creates a far host when
//! run as root), `boundary-jail`'s tests use it, and so do the end-to-end tests in
//! `boundary-integration`; the jail crate's tests cannot depend on `integration`, and the jail
//! itself has no business running `ip` and `nft`. It depends on `nix` and `thiserror` only, so
//! it brings no test-only dependency into the binary, and nothing here runs unless the selftest
//! or a test asks for a far host.

#![forbid(unsafe_code)]

mod counters;
mod host;

pub use counters::{Counters, Verdict};
pub use host::{FarHost, FAR_TCP_PORTS, FAR_UDP_PORTS};

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

/// Why the far host could not be made, read or used; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces and netfilter need root.
    #[error("the far host needs root (it creates network namespaces and nftables counters); run as root, as CI does")]
    NotRoot,
    /// A tool could not be started at all.
    #[error("cannot run {cmd} ({source}); install iproute2 and nftables")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A system call on the far host's behalf failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// `nft` answered with something that is not a counter.
    #[error("cannot read the far host's counters from: {0}")]
    Counters(String),
}

/// What every far-host call returns.
pub type Result<T> = std::result::Result<T, Error>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Fails with [`Error::NotRoot`] unless this process is root.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// Runs `cmd` with `input` on its stdin (empty if none); returns its stdout or why it failed.
pub(crate) fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let name = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmd: name.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(io_err(format!("writing to {name}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("waiting for {name}")))?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(text) = input {
            stderr.push_str(&format!("\ninput:\n{text}"));
        }
        return Err(Error::Failed {
            cmd: name,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread that has joined the network namespace `/run/netns/<name>`. Sockets
/// created there stay in that namespace after the thread ends.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).map_err(io_err(format!("opening {path}")))?;
    let handle = std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| io_err(format!("joining {path}"))(e.into()))?;
        Ok(f())
    });
    handle.join().map_err(|_| Error::Io {
        what: format!("a thread in network namespace {name}"),
        source: std::io::Error::other("panicked"),
    })?
}
