//! The Unix socket policy: which filesystem Unix sockets a jailed process may connect to.
//!
//! Decided when the jail calls `connect()`, on the socket actually connected, never on the path
//! string alone. The path is resolved as the target would resolve it into an `O_PATH`
//! descriptor (the connect is later made through that descriptor, so the socket checked is the
//! socket connected), and the socket is identified by its file `(st_dev, st_ino)` and by the
//! listener behind it, read from the kernel (`sock_diag`): which network namespace it lives in,
//! and the path it was bound to. The bound name survives renames, hard links and bind mounts
//! of the socket file, so Docker's socket reached under another name is still Docker's. When
//! the listener is in a network namespace `sock_diag` cannot see and a rule would allow it,
//! its bound name is read with `getpeername()` on a connection of the supervisor's own.
//!
//! In this order:
//! 1. **Never**: boundary's hidden sockets (the agent's audit socket): its file at start, its
//!    file now, and any listener bound to its path (the agent re-creating it). No config key
//!    can allow it.
//! 2. **The jail's own** listeners are allowed (language servers, test servers the agent
//!    starts): nsjail, a listener in the jail's network namespace; landjail, a socket a jailed
//!    process called `listen()` on.
//! 3. **Config allow** (`unix_socket_allow`): allowed, also over the built-in deny list.
//! 4. **Deny** (the built-in list of container and orchestration runtimes, system and session
//!    managers, and `unix_socket_deny`): refused.
//! 5. **Built-in allow**: the SSH agent (`$SSH_AUTH_SOCK` of boundary's environment).
//! 6. **Everything else** is a host service's socket: refused by default (a relay on one is a
//!    way out the proxy never sees); `unix_socket_default: allow` lets it through.
//!
//! An entry ending in `/` covers every socket under that directory (by name); any other entry
//! is one socket file (by identity, and by name).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use tracing::{debug, info, warn};

use super::diag::{self, UnixSock};

/// The Unix socket rules a caller adds to the built-in ones (from boundary's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSocketRules {
    /// Sockets (or directories, with a trailing `/`) the jail may connect to, even if built-in
    /// rules deny them.
    pub allow: Vec<PathBuf>,
    /// More sockets (or directories, trailing `/`) the jail must not connect to.
    pub deny: Vec<PathBuf>,
    /// Allow sockets of host services that no rule names (default: refuse them).
    pub default_allow: bool,
}

/// Runtime sockets by file name, wherever they are (rootless and non-default installs).
const DENY_NAMES: &[&str] = &[
    "docker.sock",
    "dockershim.sock",
    "cri-dockerd.sock",
    "containerd.sock",
    "containerd.sock.ttrpc",
    "podman.sock",
    "crio.sock",
    "buildkitd.sock",
    "libvirt-sock",
    "libvirt-admin-sock",
    "virtqemud-sock",
    "snapd.socket",
    "snapd-snap.socket",
    "kubelet.sock",
    "firecracker.socket",
];

/// The built-in deny list: container and orchestration runtimes, and the system managers that
/// start processes outside the jail on request (systemd, D-Bus, snapd). `$XDG_RUNTIME_DIR/` and
/// `~/` are expanded at start; a trailing `/` covers the directory.
pub const BUILTIN_DENY: &[&str] = &[
    // Docker (rootful, rootless, Docker Desktop for Linux) and its containerd.
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/docker/",
    "/var/run/docker/",
    "$XDG_RUNTIME_DIR/docker.sock",
    "$XDG_RUNTIME_DIR/docker/",
    "~/.docker/",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
    // containerd (also k3s and RKE2), CRI-O, Podman, BuildKit, kubelet.
    "/run/containerd/",
    "/var/run/containerd/",
    "$XDG_RUNTIME_DIR/containerd/",
    "/run/k3s/",
    "/var/run/k3s/",
    "/run/crio/",
    "/var/run/crio/",
    "/run/podman/",
    "/var/run/podman/",
    "$XDG_RUNTIME_DIR/podman/",
    "/run/buildkit/",
    "/var/run/buildkit/",
    "$XDG_RUNTIME_DIR/buildkit/",
    "/var/lib/kubelet/",
    // LXD, Incus, libvirt.
    "/var/lib/lxd/",
    "/var/snap/lxd/",
    "/var/lib/incus/",
    "/run/incus/",
    "/run/libvirt/",
    "/var/run/libvirt/",
    "$XDG_RUNTIME_DIR/libvirt/",
    // systemd (system and user managers start units on request), D-Bus buses, snapd.
    "/run/systemd/",
    "/var/run/systemd/",
    "$XDG_RUNTIME_DIR/systemd/",
    "/run/dbus/",
    "/var/run/dbus/",
    "$XDG_RUNTIME_DIR/bus",
    "/run/snapd.socket",
    "/run/snapd-snap.socket",
];

