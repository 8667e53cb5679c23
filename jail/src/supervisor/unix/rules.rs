//! The Unix socket rules and the decision on one socket (see the order in the parent module):
//! the built-in deny list of runtimes and managers, the caller's allow and deny entries, the
//! SSH agent, the default. Pure: the facts about the socket are gathered by `super`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    /// The SSH agent socket the jail may use: boundary's filter in front of the user's agent
    /// (`crate::ssh_agent`), never the agent itself.
    pub ssh_agent: Option<PathBuf>,
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
    /// A file entry's socket file when the jail started, if it existed (its identity then:
    /// what is at the path later may be a link the jail made).
    at_start: Option<(u64, u64)>,
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
        let at_start = (!dir)
            .then(|| std::fs::metadata(&trimmed).ok())
            .flatten()
            .map(|m| (m.dev(), m.ino()));
        Entry {
            path: trimmed,
            dir,
            at_start,
        }
    }

    /// Whether this entry allows the socket file `file` whose listener was bound to `bound`.
    /// Only what the jail cannot choose counts: the names the listener gave itself when it
    /// bound, and the file that was at the entry's path when the jail started. Never the path
    /// the jail connected through, nor what is at the entry's path now: the jail can
    /// hard-link or rename a denied socket (Docker's, the user's tmux server) onto those.
    fn allows(&self, file: (u64, u64), bound: &[Vec<u8>]) -> bool {
        let me = self.path.as_os_str().as_bytes();
        if self.dir {
            return bound
                .iter()
                .any(|n| n.len() > me.len() && n.starts_with(me) && n[me.len()] == b'/');
        }
        self.at_start == Some(file) || bound.iter().any(|n| n.as_slice() == me)
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
        let builtin_allow = rules.ssh_agent.iter().map(|p| Entry::parse(p)).collect();
        UnixPolicy {
            never: never
                .iter()
                .map(|p| {
                    let id = std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
                    (
                        Entry {
                            path: p.clone(),
                            dir: false,
                            at_start: id,
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

    /// Decides on the socket file `file`, known by `names` (the path the jail resolved and the
    /// names its listener was bound to), of which `bound` are the listener's own, whose
    /// listener is the jail's own or not. Deny entries look at every name; allow entries only
    /// at `bound` and the file (see `Entry::allows`). `Err` carries the reason.
    pub(crate) fn decide(
        &self,
        file: (u64, u64),
        names: &[Vec<u8>],
        bound: &[Vec<u8>],
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
        if self.allow.iter().any(|e| e.allows(file, bound)) {
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
        if self.builtin_allow.iter().any(|e| e.allows(file, bound)) {
            return Ok("the SSH agent ($SSH_AUTH_SOCK)");
        }
        if self.default_allow {
            return Ok("unix_socket_default is allow");
        }
        Err("it is a socket of a service outside the jail; add it to unix_socket_allow if the jailed command needs it".into())
    }
}

impl UnixPolicy {
    /// Whether an allow entry names one of `names` (any name, the jail's too): worth learning
    /// the listener's bound name before deciding.
    pub(crate) fn an_allow_entry_names(&self, names: &[Vec<u8>]) -> bool {
        self.allow
            .iter()
            .chain(&self.builtin_allow)
            .any(|e| e.allows((u64::MAX, u64::MAX), names))
    }
}

fn basename_denied(names: &[Vec<u8>]) -> bool {
    names.iter().any(|n| {
        let base = n.rsplit(|&b| b == b'/').next().unwrap_or(n);
        DENY_NAMES.iter().any(|d| base == d.as_bytes())
    })
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
            let r = p.decide(nowhere, &names(&[n]), &names(&[n]), false);
            assert!(r.is_err(), "{n} must be denied");
            // The built-in list outranks default_allow.
            let open = policy(
                UnixSocketRules {
                    default_allow: true,
                    ..Default::default()
                },
                &[],
            );
            assert!(
                open.decide(nowhere, &names(&[n]), &names(&[n]), false)
                    .is_err(),
                "{n}"
            );
        }
    }

    #[test]
    fn defaults_allow_and_overrides() {
        let nowhere = (u64::MAX, u64::MAX);
        let p = policy(UnixSocketRules::default(), &[]);
        assert!(p
            .decide(
                nowhere,
                &names(&["/tmp/relay.sock"]),
                &names(&["/tmp/relay.sock"]),
                false
            )
            .is_err());
        assert!(p
            .decide(
                nowhere,
                &names(&["/tmp/relay.sock"]),
                &names(&["/tmp/relay.sock"]),
                true
            )
            .is_ok());
        assert!(p
            .decide(
                nowhere,
                &names(&["/run/docker.sock"]),
                &names(&["/run/docker.sock"]),
                true
            )
            .is_ok());
        let p = policy(
            UnixSocketRules {
                allow: vec!["/run/docker.sock".into(), "/srv/ok/".into()],
                deny: vec!["/srv/ok/bad.sock".into(), "/srv/no/".into()],
                default_allow: true,
                ssh_agent: None,
            },
            &[],
        );
        assert!(p
            .decide(
                nowhere,
                &names(&["/run/docker.sock"]),
                &names(&["/run/docker.sock"]),
                false
            )
            .is_ok());
        assert!(p
            .decide(
                nowhere,
                &names(&["/srv/ok/a.sock"]),
                &names(&["/srv/ok/a.sock"]),
                false
            )
            .is_ok());
        assert!(p
            .decide(
                nowhere,
                &names(&["/srv/no/a.sock"]),
                &names(&["/srv/no/a.sock"]),
                false
            )
            .is_err());
        assert!(p
            .decide(
                nowhere,
                &names(&["/srv/nothing"]),
                &names(&["/srv/nothing"]),
                false
            )
            .is_ok());
        assert!(p
            .decide(nowhere, &names(&["/srv/now"]), &names(&["/srv/now"]), false)
            .is_ok());
    }

    /// A socket the jail hard-linked or renamed into an allowed place keeps the name its
    /// listener bound: the allow entry does not take it, the deny list still does; a socket
    /// bound inside the allowed place is allowed (the positive control).
    #[test]
    fn allow_entries_go_by_the_listener_s_name_not_the_jail_s_path() {
        let dir = tempfile::tempdir().unwrap();
        let single = dir.path().join("app.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&single).unwrap();
        let at_start = std::fs::metadata(&single)
            .map(|m| (m.dev(), m.ino()))
            .unwrap();
        let p = policy(
            UnixSocketRules {
                allow: vec!["/srv/ok/".into(), single.clone()],
                ..Default::default()
            },
            &[],
        );
        let elsewhere = (7, 7);
        // Hard link of Docker's socket into the allowed directory: opened there, bound elsewhere.
        let linked = names(&["/srv/ok/x.sock", "/run/docker.sock"]);
        let e = p
            .decide(elsewhere, &linked, &names(&["/run/docker.sock"]), false)
            .unwrap_err();
        assert!(e.contains("deny list"), "{e}");
        // The user's tmux server renamed into it: refused as a host service.
        let tmux = names(&["/tmp/tmux-1000/default"]);
        let opened = names(&["/srv/ok/default", "/tmp/tmux-1000/default"]);
        assert!(p.decide(elsewhere, &opened, &tmux, false).is_err());
        // Unknown listener name: the jail's path alone allows nothing.
        assert!(p
            .decide(elsewhere, &names(&["/srv/ok/a.sock"]), &[], false)
            .is_err());
        // Linked onto the single allowed path: not the file that was there at start.
        let path = single.as_os_str().as_bytes();
        assert!(p.decide(elsewhere, &[path.to_vec()], &tmux, false).is_err());
        // Positive controls: bound inside the directory; the single entry's own file.
        let ok = names(&["/srv/ok/a.sock"]);
        assert!(p.decide(elsewhere, &ok, &ok, false).is_ok());
        assert!(p.decide(at_start, &[path.to_vec()], &[], false).is_ok());
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
                ssh_agent: None,
            },
            &[agent],
        );
        let e = p
            .decide(
                nowhere,
                &names(&["/tmp/agent/boundary.sock"]),
                &names(&["/tmp/agent/boundary.sock"]),
                true,
            )
            .unwrap_err();
        assert!(e.contains("audit socket"), "{e}");
    }
}
