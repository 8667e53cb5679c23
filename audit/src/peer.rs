//! Who is listening on the agent socket: boundary checks the peer of every connection to the
//! Coder agent's audit socket before sending it a record (issue 12 item 6), because a jailed
//! process that replaced the socket path would otherwise receive the audit trail.
//!
//! The kernel tells us the listener's uid (`SO_PEERCRED`) and the process that called `listen`:
//! as a pidfd (`SO_PEERPIDFD`, Linux 6.5), which names that process and no other for as long as
//! we hold it. The peer is refused when it is boundary itself or one of its descendants (the
//! jail's processes are), lives in another pid namespace (nsjail's), carries more seccomp
//! filters than boundary (a landjail process that left boundary's process tree by double
//! forking still carries the jail's filter; the agent, an ancestor, has at most ours), does
//! not own the socket file, or has exited (its listening socket is then held by a process
//! nobody can name). A peer that is one of boundary's ancestors (the agent started the shell
//! that started boundary) is accepted after the owner check: no jailed process can be an
//! ancestor. The uid alone cannot tell: in landjail the target runs as the agent's user.
//!
//! The facts are read from `/proc/<pid>` and trusted only if the pidfd still shows the process
//! alive afterwards: a pid is not reused while its process lives, so they were the peer's.
//! Before Linux 6.5 the pid comes from `SO_PEERCRED` and is pinned with `pidfd_open` at once;
//! a listener that exited and whose pid was recycled before that moment could be misjudged (a
//! race the jail would have to win against pid allocation).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The accepted listener, remembered to warn when a reconnection lands elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPeer {
    pub pid: i32,
    pub uid: u32,
    /// `/proc/<pid>/exe`, when readable.
    pub exe: Option<PathBuf>,
}

