//! Who is listening on the agent socket: boundary checks the peer of every connection to the
//! Coder agent's audit socket before sending it a record (issue 12 item 6), because a jailed
//! process that replaced the socket path would otherwise receive the audit trail.
//!
//! The kernel tells us the listener's pid and uid (`SO_PEERCRED`, captured when it called
//! `listen`). The peer is refused when it is boundary itself or one of its descendants (the
//! jail's processes are), lives in another pid namespace (nsjail's), carries more seccomp
//! filters than boundary (a landjail process that left boundary's process tree by double
//! forking still carries the jail's filter; the agent, an ancestor, has at most ours), or does
//! not own the socket file. A peer that is one of boundary's ancestors (the agent started the
//! shell that started boundary) is accepted after the owner check: no jailed process can be
//! an ancestor. The uid alone cannot tell: in landjail the target runs as the agent's user.
//!
//! Limits: the facts are read from `/proc` after the connection, so a listener that exits and
//! whose pid is reused in between could be misjudged (a race the jail would have to win
//! against pid allocation).

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

/// Remembers the first accepted agent, to say when a reconnection lands on another process.
#[derive(Debug, Default)]
pub struct PeerGate {
    first: Option<AgentPeer>,
}

impl PeerGate {
    /// Judges the listener behind a connection to `path` (`cred`: its pid and uid as the
    /// kernel reports them) and logs the verdict; true when records may be sent to it.
    pub fn admit(&mut self, path: &Path, cred: std::io::Result<(Option<i32>, u32)>) -> bool {
        let verdict = match cred {
            Ok((pid, uid)) => check(path, pid, uid),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the agent socket's peer credentials");
                return false;
            }
        };
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
}
