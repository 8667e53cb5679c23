//! Jails: run a command so that its only way to the network is the proxy.
//!
//! `nsjail` puts the command in new user, network, PID and mount namespaces whose netfilter
//! redirects every TCP connection to listeners handed back to the parent; `landjail` uses
//! Landlock and seccomp where namespaces are impossible. This crate knows nothing of HTTP.

use std::ffi::OsString;
use std::path::PathBuf;

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
    /// landjail: forbid TCP bind as well (default allows local servers).
    pub landjail_deny_bind: bool,
}
