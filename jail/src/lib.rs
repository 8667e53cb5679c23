//! Jails: run a command so that its only way to the network is the proxy.
//!
//! `nsjail` puts the command in new user, network, PID and mount namespaces whose netfilter
//! redirects every TCP connection to listeners handed back to the parent; `landjail` uses
//! Landlock and seccomp where namespaces are impossible. This crate knows nothing of HTTP.
//!
//! Both jails install a seccomp filter built by one builder (`seccomp`): rules shared by both
//! (terminal injection, socket families that are not per network namespace, host-wide kernel
//! interfaces, new namespaces, io_uring, foreign architectures) with each jail's own on top
//! (`landjail::filter`, `nsjail::filter`). Raw system calls without a safe wrapper elsewhere
//! live in `sys`. The threat model, class by class, is in `docs/jail-types.md`.
//!
//! One connect supervisor (`supervisor`) answers the filter's `connect()` notifications for
//! both jails (landjail: also `listen()`): it takes the socket and a copy of the address from
//! the caller, decides, and makes the call itself, never letting the kernel continue a checked
//! call. It applies the Unix socket policy (`supervisor::unix`, `docs/unix-sockets.md`: the
//! agent's socket never, the jail's own listeners and allowed sockets yes, container runtimes
//! and other host services no) and, in landjail, the TCP destinations and loopback-only
//! listeners (`supervisor::tcp`).

pub mod landjail;

use std::ffi::OsString;
use std::path::PathBuf;

mod dns;
pub mod nsjail;
pub mod probe;
pub mod process;
mod reexec;
mod seccomp;
mod supervisor;
mod sys;

pub use supervisor::unix::{UnixSocketRules, BUILTIN_DENY as BUILTIN_UNIX_DENY};

pub use process::RunningJail;
pub use reexec::init_hook;

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
    /// A tool the backend runs is not installed.
    #[error(
        "`{tool}` not found on PATH or in /usr/sbin, /sbin: install the Debian package `{package}`"
    )]
    MissingTool {
        /// Program name.
        tool: String,
        /// Package that provides it.
        package: String,
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

/// What to run and under which network rules; shared by both backends so the CLI builds it once.
#[derive(Debug, Clone, Default)]
pub struct JailSpec {
    /// The target program (looked up on PATH like a shell would) and its arguments.
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Variables added to (or overriding) the inherited environment: CA trust, proxy variables.
    pub env: Vec<(OsString, OsString)>,
    /// The proxy's port (nsjail: inside the jail's own namespace; landjail: on host loopback).
    pub proxy_port: u16,
    /// Forward DNS to the host's resolvers instead of the answering stub (allows exfiltration).
    pub use_real_dns: bool,
    /// nsjail without a user namespace (hosts that forbid them; needs real root).
    pub no_user_namespace: bool,
    /// Paths the jailed process must not reach (the CA key, the agent's audit socket).
    pub hide_paths: Vec<PathBuf>,
    /// Paths the jailed process may read but never change (boundary's config directory, its
    /// log and audit files). nsjail binds them read-only; landjail cannot (same uid), so the
    /// caller checks them for changes instead.
    pub readonly_paths: Vec<PathBuf>,
    /// landjail: forbid TCP bind as well (default allows local servers).
    pub landjail_deny_bind: bool,
    /// What Unix sockets outside the jail may be connected to, on top of the built-in rules
    /// (see the Unix socket policy in the crate documentation).
    pub unix_sockets: UnixSocketRules,
}
