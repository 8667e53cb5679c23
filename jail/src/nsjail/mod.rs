//! nsjail: a jail whose only network path is the proxy, built from namespaces alone.
//!
//! The target runs in new user (unless [`NsjailOptions::no_user_namespace`]), network, PID
//! and mount namespaces.
//! The network namespace is never connected to the host: it has loopback, and IPv4/IPv6 default
//! routes into a veth pair whose both ends stay inside, so every connect() finds a route. Policy
//! routing makes every address local for TCP and for UDP to port 53, so those packets come back
//! in through `lo`, where an `inet` table's prerouting chain hands all TCP (except to the
//! jail's own loopback) to the proxy's listener and DNS (UDP and TCP 53) to the DNS stub by
//! TPROXY (the packets keep their addresses: no NAT, no connection tracking), and a postrouting
//! filter drops every packet that would leave by any interface other than `lo`. The listening
//! sockets (transparent) are created inside the namespace and handed to `boundary` over a
//! socketpair (SCM_RIGHTS), so the proxy accepts in the jail and dials upstream from the host. Nothing on the host changes, a
//! crash leaks nothing (the namespaces die with their last process), and any number of jails
//! can use the same proxy port at once.
//!
//! Process tree: `boundary` → helper (re-executed `boundary`, in the new user/net/mount
//! namespaces, waits for init) → init (PID 1 of the new PID namespace; forwards signals, reaps)
//! → target. Each step waits for the previous one by a handshake (control socket, setup pipe);
//! there are no sleeps. The helper also forks the sender (`boundary-send`, outside the PID
//! namespace), which carries out the supervisor's checked sends and connects with the jail's
//! credentials.
//!
//! Links, addresses and routes (rtnetlink) and the nftables ruleset (one nf_tables batch) are
//! made by the helper itself over netlink (`net`, `nft`): it holds CAP_NET_ADMIN in the jail's
//! user namespace. Before issue 15 it ran `ip` and `nft`; their two program starts and nft's
//! parser were about a quarter of the start's CPU. A test loads the same ruleset with `nft`
//! and compares what the kernel holds.
//!
//! Without user namespaces (the host forbids them, or `--no-user-namespace`) an unprivileged
//! caller's helper gets `CAP_SYS_ADMIN` and `CAP_NET_ADMIN` from passwordless sudo or from file
//! capabilities on boundary and builds the jail without one; the target still runs as the
//! caller with no capabilities (see `privilege`).
//!
//! Identity: the user namespace maps only the caller's uid and gid (to themselves), so the
//! target sees its real ids and files keep their owners; `setgroups` is denied, as the kernel
//! requires for an unprivileged map.
//!
//! Terminal: when boundary is the foreground process group of its terminal, the target gets a
//! process group of its own and becomes the foreground group (so Ctrl-C reaches only the
//! target, and an interactive shell works); boundary, the helper and init stay in a background
//! group and boundary takes the terminal back when the jail exits. Ctrl-Z job control of the
//! jailed command itself is not supported (use the jailed shell's own job control).
//!
//! Unix sockets: the mount namespace shares the host's files, so every `connect()` goes to
//! boundary's connect supervisor (the jail's init installs the seccomp filter and hands its
//! listener to boundary through the helper); it applies the Unix socket policy
//! (`jail/src/supervisor/unix.rs`) and connects TCP, UDP and netlink sockets as asked, since
//! they live in the jail's network namespace where netfilter decides. Sends that name a
//! destination (`sendto` with an address, `sendmsg`, `sendmmsg`) are decided the same way.
//! Both are carried out by a sender process the helper forks inside the jail's user namespace
//! with the jail's credentials (`supervisor::sender`), never by boundary.
//!
//! Kernel files: init builds the jail's own view of `/proc`, `/sys` and `/dev` (read-only and
//! masked kernel files, a fresh read-only sysfs, a minimal `/dev`), gives the target new UTS,
//! IPC and cgroup namespaces and a fresh session keyring, and binds boundary's own files
//! read-only (see `mounts`).
//!
//! Host files: the host's root filesystem is the jail's, with the caller's uid. Started by
//! root, the target would be uid 0 for every host file, so init makes the whole tree read-only
//! but for the writable list (`crate::writable`, built in `rootfs`) unless the caller opted out.
//!
//! Known limits, by design: TCP and UDP
//! to a link-local IPv6 address fail instead of being intercepted (replies to a scoped
//! link-local source would leave by the dead-end device and are dropped), which still lets
//! nothing out.

pub(crate) mod filter;
pub(crate) mod helper;
mod mounts;
mod net;
mod nft;
mod pid1;
pub(crate) mod privilege;
mod rootfs;
mod sender;
pub(crate) mod wire;