/// Why a listener is not the agent; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the listener on the agent audit socket {path} (pid {pid}, uid {uid}) is refused: {why}")]
pub struct PeerRefused {
    pub path: PathBuf,
    pub pid: i32,
    pub uid: u32,
    pub why: String,
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// `pid`, its parent, ... up to pid 1 (bounded against loops).
fn ancestry(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut p = pid;
    while p > 1 && out.len() < 4096 {
        match ppid(p) {
            Some(q) if q > 0 => {
                out.push(q);
                p = q;
            }
            _ => break,
        }
    }
    out
}

fn seccomp_filters(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Judges the listener `pid`/`uid` behind the connection to `path`.
pub fn check(path: &Path, pid: Option<i32>, uid: u32) -> Result<AgentPeer, PeerRefused> {
    let refuse = |pid: i32, why: String| PeerRefused {
        path: path.to_path_buf(),
        pid,
        uid,
        why,
    };
    let pid = match pid {
        Some(p) if p > 0 => p,
        _ => {
            return Err(refuse(
                0,
                "its pid is not visible from boundary's pid namespace; run boundary in the \
                 agent's pid namespace"
                    .into(),
            ))
        }
    };
    let me = std::process::id() as i32;
    match std::fs::metadata(path) {
        Ok(m) if m.uid() == uid => {}
        Ok(m) => {
            return Err(refuse(
                pid,
                format!(
                    "the socket file is owned by uid {} but the listener runs as uid {uid}",
                    m.uid()
                ),
            ))
        }
        Err(e) => return Err(refuse(pid, format!("cannot stat the socket file: {e}"))),
    }
    if pid == me {
        return Err(refuse(pid, "it is boundary itself".into()));
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let peer = AgentPeer { pid, uid, exe };
    if ancestry(me).contains(&pid) {
        return Ok(peer);
    }
    if ancestry(pid).contains(&me) {
        return Err(refuse(
            pid,
            "it is a descendant of boundary: a jailed process".into(),
        ));
    }
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    match (ns("self"), ns(&pid.to_string())) {
        (Some(a), Some(b)) if a != b => {
            return Err(refuse(
                pid,
                format!(
                    "it is in another pid namespace ({}): a jailed process",
                    b.display()
                ),
            ))
        }
        _ => {}
    }
    if let (Some(mine), Some(theirs)) = (seccomp_filters("self"), seccomp_filters(&pid.to_string()))
    {
        if theirs > mine {
            return Err(refuse(
                pid,
                format!(
                    "it runs under more seccomp filters ({theirs}) than boundary ({mine}): a \
                     jailed process"
                ),
            ));
        }
    }
    Ok(peer)
}

/// How the peer's process was pinned while it was checked, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    /// `SO_PEERPIDFD`: race-free.
    PeerPidfd,
    /// `pidfd_open` on the `SO_PEERCRED` pid (kernels before 6.5).
    PidfdOpen,
}

/// The process behind a connection, pinned by a pidfd so its pid cannot name another process
/// while we look at it.
#[derive(Debug)]
pub struct PeerProcess {
    pub pid: i32,
    pub uid: u32,
    pub pinned: Pinned,
    pidfd: OwnedFd,
}

impl PeerProcess {
    /// Identifies the peer of the connected Unix stream `sock`; `Err` says why it cannot be
    /// (the records then wait: a peer that cannot be named is refused).
    pub fn of(sock: BorrowedFd<'_>, cred: io::Result<(Option<i32>, u32)>) -> Result<Self, String> {
        let (cred_pid, uid) = cred.map_err(|e| format!("cannot read its credentials: {e}"))?;
        let (pidfd, pinned) = match boundary_jail::peer_pidfd(sock) {
            Ok(fd) => (fd, Pinned::PeerPidfd),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOPROTOOPT as i32) => {
                let pid = cred_pid.filter(|p| *p > 0).ok_or(
                    "its pid is not visible from boundary's pid namespace; run boundary in the \
                     agent's pid namespace",
                )?;
                let fd = boundary_jail::pidfd_open(pid as u32).map_err(|_| EXITED.to_string())?;
                (fd, Pinned::PidfdOpen)
            }
            Err(_) => return Err(EXITED.into()),
        };
        let pid = pidfd_pid(pidfd.as_fd()).ok_or(EXITED)?;
        if pid == 0 {
            return Err(
                "its pid is not visible from boundary's pid namespace; run boundary in \
                        the agent's pid namespace"
                    .into(),
            );
        }
        Ok(Self {
            pid,
            uid,
            pinned,
            pidfd,
        })
    }

    /// True while the process runs (a pidfd turns readable when it exits).
    fn alive(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }
}

const EXITED: &str = "the process that listened on it has exited, so whoever holds its socket \
                      now cannot be identified; restart the Coder agent";

/// The pid (in our pid namespace) a pidfd names: `Some(0)` when not visible from it, `None`
/// when the process has exited.
fn pidfd_pid(fd: BorrowedFd<'_>) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let pid: i32 = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()?;
    (pid >= 0).then_some(pid)
}

/// Judges the pinned peer of a connection to `path`: [`check`], trusted only if the process is
/// still alive afterwards (so its pid named it throughout).
pub fn check_pinned(path: &Path, peer: &PeerProcess) -> Result<AgentPeer, PeerRefused> {
    let verdict = check(path, Some(peer.pid), peer.uid)?;
    if !peer.alive() {
        return Err(PeerRefused {
            path: path.to_path_buf(),
            pid: peer.pid,
            uid: peer.uid,
            why: format!("{EXITED} (it exited while being checked)"),
        });
    }
    Ok(verdict)
}

/// Remembers the first accepted agent, to say when a reconnection lands on another process.
#[derive(Debug, Default)]
pub struct PeerGate {
    first: Option<AgentPeer>,
}

impl PeerGate {
    /// Judges the listener behind the connection `sock` to `path` (`cred`: its pid and uid as
    /// `SO_PEERCRED` reports them) and logs the verdict; true when records may be sent to it.
    pub fn admit(
        &mut self,
        path: &Path,
        sock: BorrowedFd<'_>,
        cred: io::Result<(Option<i32>, u32)>,
    ) -> bool {
        let verdict = PeerProcess::of(sock, cred)
            .map_err(|why| PeerRefused {
                path: path.to_path_buf(),
                pid: 0,
                uid: 0,
                why,
            })
            .and_then(|peer| {
                if peer.pinned == Pinned::PidfdOpen && self.first.is_none() {
                    tracing::info!(
                        "this kernel has no SO_PEERPIDFD (Linux 6.5); the agent socket's peer \
                         is pinned with pidfd_open after connecting"
                    );
                }
                check_pinned(path, &peer)
            });
        let p = match verdict {
            Ok(p) => p,
            Err(refused) => {
                tracing::error!(
                    "{refused}; no audit record is sent there, they wait for the real agent"
                );
                return false;
            }
        };
        match &self.first {
            None => {
                tracing::info!(pid = p.pid, exe = ?p.exe, "Coder agent audit socket peer accepted")
            }
            Some(first) if first.exe != p.exe => tracing::error!(
                first_pid = first.pid, first_exe = ?first.exe, pid = p.pid, exe = ?p.exe,
                "a different program now listens on the Coder agent audit socket"
            ),
            Some(first) if first.pid != p.pid => tracing::warn!(
                first_pid = first.pid, pid = p.pid, exe = ?p.exe,
                "another process of the same program now listens on the Coder agent audit \
                 socket (the agent restarted?)"
            ),
            Some(_) => {}
        }
        self.first.get_or_insert(p);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_reaches_init_and_contains_our_parent() {
        let me = std::process::id() as i32;
        let a = ancestry(me);
        assert_eq!(a[0], me);
        assert_eq!(a.get(1).copied(), ppid(me));
        assert!(a.last().copied().unwrap_or(0) <= 1 || a.len() > 1);
    }

    #[test]
    fn boundary_itself_and_its_children_are_refused_its_parent_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let uid = std::fs::metadata(&path).unwrap().uid();
        let me = std::process::id() as i32;
        assert!(check(&path, Some(me), uid).is_err());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let e = check(&path, Some(child.id() as i32), uid).unwrap_err();
        assert!(e.why.contains("descendant"), "{e}");
        let _ = child.kill();
        let _ = child.wait();
        let parent = ppid(me).unwrap();
        assert_eq!(check(&path, Some(parent), uid).map(|p| p.pid), Ok(parent));
        let e = check(&path, Some(parent), uid + 1).unwrap_err();
        assert!(e.why.contains("owned by uid"), "{e}");
        assert!(check(&path, None, uid).is_err());
    }

