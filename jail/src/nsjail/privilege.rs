//! nsjail for an unprivileged caller on a host that forbids user namespaces (containers whose
//! seccomp profile refuses `CLONE_NEWUSER`, `user.max_user_namespaces=0`, Ubuntu's AppArmor
//! restriction): the namespace helper gets `CAP_SYS_ADMIN` and `CAP_NET_ADMIN` another way and
//! builds the jail without a user namespace, as root's `--no-user-namespace` does.
//!
//! Two ways, tried in this order, only after the user namespace itself failed (or with
//! `--no-user-namespace`):
//!
//! - **File capabilities**: boundary's executable carries `cap_sys_admin,cap_net_admin+p`
//!   (`setcap`). The main process drops them at start ([`note_startup_capabilities`], before
//!   any thread: the proxy never holds them); the re-executed helper gets them back from the
//!   file.
//! - **sudo**: `sudo -n true` works. The helper is started as `sudo -n -- <boundary> <helper
//!   arg> --sudo <socket name>` with sudo's own reset environment (no `-E`, unlike Go's nsjail,
//!   which re-runs the whole firewall under sudo and needs the caller's `PATH`: our helper needs
//!   nothing from the environment). sudo closes every descriptor above 2, so the helper
//!   connects back to an abstract Unix socket boundary listens on; each end checks the other's
//!   credentials (boundary: the peer is root; the helper: the peer is the user sudo names in
//!   `SUDO_UID`/`SUDO_GID`) before a byte is sent. The helper then becomes that user (uid, gid
//!   and the supplementary groups boundary's process has) keeping only the two capabilities,
//!   with its bounding set cut down to them.
//!
//! Either way the helper then runs as the calling user with exactly `CAP_SYS_ADMIN` and
//! `CAP_NET_ADMIN` in the initial user namespace (not dumpable, so the user cannot ptrace it),
//! and the jail's init drops them (and sets `no_new_privs`) before the target starts: the target
//! runs as the calling user with no capabilities, and every other nsjail hardening holds as in
//! the root mode. The request comes from a caller the helper must not trust beyond what it could
//! do itself (anyone may run a capability-holding binary with a crafted control socket):
//! [`confine_request`] refuses the test hook and nested sandboxes, the helper starts no program
//! with its capabilities (links, routes and rules are its own netlink requests), and everything
//! the request may still choose (hidden and read-only paths, the program, its environment) only
//! narrows what the calling user could already do, in a mount namespace nobody else uses.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Uid};
use rustix::thread::CapabilitySet;

use super::wire::{Failure, Request};
use crate::JailError;

/// What the helper holds to build a jail without a user namespace, and nothing else.
const HELPER_CAPS: CapabilitySet = CapabilitySet::SYS_ADMIN.union(CapabilitySet::NET_ADMIN);

/// boundary was started (not as root) holding [`HELPER_CAPS`] in its permitted set.
static STARTED_WITH_CAPS: AtomicBool = AtomicBool::new(false);

/// The fix when root's helper cannot create a user namespace.
const ROOT_HINT: &str = "Fix: allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and \
user.max_user_namespaces > 0; on Ubuntu 23.10+ also kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor \
profile for boundary; in a container, a seccomp profile that permits unshare/clone with CLONE_NEWUSER), or run as \
root with --no-user-namespace, or use --jail-type landjail";

/// The three ways out for an unprivileged caller without user namespaces.
const USER_HINT: &str = "Fix, one of: (1) allow user namespaces: `sudo sysctl -w user.max_user_namespaces=15000` \
(Debian kernels also `kernel.unprivileged_userns_clone=1`; Ubuntu 23.10+ \
`kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for boundary; in a container, a seccomp \
profile that permits unshare/clone with CLONE_NEWUSER); (2) let boundary build the jail without one: passwordless \
sudo for this user (`sudo -n true` must succeed), or file capabilities on boundary: \
`sudo setcap cap_sys_admin,cap_net_admin+p \"$(command -v boundary)\"`; (3) use the Landlock jail: \
`--jail-type landjail`";

/// How to fix a jail that needs a user namespace the host refuses, for whoever runs boundary.
pub(crate) fn no_user_namespace_hint() -> String {
    if nix::unistd::geteuid().is_root() {
        ROOT_HINT.into()
    } else {
        USER_HINT.into()
    }
}

/// The error when neither a user namespace nor a privileged helper is available.
pub(crate) fn unavailable(detail: String) -> JailError {
    JailError::Namespaces {
        detail: format!("{detail}; boundary has no passwordless sudo (`sudo -n true` failed) and no file capabilities (cap_sys_admin, cap_net_admin)"),
        hint: USER_HINT.into(),
    }
}

