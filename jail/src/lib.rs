//! Jails: run a command so that its only way to the network is the proxy.
//!
//! `nsjail` puts the command in new user, network, PID and mount namespaces whose netfilter
//! redirects every TCP connection to listeners handed back to the parent; `landjail` uses
//! Landlock and seccomp where namespaces are impossible. This crate knows nothing of HTTP.
//!
//! Both jails install a seccomp filter built by one builder (`seccomp`): rules shared by both
//! (terminal injection, socket families that are not per network namespace, host-wide kernel
//! interfaces, new namespaces, io_uring, foreign architectures) with each jail's own on top
//! (`landjail::filter`, `nsjail::filter`). Raw system calls (pidfds, capabilities, descriptor
//! passing, seccomp and its notification ioctls, socket calls, pre-exec steps, fork, signal
//! dispositions) are wrappers in one module, `sys`: safe ones, or `unsafe fn`s whose doc names
//! the precondition the caller's `SAFETY` note answers. The threat model, class by class, is in
//! `docs/jail-types.md`.
//!
//! The public surface is what `boundary` uses: [`start`] a [`JailSpec`] in a jail of a
//! [`JailKind`] (each backend's options its own type), serve the proxy on the returned
//! [`RunningJail`]'s listeners, [`RunningJail::wait`] or [`RunningJail::kill`], and
//! [`init_hook`] first thing in `main`. The audit crate, which may not hold `unsafe`, asks the
//! syscall layer for three socket facts: [`unix_unread_bytes`], [`peer_pidfd`], [`pidfd_open`].
//! What the jailed command needs to know (proxy
//! variables, CA trust) comes in as plain environment variables. Between `boundary`, nsjail's
//! helper and the jail's init, failures travel as a typed message (`nsjail::wire::Failure`),
//! decoded into [`JailError`]; landjail's forked child reports a failed confinement step as a
//! [`landjail::ChildFailure`] (the step and its errno), which names the step and its fix.
//!
//! One connect supervisor (`supervisor`) answers the filter's `connect()` notifications for both
//! jails (landjail: also `listen()`; both: sends that name a destination): it takes the socket and
//! a copy of the address from the caller, decides, and makes the call itself, never letting the
//! kernel continue a checked call (nsjail's sends and connects are made by a sender process with
//! the jail's own credentials, `supervisor::sender`, since boundary owns the jail's user
//! namespace). It
//! applies the Unix socket policy (`supervisor::unix`,
//! `docs/unix-sockets.md`: the agent's socket never, the jail's own listeners and allowed sockets
//! yes, container runtimes and other host services no) and, in landjail, the TCP destinations and
//! loopback-only listeners (`supervisor::tcp`).
//!
//! Before it makes a TCP connect the supervisor notes which process is connecting which socket;
//! [`RunningJail::attributor`] hands the proxy an [`Attributor`] that, for a connection it
//! accepted, names that process ([`Requester`], `attribution`).

pub mod attribution;
pub mod landjail;

use std::ffi::OsString;
use std::path::PathBuf;

mod dns;
mod netlink;
pub mod nsjail;
pub mod probe;
mod process;
mod reexec;
mod seccomp;
pub mod ssh_agent;
mod supervisor;
mod sys;
mod writable;

pub use supervisor::unix::UnixSocketRules;

pub use attribution::{Attributor, Requester};
pub use process::{remember_terminal, sighup_is_terminal_hangup, RunningJail};
pub use reexec::init_hook;
/// Socket facts other crates need and have no safe call for (the audit forwarder's), and the
/// allocator release the proxy is handed (it has no `unsafe`).
pub use sys::{
    async_readable, make_undumpable, peer_pidfd, pidfd_open, release_free_memory, unix_unread_bytes,
};