/// One rule entry: a socket file, or every socket under a directory.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    dir: bool,
}

impl Entry {
    fn parse(p: &Path) -> Entry {
        let bytes = p.as_os_str().as_bytes();
        let dir = bytes.ends_with(b"/");
        let trimmed = if dir && bytes.len() > 1 {
            PathBuf::from(OsStr::from_bytes(&bytes[..bytes.len() - 1]))
        } else {
            p.to_path_buf()
        };
        Entry { path: trimmed, dir }
    }

    /// Whether the socket file `file`, known by `names`, is this entry.
    fn matches(&self, file: (u64, u64), names: &[Vec<u8>]) -> bool {
        let me = self.path.as_os_str().as_bytes();
        if self.dir {
            return names
                .iter()
                .any(|n| n.len() > me.len() && n.starts_with(me) && n[me.len()] == b'/');
        }
        if names.iter().any(|n| n.as_slice() == me) {
            return true;
        }
        std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == file)
    }
}

/// The policy, built once per jail.
#[derive(Debug)]
pub(crate) struct UnixPolicy {
    never: Vec<(Entry, Option<(u64, u64)>)>,
    allow: Vec<Entry>,
    deny: Vec<Entry>,
    builtin_allow: Vec<Entry>,
    default_allow: bool,
}

/// Expands `$XDG_RUNTIME_DIR/` and `~/` in a built-in entry; `None` when the variable is unset.
fn expand(entry: &str, home: Option<&Path>, runtime: Option<&Path>) -> Option<PathBuf> {
    if let Some(rest) = entry.strip_prefix("$XDG_RUNTIME_DIR/") {
        let mut s = runtime?.as_os_str().to_owned();
        s.push("/");
        s.push(rest);
        Some(PathBuf::from(s))
    } else if let Some(rest) = entry.strip_prefix("~/") {
        let mut s = home?.as_os_str().to_owned();
        s.push("/");
        s.push(rest);
        Some(PathBuf::from(s))
    } else {
        Some(PathBuf::from(entry))
    }
}

impl UnixPolicy {
    /// `never`: sockets no rule may open (the agent's audit socket and other hidden paths).
    pub(crate) fn new(never: &[PathBuf], rules: &UnixSocketRules) -> UnixPolicy {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let uid = nix::unistd::getuid().as_raw();
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
        let deny = BUILTIN_DENY
            .iter()
            .filter_map(|e| expand(e, home.as_deref(), Some(&runtime)))
            .chain(rules.deny.iter().cloned())
            .map(|p| Entry::parse(&p))
            .collect();
        let builtin_allow = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(|v| Entry::parse(Path::new(&v)))
            .into_iter()
            .collect();
        UnixPolicy {
            never: never
                .iter()
                .map(|p| {
                    let id = std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
                    (
                        Entry {
                            path: p.clone(),
                            dir: false,
                        },
                        id,
                    )
                })
                .collect(),
            allow: rules.allow.iter().map(|p| Entry::parse(p)).collect(),
            deny,
            builtin_allow,
            default_allow: rules.default_allow,
        }
    }

    /// Decides on the socket file `file`, known by `names` (the path it was bound to and the
    /// path it resolved to), whose listener is the jail's own or not. `Err` carries the reason.
    pub(crate) fn decide(
        &self,
        file: (u64, u64),
        names: &[Vec<u8>],
        jail_own: bool,
    ) -> Result<&'static str, String> {
        for (e, at_start) in &self.never {
            if *at_start == Some(file) || e.matches(file, names) {
                return Err(format!(
                    "it is boundary's hidden socket {} (the agent's audit socket is never reachable from the jail)",
                    e.path.display()
                ));
            }
        }
        if jail_own {
            return Ok("a listener of the jail itself");
        }
        if self.allow.iter().any(|e| e.matches(file, names)) {
            return Ok("allowed by unix_socket_allow");
        }
        if basename_denied(names) {
            return Err(
                "it is a container or orchestration runtime socket (built-in deny list, by name)"
                    .into(),
            );
        }
        if let Some(e) = self.deny.iter().find(|e| e.matches(file, names)) {
            return Err(format!(
                "it matches the deny list entry {}{} (container runtimes, system managers, unix_socket_deny)",
                e.path.display(),
                if e.dir { "/" } else { "" }
            ));
        }
        if self.builtin_allow.iter().any(|e| e.matches(file, names)) {
            return Ok("the SSH agent ($SSH_AUTH_SOCK)");
        }
        if self.default_allow {
            return Ok("unix_socket_default is allow");
        }
        Err("it is a socket of a service outside the jail; add it to unix_socket_allow if the jailed command needs it".into())
    }
}