/// Called first thing in `main` (single-threaded) unless this is the helper: remembers whether
/// a non-root boundary holds [`HELPER_CAPS`], then drops every capability of this process
/// (the proxy and everything else in it runs without them; the helper re-executed from a file
/// with capabilities gets them back). Capabilities a parent handed down as ambient ones would
/// not come back that way, so those stay permitted (effective cleared) for the helper.
pub(crate) fn note_startup_capabilities() {
    if nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return;
    }
    let held = crate::sys::caps_permitted(HELPER_CAPS);
    STARTED_WITH_CAPS.store(held, Ordering::Relaxed);
    let ambient = held
        && [CapabilitySet::SYS_ADMIN, CapabilitySet::NET_ADMIN]
            .into_iter()
            .all(|c| rustix::thread::capability_is_in_ambient_set(c).unwrap_or(false));
    let dropped = if ambient {
        crate::sys::drop_effective_capabilities().map(|_| ())
    } else {
        crate::sys::keep_only_capabilities(CapabilitySet::empty())
    };
    if let Err(e) = dropped {
        eprintln!("boundary: cannot drop the capabilities it was started with: {e}");
        std::process::exit(125);
    }
}

/// How the privileged helper is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// boundary's executable (or its parent) gave it the capabilities: re-execute as usual.
    FileCapabilities,
    /// Through this `sudo`.
    Sudo(PathBuf),
}

/// Which way a privileged helper can be had, checked for real (`sudo -n true` is run), or
/// `None`.
pub(crate) fn available() -> Option<Route> {
    if STARTED_WITH_CAPS.load(Ordering::Relaxed) {
        return Some(Route::FileCapabilities);
    }
    let sudo = super::find_system_tool("sudo")?;
    let works = Command::new(&sudo)
        .args(["-n", "true"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tracing::debug!(sudo = %sudo.display(), works, "probed passwordless sudo");
    works.then_some(Route::Sudo(sudo))
}

/// Through sudo the helper is in a session of its own, so the target cannot become the
/// terminal's foreground process group.
pub(crate) fn no_terminal_handover(route: Option<&Route>) -> bool {
    matches!(route, Some(Route::Sudo(_)))
}

/// Starts the helper through `sudo` and returns it with its control socket, once it has
/// connected back and proved to be root.
pub(crate) fn spawn_via_sudo(sudo: &PathBuf) -> Result<(Child, UnixStream), JailError> {
    let exe = std::env::current_exe()
        .map_err(|e| JailError::io("locating boundary's executable for sudo", e))?;
    let name = format!(
        "boundary-jail-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| JailError::io("naming the helper's socket", e))?;
    let listener = UnixListener::bind_addr(&addr)
        .map_err(|e| JailError::io("listening for the jail helper started by sudo", e))?;
    let mut cmd = Command::new(sudo);
    cmd.args(["-n", "--"])
        .arg(&exe)
        .arg(crate::reexec::HELPER_ARG)
        .arg(crate::reexec::SUDO_ARG)
        .arg(&name)
        .arg0("boundary-jail")
        .stdin(Stdio::inherit());
    crate::sys::inherit_across_exec(&mut cmd, 0);
    // A session of its own: sudo with a controlling terminal (and `use_pty`, Debian's default)
    // would run the helper on a pseudo-terminal of its own and, in a background process group,
    // give it no input at all. Without one it passes boundary's stdio through as it is; the
    // target then reads the terminal without owning it (Ctrl-C reaches boundary, which forwards
    // it), see `no_terminal_handover`.
    let mut child = crate::sys::spawn_in_new_session(&mut cmd)
        .map_err(|e| JailError::io(format!("starting {}", sudo.display()), e))?;
    match accept_root(&listener, &child) {
        Ok(sock) => Ok((child, sock)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Waits for a connection from a root process (anyone else is turned away) while `child`
/// (sudo) lives.
fn accept_root(listener: &UnixListener, child: &Child) -> Result<UnixStream, JailError> {
    let pidfd =
        crate::sys::pidfd_open(child.id()).map_err(|e| JailError::io("watching sudo", e))?;
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(JailError::io("waiting for the jail helper", e.into())),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let (sock, _) = listener
                .accept()
                .map_err(|e| JailError::io("accepting the jail helper", e))?;
            match getsockopt(&sock, PeerCredentials) {
                Ok(c) if c.uid() == 0 => return Ok(sock),
                _ => continue,
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Err(JailError::Setup(format!(
                "sudo ended before the jail helper started (see its message above); {}",
                "check that `sudo -n true` works for this user"
            )));
        }
    }
}

/// The helper started by sudo (as root): connects back to boundary, checks that boundary runs
/// as the user sudo names, and becomes that user keeping only [`HELPER_CAPS`].
pub(crate) fn connect_from_sudo(name: &OsString) -> Result<UnixStream, String> {
    let id = |var: &str| -> Result<u32, String> {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                format!("{var} is not set: this mode is only for boundary started through sudo")
            })
    };
    let (uid, gid) = (
        Uid::from_raw(id("SUDO_UID")?),
        Gid::from_raw(id("SUDO_GID")?),
    );
    if uid.is_root() {
        return Err("sudo was run by root: the helper has nobody to run the jail as".into());
    }
    use std::os::unix::ffi::OsStrExt;
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("naming boundary's socket: {e}"))?;
    let sock =
        UnixStream::connect_addr(&addr).map_err(|e| format!("connecting to boundary: {e}"))?;
    let peer = getsockopt(&sock, PeerCredentials)
        .map_err(|e| format!("reading boundary's credentials: {e}"))?;
    if peer.uid() != uid.as_raw() || peer.gid() != gid.as_raw() {
        return Err(format!(
            "the socket's owner ({}:{}) is not the user sudo runs for ({uid}:{gid})",
            peer.uid(),
            peer.gid()
        ));
    }
    let groups = process_groups(peer.pid(), uid)?;
    crate::sys::limit_bounding_set(HELPER_CAPS)
        .map_err(|e| format!("limiting the bounding set: {e}"))?;
    crate::sys::become_user_keeping_capabilities(uid, gid, &groups)
        .map_err(|e| format!("becoming uid {uid}: {e}"))?;
    crate::sys::keep_only_capabilities(HELPER_CAPS)
        .map_err(|e| format!("keeping cap_sys_admin and cap_net_admin: {e}"))?;
    // sudo's environment (root's HOME, SUDO_*) is not the target's: boundary sends that whole.
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    Ok(sock)
}

/// The supplementary groups of process `pid`, which must run as `uid`.
fn process_groups(pid: i32, uid: Uid) -> Result<Vec<Gid>, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading boundary's groups: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    if field("Uid:").iter().any(|u| *u != uid.to_string()) {
        return Err(format!(
            "process {pid} is not boundary running as uid {uid}"
        ));
    }
    field("Groups:")
        .iter()
        .map(|g| g.parse().map(Gid::from_raw))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("boundary's groups: {e}"))
}