use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dns::{self, DnsMode, DnsSockets};
use crate::process::{foreground_terminal, RunningJail};
use crate::reexec::HELPER_ARG;
use crate::{supervisor, JailError, JailSpec, NsjailOptions};
use wire::{Failure, Reply, Request, SocketKind};

/// Test builds only: set to `1` to start the jail WITHOUT its netfilter rules, so a test can
/// prove that `boundary selftest` notices broken enforcement.
#[cfg(feature = "insecure-test-hooks")]
pub const INSECURE_SKIP_NETFILTER_ENV: &str = "BOUNDARY_INSECURE_TEST_SKIP_NETFILTER";

const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Finds `tool` in the system directories only (what a privileged caller runs).
pub(crate) fn find_system_tool(tool: &str) -> Option<PathBuf> {
    TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn skip_netfilter() -> bool {
    #[cfg(feature = "insecure-test-hooks")]
    {
        if std::env::var_os(INSECURE_SKIP_NETFILTER_ENV).is_some_and(|v| v == "1") {
            tracing::warn!("INSECURE test hook: the jail has NO netfilter rules");
            return true;
        }
    }
    false
}

/// The host's resolvers (`nameserver` lines of /etc/resolv.conf), port 53.
fn host_resolvers() -> Result<Vec<std::net::SocketAddr>, JailError> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| JailError::io("reading /etc/resolv.conf for --use-real-dns", e))?;
    let list = dns::parse_resolv_conf(&text);
    if list.is_empty() {
        return Err(JailError::Setup(
            "--use-real-dns: /etc/resolv.conf names no nameserver".into(),
        ));
    }
    Ok(list)
}

/// Starts the jail: namespaces, network, listeners, DNS stub, then the target. Call it before
/// the tokio runtime starts or from any thread that outlives the jail; the returned
/// [`RunningJail`] is awaited inside a runtime.
pub fn start(spec: &JailSpec, opts: &NsjailOptions) -> Result<RunningJail, JailError> {
    // From here on a SIGINT/SIGTERM must reach the target, not kill boundary by default.
    crate::process::catch_early();
    let skip_nf = skip_netfilter();
    let as_root = nix::unistd::geteuid().is_root();
    if opts.nested_sandboxes && opts.no_user_namespace {
        return Err(filter::nested_without_user_namespace());
    }
    // Without a user namespace an unprivileged caller needs a privileged helper.
    let mut route = None;
    if opts.no_user_namespace && !as_root {
        route = Some(privilege::available().ok_or_else(|| {
            privilege::unavailable(
                "--no-user-namespace was given but boundary is not running as root".into(),
            )
        })?);
    }

    let dns_mode = if opts.use_real_dns {
        DnsMode::Forward(host_resolvers()?)
    } else {
        DnsMode::Answer
    };
    let tty = foreground_terminal();
    let mut req = Request {
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        env_remove: spec.env_remove.clone(),
        proxy_port: spec.proxy_port,
        user_namespace: !opts.no_user_namespace,
        hide_paths: spec.hide_paths.clone(),
        readonly_paths: spec.readonly_paths.clone(),
        writable_paths: crate::writable::plan(spec)?,
        tty_fd: tty,
        skip_netfilter: skip_nf,
        nested_sandboxes: opts.nested_sandboxes,
    };
    let (mut child, ours, reply) = loop {
        if privilege::no_terminal_handover(route.as_ref()) {
            // The helper's environment is sudo's: the target's comes whole in the request.
            req.env = std::env::vars_os()
                .filter(|(k, _)| !spec.env_remove.contains(k))
                .chain(spec.env.iter().cloned())
                .collect();
            req.tty_fd = None;
        }
        let (mut child, mut ours) = spawn_helper(route.as_ref())?;
        let reply = exchange(&mut child, &mut ours, &req)?;
        match reply {
            Reply::Failed(Failure::UserNamespace { detail }) if !as_root && route.is_none() => {
                let _ = child.wait();
                if opts.nested_sandboxes {
                    return Err(filter::nested_without_user_namespace());
                }
                let way = privilege::available().ok_or_else(|| privilege::unavailable(detail))?;
                tracing::info!(
                    ?way,
                    "user namespaces are refused here: building the jail without one"
                );
                route = Some(way);
                req.user_namespace = false;
            }
            reply => break (child, ours, reply),
        }
    };
    let (init_pid, sockets) = match reply {
        Reply::Ready { init_pid, sockets } => (init_pid, sockets),
        Reply::Failed(failure) => {
            let _ = child.wait();
            return Err(failure.into());
        }
    };
    let mut listeners = Vec::new();
    let mut dns_sockets = DnsSockets::default();
    let mut init_pidfd = None;
    let (mut listener, mut diag, mut sender, mut inet_diag) = (None, None, None, None);
    for (kind, fd) in sockets {
        match kind {
            SocketKind::SeccompListener => listener = Some(fd),
            SocketKind::UnixDiag => diag = Some(fd),
            SocketKind::InetDiag => inet_diag = Some(fd),
            SocketKind::Sender => sender = Some(fd),
            SocketKind::ProxyTcp => listeners.push(TcpListener::from(fd)),
            SocketKind::DnsUdp => dns_sockets.udp.push(UdpSocket::from(fd)),
            SocketKind::DnsTcp => dns_sockets.tcp.push(TcpListener::from(fd)),
            SocketKind::InitPidfd => init_pidfd = Some(fd),
        }
    }
    let Some(init_pidfd) = init_pidfd else {
        return Err(fail(
            &mut child,
            JailError::Setup("the jail helper sent no pidfd for init".into()),
        ));
    };
    let (Some(listener), Some(diag), Some(sender), Some(inet_diag)) =
        (listener, diag, sender, inet_diag)
    else {
        return Err(fail(
            &mut child,
            JailError::Setup(
                "the jail helper sent no seccomp listener, sock_diag sockets or sender channel"
                    .into(),
            ),
        ));
    };
    let connects = std::sync::Arc::new(crate::attribution::ConnectLog::default());
    let attributor = crate::attribution::Attributor::new(inet_diag, connects.clone(), true);
    let policy = std::sync::Arc::new(supervisor::Policy {
        net: supervisor::Net::Namespace {
            diag,
            sender: std::sync::Arc::new(supervisor::sender::Sender::new(sender)),
        },
        unix: supervisor::unix::UnixPolicy::new(&spec.hide_paths, &spec.unix_sockets),
        jail_listeners: Default::default(),
        files: None,
        nested_mounts: opts.nested_sandboxes && as_root,
        connects: connects.clone(),
    });
    if let Err(e) = supervisor::spawn(listener, policy) {
        return Err(fail(
            &mut child,
            JailError::io("starting the jail's connect supervisor", e),
        ));
    }
    let dns = dns::spawn(dns_sockets, dns_mode)
        .map_err(|e| JailError::io("starting the jail's DNS stub", e))?;
    let jail = RunningJail::new(child, listeners)
        .map_err(|e| JailError::io("watching the jail helper", e))?
        .forward_signals_to(init_pidfd, init_pid)
        .reclaim_terminal(req.tty_fd)
        .keep_alive(ours)
        .keep_alive(dns)
        .with_attributor(attributor);
    tracing::debug!(init_pid, "nsjail started");
    Ok(jail)
}