fn basename_denied(names: &[Vec<u8>]) -> bool {
    names.iter().any(|n| {
        let base = n.rsplit(|&b| b == b'/').next().unwrap_or(n);
        DENY_NAMES.iter().any(|d| base == d.as_bytes())
    })
}

/// Where the supervisor looks for listeners: boundary's network namespace, and (nsjail) the
/// jail's, through a sock_diag socket created inside it.
pub(crate) struct Listeners<'a> {
    /// nsjail: a sock_diag socket in the jail's network namespace.
    pub(crate) jail_ns: Option<&'a OwnedFd>,
    /// landjail: inodes of sockets a jailed process called `listen()` on.
    pub(crate) jail_inodes: Option<&'a Mutex<HashSet<u64>>>,
}

/// Checks a `connect()` to the filesystem socket `path` of thread `tid`; on success, the
/// `O_PATH` descriptor to connect through.
pub(crate) fn check_path(
    policy: &UnixPolicy,
    listeners: &Listeners<'_>,
    tid: u32,
    path: &[u8],
) -> Result<OwnedFd, i32> {
    let fd = open_in_target(tid, path).map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))?;
    let meta = rustix::fs::fstat(&fd).map_err(|e| e.raw_os_error())?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(libc::ECONNREFUSED);
    }
    let file = (meta.st_dev, meta.st_ino);
    let mut names = Vec::new();
    if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        names.push(p.into_os_string().into_encoded_bytes());
    }
    let mut jail_own = false;
    let mut listener_known = false;
    if let Some(jfd) = listeners.jail_ns {
        let found = dump_matching(jfd, file);
        jail_own = !found.is_empty();
        listener_known = jail_own;
        names.extend(found.into_iter().filter_map(|s| s.name));
    }
    if !jail_own {
        if let Ok(host) = diag::open() {
            let found = dump_matching(&host, file);
            listener_known = !found.is_empty();
            if let Some(set) = listeners.jail_inodes {
                let set = set.lock().unwrap_or_else(|p| p.into_inner());
                jail_own = !found.is_empty() && found.iter().all(|s| set.contains(&s.ino));
            }
            names.extend(found.into_iter().filter_map(|s| s.name));
        }
    }
    let shown = String::from_utf8_lossy(path);
    let mut verdict = policy.decide(file, &names, jail_own);
    if verdict.is_ok() && !jail_own && !listener_known {
        // The listener lives in a network namespace we cannot list (a host socket mounted
        // into a container): learn the name it was bound to from the listener itself before
        // letting the jail in, so a runtime socket under another name is still recognised.
        if let Some(name) = bound_name(&fd) {
            names.push(name);
            verdict = policy.decide(file, &names, false);
        }
    }
    match verdict {
        Ok(why) => {
            debug!(path = %shown, tid, why, "jail: Unix socket connect allowed");
            Ok(fd)
        }
        Err(why) => {
            let bound: Vec<String> = names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            warn!(path = %shown, also_known_as = ?bound, tid, "jail: refused a connect to a Unix socket: {why}");
            Err(libc::EACCES)
        }
    }
}

