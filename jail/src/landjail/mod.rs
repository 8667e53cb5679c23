//! landjail: a jail without namespaces, for hosts that forbid them (EKS Fargate, nested
//! containers, some WSL2 setups). Landlock and seccomp need no privilege.
//!
//! The jailed process (the "target") keeps the host's network namespace, so every way it could
//! reach the network has to be closed one by one:
//!
//! - **TCP connect**: every `connect()` is sent by seccomp to a supervisor thread in boundary
//!   (`SECCOMP_RET_USER_NOTIF`), which takes the socket with `pidfd_getfd` and connects it itself
//!   to the checked address; only the proxy's loopback listeners are accepted. Connecting to the
//!   proxy *port* on another host (the Go landjail's bypass) fails with `EACCES`. Landlock's
//!   network rules (ABI 4) also limit TCP connect to the proxy port, as a second wall (for
//!   example if a connect ever took a path that seccomp does not see).
//! - **Other sockets**: seccomp refuses UDP (so DNS fails fast; with an explicit proxy the proxy
//!   resolves names), ICMP datagram and raw sockets, packet sockets, SCTP, MPTCP, vsock and
//!   netlink families other than route and sock_diag. TCP Fast Open (`MSG_FASTOPEN`,
//!   `TCP_FASTOPEN_CONNECT`) and io_uring, which connect past `connect()`, are refused (the exact
//!   program and its reasons are in `filter.rs`).
//! - **Signals and abstract Unix sockets** may not leave the jail (Landlock scoping, ABI 6);
//!   ptrace of processes outside the jail is already forbidden by Landlock.
//! - **Processes outside the jail** (same PID namespace, same uid): seccomp allows `prlimit64`
//!   (setting), `setpriority`, `ioprio_set` and `sched_set*` only on the caller itself; Landlock
//!   makes nothing under `/proc` writable (another process's `oom_score_adj`, `autogroup`...)
//!   and refuses everything that needs ptrace access to them (`/proc/<pid>/environ` and `mem`,
//!   `process_vm_*`, `pidfd_getfd`, `kcmp`, `move_pages`). Limits: `renice`, `taskset -p` and
//!   `prlimit --pid` fail on the jail's own children too, per-thread calls by thread id
//!   (`pthread_setaffinity_np`) fail, and the target cannot write its own `/proc/self` files.
//! - **The terminal**: `TIOCSTI` and `TIOCLINUX` (typing into the terminal boundary runs on,
//!   which the user's shell reads after boundary exits) are refused, like in nsjail; so are the
//!   host-wide kernel interfaces both jails refuse (`crate::seccomp`). Jailed processes that
//!   detach do not outlive the jail: boundary is their subreaper and, at the end, stops their
//!   whole tree before killing it, so members cannot replace themselves (`orphans.rs`).
//! - **Host configuration**: the target has no capabilities (bounding, ambient, effective,
//!   permitted, inheritable all empty; root's exec-time regain locked off with securebits) and
//!   `no_new_privs`, also when boundary runs as root, so it cannot change routes, links or
//!   netfilter. (An ordinary user cannot empty its bounding set without `CAP_SETPCAP`; with
//!   `no_new_privs` nothing can be gained from it, since setuid and file capabilities are off.)
//! - **File metadata**: Landlock does not control `chmod`, `chown`, times, extended attributes
//!   (ACLs) or inode flags (`chattr`), and a target started by root owns the system files. The
//!   filter sends those calls to the supervisor, which makes the change on its own descriptor,
//!   with the target's rights, only beneath the paths Landlock lets the target write
//!   (`landlock_rules::writable_roots`, `supervisor::meta`).
//!   Setuid and setgid bits are refused everywhere (by `chmod` and on new files): with
//!   `no_new_privs` they only act outside the jail.
//! - **Binding** local TCP ports stays allowed (dev servers), unless
//!   [`LandjailOptions::deny_bind`] forbids it through Landlock; listening is for loopback
//!   addresses only. Jailed processes reach their own loopback servers (the supervisor records
//!   every socket they `listen()` on), not the host's other loopback services.
//! - **No nested sandboxes that could outvote the supervisor**: new user or network namespaces
//!   and a second seccomp notification listener are refused.
//! - **No inherited descriptors**: everything above stderr is closed on exec, so a socket that
//!   boundary's own parent leaked cannot become a way out.
//!
//! What landjail cannot do, honestly:
//! - **Hide files the target's user can read.** Without a mount namespace there is no way to
//!   make one file disappear, and Landlock rules only grant access beneath whole directories, so
//!   "everything but the CA key" would make every new file in `$HOME` unreadable (agents write
//!   there all the time). A file in `hide_paths` therefore stays readable to the target (a
//!   warning says so at start); callers must not leave secrets on disk. `boundary` gives
//!   landjail a CA for the run whose key is deleted before the target starts. Sockets in
//!   `hide_paths` (the agent's audit socket) *are* enforced: the supervisor refuses to connect
//!   to them.
//! - **Protect the user's files.** The target can write whatever its user can, including
//!   boundary's own `config.yaml` (an agent could widen the next run's allow list) and files
//!   that run later outside the jail (`~/.bashrc`). Make such files read-only to the agent's
//!   user, or use nsjail. Started by root, Landlock keeps writes to the writable list
//!   (`crate::writable`: working directory, `$HOME`, `/tmp`, ...) and `/dev` to the standard
//!   nodes.
//! - **Filesystem Unix sockets** are decided by the Unix socket policy of the connect
//!   supervisor (`jail/src/supervisor/unix.rs`, `docs/unix-sockets.md`): the jail's own
//!   listeners, the SSH agent and configured sockets are reachable; container runtimes, system
//!   managers and other host services are refused. Connects are made by the supervisor, so a
//!   listening peer sees boundary's pid in `SO_PEERCRED`; the permission check on the socket
//!   file is the target's (the connecting thread runs without effective capabilities).
//!   Datagrams sent to a path (`sendto`, `sendmsg`, `sendmmsg`) are decided by the same policy
//!   and sent by the supervisor (`supervisor::send`).
//! - **Inbound**: `listen()` is refused unless the socket is bound to loopback, so no other
//!   host reaches a jailed server.
//! - A process that makes itself non-dumpable (`exec` of an unreadable binary) cannot be
//!   inspected by the supervisor; its connects fail (closed, not open).
//!
//! Start order: check the Landlock ABI, bind the proxy listeners on `127.0.0.1` and `::1`,
//! prepare the ruleset, start the supervisor thread, fork; the child takes its own process
//! group (and the terminal's foreground), drops capabilities, sets `no_new_privs`, enters the
//! Landlock domain, installs the seccomp filter, hands the notification descriptor to the
//! supervisor, waits for its "ready", marks inherited descriptors close-on-exec and execs.
//! Supervision after that (signals, grace period, exit status, terminal) is the shared
//! [`RunningJail`].

