//! Carrying out a checked `connect()`: what the address is decided to be ([`decide`]), and the
//! socket-level calls the supervisor makes on the target's socket with its own copy of it.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use tracing::info;

use super::target::{read_mem, thread_pidfd};
use super::{errno, id_valid, tcp, unix, Net, Policy};

/// A connect decision before it is carried out.
pub(super) enum Action {
    Connect(Vec<u8>),
    ConnectUnixFd(OwnedFd),
}

/// The socket's real address family (see [`crate::sys::socket_domain`]).
pub(super) fn socket_domain(sock: &OwnedFd) -> io::Result<i32> {
    crate::sys::socket_domain(sock.as_fd())
}

/// Connects the target's socket (our copy) to `addr`; the errno on failure.
pub(super) fn raw_connect(sock: &OwnedFd, addr: &[u8]) -> Result<(), i32> {
    crate::sys::connect_raw(sock.as_fd(), addr).map_err(|e| errno(&e))
}

pub(super) fn sockaddr_un(path: &[u8]) -> Vec<u8> {
    let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(path);
    v.push(0);
    v
}

fn sockaddr_in(a: SocketAddrV4) -> Vec<u8> {
    let mut v = (libc::AF_INET as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&a.port().to_be_bytes());
    v.extend_from_slice(&a.ip().octets());
    v.extend_from_slice(&[0u8; 8]);
    v
}

fn sockaddr_in6(a: SocketAddrV6) -> Vec<u8> {
    let mut v = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&a.port().to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&a.ip().octets());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

pub(super) fn decide(domain: i32, addr: &[u8], tid: u32, policy: &Policy) -> Result<Action, i32> {
    if addr.len() < 2 {
        return Err(libc::EINVAL);
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
    if family == libc::AF_UNSPEC && domain != libc::AF_UNIX {
        // Disconnect: nothing leaves the machine.
        return Ok(Action::Connect(addr.to_vec()));
    }
    match domain {
        libc::AF_INET | libc::AF_INET6 => {
            let dest = tcp::parse_inet(addr)?;
            if let Net::Host { proxy } = &policy.net {
                if !tcp::allowed(dest, proxy) {
                    if tcp::is_loopback(dest.ip()) {
                        tcp::local_listener_is_jails(dest, &policy.jail_listeners, tid)?;
                    } else {
                        info!(%dest, tid, "landjail: refused a connect that does not go to the proxy");
                        return Err(libc::EACCES);
                    }
                }
            }
            Ok(Action::Connect(match dest {
                SocketAddr::V4(a) => sockaddr_in(a),
                SocketAddr::V6(a) => sockaddr_in6(a),
            }))
        }
        libc::AF_UNIX => {
            if family == libc::AF_UNSPEC {
                return Ok(Action::Connect(addr.to_vec()));
            }
            if family != libc::AF_UNIX {
                return Err(libc::EINVAL);
            }
            let name = &addr[2..];
            if name.is_empty() {
                return Err(libc::EINVAL);
            }
            if name[0] == 0 {
                if matches!(policy.net, Net::Namespace { .. }) {
                    return Ok(Action::Connect(addr.to_vec()));
                }
                info!(
                    tid,
                    "landjail: refused a connect to an abstract Unix socket"
                );
                return Err(libc::EACCES);
            }
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            unix::check_path(&policy.unix, &policy.listeners(), tid, &name[..end])
                .map(Action::ConnectUnixFd)
        }
        libc::AF_NETLINK => Ok(Action::Connect(addr.to_vec())),
        _ => Err(libc::EACCES),
    }
}

/// The target's socket and the destination that passed the checks.
pub(super) struct CheckedConnect {
    sock: OwnedFd,
    action: Action,
    /// nsjail: the process that connects with the jail's credentials ([`super::sender`]).
    via: Option<std::sync::Arc<super::sender::Sender>>,
}

impl CheckedConnect {
    /// A blocking socket's connect can wait (a full backlog, a slow peer).
    pub(super) fn may_block(&self) -> bool {
        crate::sys::is_nonblocking(self.sock.as_fd()) != Some(true)
    }

    pub(super) fn perform(self) -> Result<i64, i32> {
        let (name, dest) = match self.action {
            Action::Connect(bytes) => (bytes, None),
            Action::ConnectUnixFd(target) => {
                let path = format!("/proc/self/fd/{}", target.as_raw_fd());
                (sockaddr_un(path.as_bytes()), Some(target))
            }
        };
        let result = match &self.via {
            Some(sender) => {
                let m = super::send::Message {
                    name,
                    dest,
                    data: Vec::new(),
                    control: Vec::new(),
                    rights: Vec::new(),
                };
                sender.connect(self.sock.as_fd(), &m).map_err(|e| errno(&e))
            }
            None => raw_connect(&self.sock, &name),
        };
        result.map(|()| 0)
    }
}

/// Checks one `connect()`; `None` when the target is no longer waiting.
pub(super) fn check_connect(
    req: &libc::seccomp_notif,
    policy: &Policy,
    notify: RawFd,
) -> Option<Result<CheckedConnect, i32>> {
    let tid = req.pid;
    let target_fd = req.data.args[0] as i32;
    let addr_ptr = req.data.args[1];
    // The kernel takes addrlen as an int and refuses more than a sockaddr_storage.
    let addr_len = req.data.args[2] as i32;
    if !(0..=128).contains(&addr_len) {
        return Some(Err(libc::EINVAL));
    }
    let pidfd = match thread_pidfd(tid) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(errno(&e))),
    };
    let addr = match read_mem(tid, addr_ptr, addr_len as usize) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    // The thread is still in this syscall: the pidfd and the bytes read are its own.
    if !id_valid(req.id, notify) {
        return None;
    }
    let sock = match crate::sys::pidfd_getfd(&pidfd, target_fd) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(errno(&e))),
    };
    let domain = match socket_domain(&sock) {
        Ok(d) => d,
        Err(e) => return Some(Err(errno(&e))),
    };
    let action = match decide(domain, &addr, tid, policy) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    if reaches_proxy(domain, &addr, &policy.net) {
        // Before the connect is made: the proxy may accept it before our connect returns.
        crate::attribution::note_connect(&policy.connects, &sock, tid);
    }
    let via = match &policy.net {
        Net::Namespace { sender, .. } => Some(std::sync::Arc::clone(sender)),
        Net::Host { .. } => None,
    };
    Some(Ok(CheckedConnect { sock, action, via }))
}

/// Whether a checked connect may lead to the proxy, so its caller is noted for attribution:
/// in landjail only one to a proxy address (not the jail's own loopback servers); in nsjail
/// any TCP connect (netfilter redirects them, and the proxy's address is the jail's loopback).
fn reaches_proxy(domain: i32, addr: &[u8], net: &Net) -> bool {
    if !matches!(domain, libc::AF_INET | libc::AF_INET6) {
        return false;
    }
    match (tcp::parse_inet(addr), net) {
        (Err(_), _) => false, // AF_UNSPEC (disconnect)
        (Ok(dest), Net::Host { proxy }) => tcp::allowed(dest, proxy),
        (Ok(_), Net::Namespace { .. }) => true,
    }
}
