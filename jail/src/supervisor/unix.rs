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
//! 5. **Built-in allow**: the jail's SSH agent, boundary's filter (`crate::ssh_agent`).
//! 6. **Everything else** is a host service's socket: refused by default (a relay on one is a
//!    way out the proxy never sees); `unix_socket_default: allow` lets it through.
//!
//! An entry ending in `/` covers every socket under that directory (by name); any other entry
//! is one socket file (by identity, and by name). Deny entries match any name of the socket;
//! allow entries (and the SSH agent) only the names its listener bound and, for a file entry,
//! the file that was at the entry's path when the jail started: a hard link or a rename the
//! jail makes of another socket into an allowed place does not make that socket allowed. The rules and the decision are in `rules`;
//! this file gathers the facts about the socket a connect or a send names.

mod rules;

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use tracing::{debug, info, warn};

use super::diag::{self, UnixSock};
pub(crate) use rules::UnixPolicy;
pub use rules::UnixSocketRules;

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
    // The path the jail resolved (its own choice: a hard link or a rename away from the
    // socket's real name) and the names the listener bound (the kernel's, not the jail's).
    let mut opened = Vec::new();
    if let Ok(p) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        opened.push(p.into_os_string().into_encoded_bytes());
    }
    let mut bound = Vec::new();
    let mut jail_own = false;
    let mut listener_known = false;
    if let Some(jfd) = listeners.jail_ns {
        let found = dump_matching(jfd, file);
        jail_own = !found.is_empty();
        listener_known = jail_own;
        bound.extend(found.into_iter().filter_map(|s| s.name));
    }
    if !jail_own {
        if let Ok(host) = diag::open() {
            let found = dump_matching(&host, file);
            listener_known = !found.is_empty();
            if let Some(set) = listeners.jail_inodes {
                let set = set.lock().unwrap_or_else(|p| p.into_inner());
                jail_own = !found.is_empty() && found.iter().all(|s| set.contains(&s.ino));
            }
            bound.extend(found.into_iter().filter_map(|s| s.name));
        }
    }
    let shown = String::from_utf8_lossy(path);
    let all = |bound: &[Vec<u8>]| [opened.as_slice(), bound].concat();
    let mut verdict = policy.decide(file, &all(&bound), &bound, jail_own);
    let worth_asking = verdict.is_ok() || policy.an_allow_entry_names(&opened);
    if worth_asking && !jail_own && !listener_known {
        // The listener lives in a network namespace we cannot list (a host socket mounted
        // into a container): learn the name it was bound to from the listener itself, so a
        // runtime socket under another name is still recognised and an allow entry can match.
        if let Some(name) = bound_name(&fd) {
            bound.push(name);
            verdict = policy.decide(file, &all(&bound), &bound, false);
        }
    }
    let names = all(&bound);
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
    super::target::open_in_target_at(tid, None, path, rustix::fs::OFlags::empty())
}