mod child;
mod filter;
mod landlock_rules;
mod orphans;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use nix::fcntl::OFlag;
use tracing::{debug, info, warn};

use crate::{supervisor, JailError, JailSpec, LandjailOptions, RunningJail};

pub use child::{ChildFailure, Step};
pub use landlock_rules::{check_abi, kernel_abi, MIN_ABI};
#[cfg(feature = "insecure-test-hooks")]
pub use landlock_rules::{FORCE_ABI_ENV, NO_SECCOMP_ENV};

/// Why a landjail could not be started (converted into [`JailError`] by [`start`]).
#[derive(Debug, thiserror::Error)]
pub enum LandjailError {
    /// The kernel lacks Landlock network rules.
    #[error(
        "landjail needs Landlock ABI {MIN_ABI} or newer (Linux 6.7 or later) for its TCP rules, \
         but this kernel offers {}; upgrade the kernel, or use --jail-type nsjail",
        abi_text(*found)
    )]
    UnsupportedKernel {
        /// The ABI the kernel reported (0: Landlock missing or disabled).
        found: i32,
    },
    /// `JailSpec::program` was empty.
    #[error("no command specified")]
    NoCommand,
    /// The proxy listener could not be bound.
    #[error(
        "cannot listen for the proxy on {addr}: {source}; choose a free port with --proxy-port"
    )]
    Listen {
        /// The address that failed.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// The Landlock ruleset could not be created.
    #[error("cannot prepare the Landlock ruleset: {0}")]
    Landlock(String),
    /// A setup step of the supervisor failed.
    #[error("cannot set up the landjail supervisor: {what}: {source}")]
    Setup {
        /// Which step.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A confinement step in the forked child failed (the child's typed report).
    #[error("cannot start {program:?} in the landjail: {failure}")]
    Confine {
        /// The program.
        program: OsString,
        /// The step, its errno and the fix.
        failure: ChildFailure,
    },
    /// The target could not be started (fork or exec failed).
    #[error("cannot start {program:?} in the landjail: {source}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The error from fork or exec.
        #[source]
        source: io::Error,
    },
}