/// In the helper, for a jail without a user namespace built by a non-root user: holds exactly
/// [`HELPER_CAPS`] (or fails with the three ways out), and refuses the test hook and nested
/// sandboxes.
pub(crate) fn confine_request(req: &Request) -> Result<(), Failure> {
    if req.user_namespace || nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if !crate::sys::caps_permitted(HELPER_CAPS)
        || crate::sys::keep_only_capabilities(HELPER_CAPS).is_err()
    {
        return Err(Failure::Namespaces {
            detail: "a jail without a user namespace needs cap_sys_admin and cap_net_admin, which the jail helper does not hold".into(),
            hint: USER_HINT.into(),
        });
    }
    refuse_unprivileged_options(req)
}

/// Refuses the test hook and nested sandboxes (boundary itself refuses them without a user
/// namespace). The helper runs no program but the target (links and ruleset are netlink
/// requests), so nothing in the request chooses what runs with its privileges.
fn refuse_unprivileged_options(req: &Request) -> Result<(), Failure> {
    if req.skip_netfilter {
        return Err("the privileged jail helper refuses the insecure test hook".into());
    }
    if req.nested_sandboxes {
        return Err(
            "the privileged jail helper refuses nested_sandboxes: they need the jail's own user \
             namespace"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_privileged_helper_refuses_the_test_hook_and_nested_sandboxes() {
        let mut req = Request::default();
        refuse_unprivileged_options(&req).unwrap();
        req.skip_netfilter = true;
        assert!(refuse_unprivileged_options(&req).is_err());
        req.skip_netfilter = false;
        req.nested_sandboxes = true;
        assert!(refuse_unprivileged_options(&req).is_err());
    }

    #[test]
    fn the_error_without_user_namespaces_names_the_three_ways() {
        let text = unavailable("creating a user namespace: EPERM".into()).to_string();
        for way in [
            "max_user_namespaces",
            "sudo -n true",
            "setcap",
            "--jail-type landjail",
        ] {
            assert!(text.contains(way), "{way}: {text}");
        }
    }
}