/// The name the listener behind the socket file `fd` was bound to, read by connecting a socket
/// of our own to it (the listener sees one empty connection). Only stream and seqpacket
/// listeners answer; `None` when it cannot be learnt.
fn bound_name(fd: &OwnedFd) -> Option<Vec<u8>> {
    use nix::sys::socket::{
        connect, getpeername, socket, AddressFamily, SockFlag, SockType, UnixAddr,
    };
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let addr = UnixAddr::new(path.as_str()).ok()?;
    for ty in [SockType::Stream, SockType::SeqPacket] {
        let s = socket(
            AddressFamily::Unix,
            ty,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .ok()?;
        match connect(s.as_raw_fd(), &addr) {
            Ok(()) => {
                let peer: UnixAddr = getpeername(s.as_raw_fd()).ok()?;
                return peer.path().map(|p| p.as_os_str().as_bytes().to_vec());
            }
            Err(nix::errno::Errno::EPROTOTYPE) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn dump_matching(sock: &OwnedFd, file: (u64, u64)) -> Vec<UnixSock> {
    match diag::dump(sock) {
        Ok(all) => all
            .into_iter()
            .filter(|s| diag::same_file(s, file.0, file.1))
            .collect(),
        Err(e) => {
            info!(error = %e, "jail: cannot list Unix sockets (sock_diag); deciding without listener facts");
            Vec::new()
        }
    }
}

/// Opens `path` with `O_PATH` as thread `tid` would resolve it: from its root for an absolute
/// path (absolute symbolic links stay inside that root), from its working directory otherwise.
pub(crate) fn open_in_target(tid: u32, path: &[u8]) -> io::Result<OwnedFd> {
    let absolute = path.first() == Some(&b'/');
    let base = if absolute {
        format!("/proc/{tid}/root")
    } else {
        format!("/proc/{tid}/cwd")
    };
    let dir = std::fs::File::open(&base)?;
    let rel = if absolute { &path[1..] } else { path };
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    let resolve = if absolute {
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
    } else {
        ResolveFlags::NO_MAGICLINKS
    };
    openat2(
        dir.as_fd(),
        OsStr::from_bytes(rel),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        resolve,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn policy(rules: UnixSocketRules, never: &[PathBuf]) -> UnixPolicy {
        UnixPolicy::new(never, &rules)
    }

    #[test]
    fn the_builtin_list_names_the_runtimes() {
        let p = policy(UnixSocketRules::default(), &[]);
        let nowhere = (u64::MAX, u64::MAX);
        for n in [
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/home/u/.docker/run/docker.sock",
            "/home/u/.docker/desktop/docker.sock",
            "/run/user/1000/docker.sock",
            "/run/containerd/containerd.sock",
            "/run/containerd/containerd.sock.ttrpc",
            "/run/k3s/containerd/containerd.sock",
            "/run/podman/podman.sock",
            "/run/user/1000/podman/podman.sock",
            "/var/run/crio/crio.sock",
            "/run/buildkit/buildkitd.sock",
            "/run/user/1000/buildkit/buildkitd.sock",
            "/var/run/cri-dockerd.sock",
            "/var/lib/kubelet/pod-resources/kubelet.sock",
            "/var/lib/lxd/unix.socket",
            "/var/snap/lxd/common/lxd/unix.socket",
            "/var/lib/incus/unix.socket",
            "/var/run/libvirt/libvirt-sock",
            "/run/systemd/private",
            "/run/dbus/system_bus_socket",
            "/run/snapd.socket",
            "/srv/elsewhere/docker.sock",
        ] {
            let r = p.decide(nowhere, &names(&[n]), false);
            assert!(r.is_err(), "{n} must be denied");
            // The built-in list outranks default_allow.
            let open = policy(
                UnixSocketRules {
                    default_allow: true,
                    ..Default::default()
                },
                &[],
            );
            assert!(open.decide(nowhere, &names(&[n]), false).is_err(), "{n}");
        }
    }

    #[test]
    fn defaults_allow_and_overrides() {
        let nowhere = (u64::MAX, u64::MAX);
        let p = policy(UnixSocketRules::default(), &[]);
        assert!(p
            .decide(nowhere, &names(&["/tmp/relay.sock"]), false)
            .is_err());
        assert!(p
            .decide(nowhere, &names(&["/tmp/relay.sock"]), true)
            .is_ok());
        assert!(p
            .decide(nowhere, &names(&["/run/docker.sock"]), true)
            .is_ok());
        let p = policy(
            UnixSocketRules {
                allow: vec!["/run/docker.sock".into(), "/srv/ok/".into()],
                deny: vec!["/srv/ok/bad.sock".into(), "/srv/no/".into()],
                default_allow: true,
            },
            &[],
        );
        assert!(p
            .decide(nowhere, &names(&["/run/docker.sock"]), false)
            .is_ok());
        assert!(p
            .decide(nowhere, &names(&["/srv/ok/a.sock"]), false)
            .is_ok());
        assert!(p
            .decide(nowhere, &names(&["/srv/no/a.sock"]), false)
            .is_err());
        assert!(p.decide(nowhere, &names(&["/srv/nothing"]), false).is_ok());
        assert!(p.decide(nowhere, &names(&["/srv/now"]), false).is_ok());
    }

    #[test]
    fn the_agent_socket_is_never_allowed() {
        let nowhere = (u64::MAX, u64::MAX);
        let agent = PathBuf::from("/tmp/agent/boundary.sock");
        let p = policy(
            UnixSocketRules {
                allow: vec!["/tmp/agent/".into()],
                deny: vec![],
                default_allow: true,
            },
            &[agent],
        );
        let e = p
            .decide(nowhere, &names(&["/tmp/agent/boundary.sock"]), true)
            .unwrap_err();
        assert!(e.contains("audit socket"), "{e}");
    }
}