/// Ends a helper that failed `err`'s way and returns `err`.
fn fail(child: &mut std::process::Child, err: JailError) -> JailError {
    let _ = child.kill();
    let _ = child.wait();
    err
}

/// Starts the namespace helper: this executable re-executed (with the control socket
/// inherited), or through sudo (which connects back, see `privilege`).
fn spawn_helper(
    route: Option<&privilege::Route>,
) -> Result<(std::process::Child, UnixStream), JailError> {
    if let Some(privilege::Route::Sudo(sudo)) = route {
        return privilege::spawn_via_sudo(sudo);
    }
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| JailError::io("creating the jail's control socket", e))?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("boundary-jail")
        .arg(HELPER_ARG)
        .arg(their_fd.to_string())
        .stdin(Stdio::inherit())
        .process_group(0);
    // The helper's end of the socketpair (created close-on-exec) stays open in the helper.
    crate::sys::inherit_across_exec(&mut cmd, their_fd);
    let child = cmd
        .spawn()
        .map_err(|e| JailError::io("starting the jail helper (/proc/self/exe)", e))?;
    Ok((child, ours))
}

/// Sends the request and reads the helper's reply.
fn exchange(
    child: &mut std::process::Child,
    ours: &mut UnixStream,
    req: &Request,
) -> Result<Reply, JailError> {
    if let Err(e) = wire::send_frame(ours, &req.encode()) {
        return Err(fail(child, JailError::io("sending the jail request", e)));
    }
    match wire::recv_reply(ours) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            let status = child.wait().ok();
            Err(JailError::Setup(format!(
                "the jail helper exited before the jail was ready ({status:?})"
            )))
        }
        Err(e) => Err(fail(
            child,
            JailError::io("reading the jail helper's reply", e),
        )),
    }
}