impl From<LandjailError> for JailError {
    fn from(e: LandjailError) -> Self {
        match e {
            LandjailError::Listen { addr, source } => JailError::Io {
                what: format!(
                    "cannot listen for the proxy on {addr} (choose a free port with --proxy-port)"
                ),
                source,
            },
            LandjailError::Spawn { program, source } => JailError::Io {
                what: format!("cannot start {program:?} in the landjail"),
                source,
            },
            e @ LandjailError::UnsupportedKernel { .. } => JailError::Unsupported(e.to_string()),
            other => JailError::Setup(other.to_string()),
        }
    }
}

fn abi_text(abi: i32) -> String {
    if abi <= 0 {
        "no Landlock at all (not built in, or not in the lsm= boot parameter)".to_string()
    } else {
        format!("ABI {abi}")
    }
}

/// Binds the proxy listeners: 127.0.0.1 and ::1 on the same port.
fn bind_listeners(port: u16) -> Result<(Vec<TcpListener>, u16), LandjailError> {
    // With port 0 the kernel picks one for IPv4; ::1 may already use it, so retry a few times.
    for _ in 0..16 {
        let v4addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let v4 = TcpListener::bind(v4addr).map_err(|source| LandjailError::Listen {
            addr: v4addr,
            source,
        })?;
        let actual = v4
            .local_addr()
            .map_err(|source| LandjailError::Listen {
                addr: v4addr,
                source,
            })?
            .port();
        let v6addr = SocketAddr::from((Ipv6Addr::LOCALHOST, actual));
        let mut out = vec![v4];
        match bind_v6_only(v6addr) {
            Ok(l) => out.push(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 => continue,
            Err(e) => warn!(
                addr = %v6addr, error = %e,
                "landjail: no proxy listener on ::1; clients resolving localhost to ::1 fall back to 127.0.0.1"
            ),
        }
        for l in &out {
            l.set_nonblocking(true)
                .map_err(|source| LandjailError::Setup {
                    what: "making the proxy listener non-blocking",
                    source,
                })?;
        }
        return Ok((out, actual));
    }
    Err(LandjailError::Listen {
        addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        source: io::Error::from(io::ErrorKind::AddrInUse),
    })
}

fn bind_v6_only(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn check_notif_sizes() -> Result<(), LandjailError> {
    match crate::sys::seccomp_notif_sizes_fit() {
        Ok(true) => Ok(()),
        Ok(false) => Err(LandjailError::Setup {
            what: "the kernel's seccomp notification structures are larger than this build knows",
            source: io::Error::from(io::ErrorKind::Unsupported),
        }),
        Err(source) => Err(LandjailError::Setup {
            what: "seccomp user notification is not available (Linux 5.0 or later needed)",
            source,
        }),
    }
}

#[cfg(feature = "insecure-test-hooks")]
fn insecure_no_seccomp() -> bool {
    let off = std::env::var(NO_SECCOMP_ENV).is_ok_and(|v| v == "1");
    if off {
        warn!("insecure test hook: landjail without seccomp (Landlock only)");
    }
    off
}

#[cfg(not(feature = "insecure-test-hooks"))]
fn insecure_no_seccomp() -> bool {
    false
}

/// Starts `spec.program` in a landjail. See the module documentation for what is enforced.
///
/// The returned jail's `listeners` are the proxy's (127.0.0.1 and, where IPv6 exists, ::1, on
/// `spec.proxy_port`, or a kernel-chosen port when it is 0), in non-blocking mode, ready for
/// `tokio::net::TcpListener::from_std`; they are the only TCP destinations the target can reach
/// besides servers it started itself on loopback. Works with or without a tokio runtime (the
/// supervisor is a plain thread); [`RunningJail::wait`] needs one.
///
/// The target is killed when boundary dies (`PR_SET_PDEATHSIG`), which Linux ties to the
/// *thread* that started it: call this from a thread that lives as long as the jail (the main
/// thread), not from a short-lived one such as a `spawn_blocking` task.
///
/// The calling process becomes a child subreaper: jailed processes whose parent exits are
/// reparented to it, and dropping the returned jail kills those still running (children under
/// more seccomp filters than the caller that are not another landjail's target).
pub fn start(spec: &JailSpec, opts: &LandjailOptions) -> Result<RunningJail, JailError> {
    let writable = crate::writable::plan(spec)?;
    Ok(start_inner(spec, opts, writable.as_deref())?)
}

fn start_inner(
    spec: &JailSpec,
    opts: &LandjailOptions,
    writable: Option<&[PathBuf]>,
) -> Result<RunningJail, LandjailError> {
    if spec.program.is_empty() {
        return Err(LandjailError::NoCommand);
    }
    let abi = check_abi()?;
    check_notif_sizes()?;
    let (listeners, port) = bind_listeners(spec.proxy_port)?;
    let mut allowed = HashSet::new();
    for l in &listeners {
        if let Ok(a) = l.local_addr() {
            allowed.insert(a);
        }
    }
    let ruleset = landlock_rules::ruleset(abi, port, opts.deny_bind, writable)?;
    let (parent_sock, child_sock) = UnixStream::pair().map_err(|source| LandjailError::Setup {
        what: "creating the socketpair for the seccomp listener",
        source,
    })?;
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| {
            LandjailError::Setup {
                what: "creating the pipe for the child's failure report",
                source: e.into(),
            }
        })?;
    let connects = Arc::new(crate::attribution::ConnectLog::default());
    let diag = supervisor::diag::open().map_err(|source| LandjailError::Setup {
        what: "creating a sock_diag socket (to name the process behind each request)",
        source,
    })?;
    let attributor = crate::attribution::Attributor::new(diag, connects.clone(), false);
    let policy = Arc::new(supervisor::Policy {
        net: supervisor::Net::Host { proxy: allowed },
        unix: supervisor::unix::UnixPolicy::new(&spec.hide_paths, &spec.unix_sockets),
        jail_listeners: std::sync::Mutex::new(HashSet::new()),
        files: Some(supervisor::meta::WritableRoots::new(
            landlock_rules::writable_roots(writable)?,
        )),
        nested_mounts: false,
        connects,
    });
    std::thread::Builder::new()
        .name("landjail-supervisor".into())
        .spawn(move || {
            let notify = match supervisor::take_listener(&parent_sock, None) {
                Ok(fd) => fd,
                Err(e) => {
                    debug!(error = %e, "landjail supervisor: no listener taken");
                    return;
                }
            };
            drop(parent_sock);
            supervisor::serve(notify, policy);
        })
        .map_err(|source| LandjailError::Setup {
            what: "starting the supervisor thread",
            source,
        })?;

    for p in &spec.hide_paths {
        if let Ok(m) = std::fs::metadata(p) {
            if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
                warn!(
                    path = %p.display(),
                    "landjail cannot hide this file from the jailed command (no mount namespace); \
                     use --jail-type nsjail to hide it"
                );
            }
        }
    }
    let orphans = orphans::Orphans::adopt().map_err(|source| LandjailError::Setup {
        what: "becoming the subreaper of the jailed processes",
        source,
    })?;
    let tty = crate::process::foreground_terminal();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let setup = child::ChildSetup {
        ruleset,
        sock: child_sock,
        report: report_w,
        program: filter::program(),
        last_cap: crate::sys::cap_last_cap(),
        tty,
        insecure_no_seccomp: insecure_no_seccomp(),
        parent_pid: std::process::id() as libc::pid_t,
    };
    // SAFETY: `setup.run` only makes raw syscalls on data prepared before the fork (see
    // child.rs); it allocates nothing and takes no locks.
    unsafe { crate::sys::pre_exec(&mut cmd, move || setup.run()) };
    // From here on a signal must reach the target (or, SIGHUP, boundary's reload), not kill
    // boundary by default before `RunningJail` exists.
    crate::process::catch_early();
    let starting = orphans.starting();
    let spawned = cmd.spawn();
    // Closes the parent's copies of the child's descriptors (held by `setup`).
    drop(cmd);
    let child = spawned.map_err(|source| match ChildFailure::read(&report_r) {
        Some(failure) => LandjailError::Confine {
            program: spec.program.clone(),
            failure,
        },
        None => LandjailError::Spawn {
            program: spec.program.clone(),
            source,
        },
    })?;
    info!(pid = child.id(), port, abi, "landjail: target started");
    let orphans = orphans.target(starting, child.id());
    let jail = RunningJail::new(child, listeners).map_err(|source| LandjailError::Setup {
        what: "opening a pidfd for the target",
        source,
    })?;
    Ok(jail
        .reclaim_terminal(tty)
        .keep_alive(orphans)
        .with_attributor(attributor))
}