    fn connect_peer(path: &Path) -> (std::os::unix::net::UnixStream, Result<PeerProcess, String>) {
        let s = std::os::unix::net::UnixStream::connect(path).unwrap();
        let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| (Some(c.pid()), c.uid()))
            .map_err(io::Error::from);
        let p = PeerProcess::of(s.as_fd(), cred);
        (s, p)
    }

    #[test]
    fn the_peer_is_pinned_by_a_pidfd_naming_the_listening_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (_s, p) = connect_peer(&path);
        let p = p.unwrap();
        assert_eq!(p.pid, std::process::id() as i32);
        assert!(p.alive());
        eprintln!("pinned by {:?}", p.pinned);
        // Refused as boundary itself, by the pinned check too.
        assert!(check_pinned(&path, &p).is_err());
    }

    #[test]
    fn a_listener_whose_process_exited_is_refused() {
        // A process listens, hands its socket to a child and exits: the pid the kernel
        // recorded names nobody (or, later, someone else), so the peer cannot be identified.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let script = "import os, socket, sys, time\n\
                      s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)\n\
                      if os.fork() == 0:\n    time.sleep(20); os._exit(0)\n\
                      os._exit(0)\n";
        let st = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .status()
            .expect("python3");
        assert!(st.success());
        let (_s, p) = connect_peer(&path);
        let why = p.expect_err("an exited listener must not be identified");
        assert!(why.contains("has exited"), "{why}");
    }
}