/// Why a jail could not be started; every message says what failed and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The host refuses the namespaces nsjail needs (user namespaces disabled, AppArmor, seccomp).
    #[error("cannot create the jail's namespaces: {detail}. {hint}")]
    Namespaces {
        /// What the kernel said.
        detail: String,
        /// How to fix it, naming the alternatives.
        hint: String,
    },
    /// Setting up the jail failed at a named step.
    #[error("setting up the jail failed: {0}")]
    Setup(String),
    /// The kernel lacks a feature the backend needs.
    #[error("{0}")]
    Unsupported(String),
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl JailError {
    /// Wraps an io::Error with what we were doing.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        JailError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What to run and what it may reach, whichever jail runs it; the CLI builds it once.
#[derive(Debug, Clone, Default)]
pub struct JailSpec {
    /// The target program (looked up on PATH like a shell would) and its arguments.
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables added to (or overriding) the inherited environment, in order (a later entry
    /// wins). The jail adds none of its own: what clients need (CA trust, proxy variables) is
    /// the caller's to give.
    pub env: Vec<(OsString, OsString)>,
    /// Inherited variables the target must not see, removed before [`env`](Self::env) is
    /// applied: boundary's own settings (the upstream proxy's, with its password, among them).
    pub env_remove: Vec<OsString>,
    /// The proxy's port (nsjail: inside the jail's own namespace; landjail: on host loopback).
    pub proxy_port: u16,
    /// Paths the jailed process must not reach (the CA key, the agent's audit socket).
    pub hide_paths: Vec<PathBuf>,
    /// Paths the jailed process may read but never change (boundary's config directory, its
    /// log and audit files). nsjail binds them read-only; landjail cannot (same uid), so the
    /// caller checks them for changes instead.
    pub readonly_paths: Vec<PathBuf>,
    /// What Unix sockets outside the jail may be connected to, on top of the built-in rules
    /// (see the Unix socket policy in the crate documentation).
    pub unix_sockets: UnixSocketRules,
    /// Paths the target may change besides the built-in list, when boundary runs as root and
    /// the host's files are otherwise read-only to the target (see `writable`).
    pub writable_paths: Vec<PathBuf>,
    /// Started by root, leave every host file writable to the target (uid 0): today's
    /// behaviour before the limit, which lets the target run code as root outside the jail.
    pub root_filesystem_writable: bool,
}

/// nsjail's own options (see [`nsjail`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsjailOptions {
    /// Forward DNS to the host's resolvers instead of the answering stub (allows exfiltration).
    pub use_real_dns: bool,
    /// No user namespace (hosts that forbid them; needs root, passwordless sudo or file
    /// capabilities on boundary, see `nsjail::privilege`).
    pub no_user_namespace: bool,
    /// Let the target create user, mount, PID, network, IPC, UTS and cgroup namespaces and
    /// mount in them, so an agent's own sandbox (bubblewrap) runs inside the jail. Off by
    /// default: a nested user namespace reaches kernel code the jail otherwise keeps out of
    /// reach. Started by root the target keeps `CAP_SETFCAP` for it (see `nsjail::filter`).
    pub nested_sandboxes: bool,
}

/// landjail's own options (see [`landjail`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LandjailOptions {
    /// Forbid TCP bind as well (the default allows local servers on loopback).
    pub deny_bind: bool,
}

/// Which jail runs the command, with that jail's own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailKind {
    /// Namespaces: the proxy is the only network path; needs user namespaces (or root).
    Nsjail(NsjailOptions),
    /// Landlock and seccomp, for hosts without namespaces.
    Landjail(LandjailOptions),
}

/// The paths a target started by root may change (the rest of the host is read-only to it),
/// or `None` when it may change whatever its uid may (an unprivileged caller, or
/// `root_filesystem_writable`). Lets the caller tell whether a jailed process could have
/// changed a file the caller trusts (landjail cannot make single files read-only).
pub fn target_writable_roots(spec: &JailSpec) -> Result<Option<Vec<PathBuf>>, JailError> {
    writable::plan(spec)
}

/// Starts `spec` in a jail of `kind`. Call it before the tokio runtime starts (the backends
/// fork), from a thread that lives as long as the jail; await [`RunningJail::wait`] inside a
/// runtime and serve the proxy on [`RunningJail::listeners`].
pub fn start(spec: &JailSpec, kind: &JailKind) -> Result<RunningJail, JailError> {
    match kind {
        JailKind::Nsjail(opts) => nsjail::start(spec, opts),
        JailKind::Landjail(opts) => landjail::start(spec, opts),
    }
}
