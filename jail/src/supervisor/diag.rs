//! Facts about listening sockets from the kernel's `sock_diag` netlink interface.
//!
//! Unix sockets: for each socket, its own inode, the path it was bound to (the binder's name,
//! which survives renames, hard links and bind mounts of the socket file) and the inode of its
//! socket file. This is how the supervisor learns which listener a socket file leads to without
//! connecting to it.
//!
//! TCP: the listeners on one port ([`tcp_listeners`]), with their inodes, which landjail
//! compares with the sockets its jail listened on. The kernel filters by state and port, so a
//! query costs the same on a host with ten thousand connections as on an idle one (reading
//! `/proc/net/tcp` costs tens of milliseconds there).
//!
//! TCP connections: the inode of the one socket with a given address pair
//! ([`tcp_socket_inode`], an exact lookup), which tells the proxy which jailed socket (and so
//! which process, see `crate::attribution`) a connection it accepted comes from.
//!
//! A dump covers the network namespace the netlink socket was created in: boundary's own, or
//! the jail's (nsjail hands one over from inside the jail's namespace).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr, SockProtocol};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_UID: u16 = 7;
/// Listening stream/seqpacket sockets, and bound datagram sockets (state "close").
const STATES: u32 = (1 << 10) | (1 << 7);

/// `TCP_LISTEN` in the kernel's TCP state numbering (`idiag_state`, the state filter's bits).
const TCP_LISTEN: u8 = 10;

static SEQ: AtomicU32 = AtomicU32::new(1);

/// One Unix socket as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixSock {
    /// The socket's own inode (what `fstat` on a descriptor of it reports).
    pub(crate) ino: u64,
    /// The address it was bound to; `None` when unbound. Abstract names start with NUL.
    pub(crate) name: Option<Vec<u8>>,
    /// `(st_dev, st_ino)` of its socket file, in `stat(2)` encoding.
    pub(crate) file: Option<(u64, u64)>,
    /// The uid that created it.
    pub(crate) uid: Option<u32>,
}

/// One listening TCP socket as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InetListener {
    /// The address it listens on (a wildcard for every address).
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    /// The socket's inode (what `fstat` on a descriptor of it reports).
    pub(crate) inode: u64,
    /// The uid that created it (named in the log when the jail is refused).
    pub(crate) uid: u32,
}

/// A netlink socket for dumps, in the namespace it was created in.
pub(crate) fn open() -> io::Result<OwnedFd> {
    crate::netlink::open(SockProtocol::NetlinkSockDiag)
}

/// Every bound Unix socket of `sock`'s network namespace.
pub(crate) fn dump(sock: &OwnedFd) -> io::Result<Vec<UnixSock>> {
    let mut body = Vec::with_capacity(24);
    body.push(libc::AF_UNIX as u8);
    body.extend_from_slice(&[0, 0, 0]);
    body.extend_from_slice(&STATES.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_UID).to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]);
    let mut out = Vec::new();
    request(sock, &body, |p| out.extend(parse_sock(p)))?;
    Ok(out)
}

/// The TCP sockets of `sock`'s network namespace that listen on `port` with an address of
/// `family` (`AF_INET` or `AF_INET6`; an IPv6 wildcard listener may take IPv4 too). The kernel
/// filters by state and port, so the answer is only these few sockets however many
/// connections the host has.
pub(crate) fn tcp_listeners(
    sock: &OwnedFd,
    family: i32,
    port: u16,
) -> io::Result<Vec<InetListener>> {
    // struct inet_diag_req_v2: family, protocol, extensions, pad, states, then the
    // inet_diag_sockid whose source port (network order) filters listeners.
    let mut body = Vec::with_capacity(56);
    body.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    body.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    body.extend_from_slice(&port.to_be_bytes());
    body.resize(56, 0);
    let mut out = Vec::new();
    request(sock, &body, |p| out.extend(parse_inet(p)))?;
    // The kernel skips other ports and states already; checking again costs nothing.
    out.retain(|l| l.port == port);
    Ok(out)
}

/// The inode of the TCP socket of `sock`'s network namespace whose local address is `local`
/// and whose peer is `remote` (the client's side of a connection the proxy accepted: `local`
/// is the accepted connection's peer); `None` when there is none, or it was closed (a closed
/// socket keeps its addresses but loses its inode). An exact lookup: the kernel finds the one
/// socket by its addresses, whatever else the namespace holds. IPv4 addresses on an IPv6
/// socket are found too (the kernel looks IPv4-mapped addresses up as IPv4).
pub(crate) fn tcp_socket_inode(
    sock: &OwnedFd,
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Option<u64>> {
    let (family, src, dst) = match (canonical(local), canonical(remote)) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => {
            let word = |ip: Ipv4Addr| {
                let mut w = [0u8; 16];
                w[..4].copy_from_slice(&ip.octets());
                w
            };
            (libc::AF_INET, word(*l.ip()), word(*r.ip()))
        }
        (l, r) => (libc::AF_INET6, v6_octets(l.ip()), v6_octets(r.ip())),
    };
    // struct inet_diag_req_v2 with the full socket id: ports (network order), addresses,
    // interface 0 and INET_DIAG_NOCOOKIE, answered by the kernel's exact lookup.
    let mut body = Vec::with_capacity(56);
    body.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    body.extend_from_slice(&u32::MAX.to_ne_bytes());
    body.extend_from_slice(&local.port().to_be_bytes());
    body.extend_from_slice(&remote.port().to_be_bytes());
    body.extend_from_slice(&src);
    body.extend_from_slice(&dst);
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]);
    let mut found = None;
    match request_flags(sock, &body, NLM_F_REQUEST, |p| {
        found = found.or(parse_inode(p));
    }) {
        Ok(()) => Ok(found.filter(|&i| i != 0)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inode of an `inet_diag_msg` that is not a listener (a lookup by addresses may fall
/// back to the listener on that port).
fn parse_inode(p: &[u8]) -> Option<u64> {
    if p.len() < 72 || p[1] == TCP_LISTEN {
        return None;
    }
    Some(u64::from(u32::from_ne_bytes(p[68..72].try_into().ok()?)))
}

/// Sends one `SOCK_DIAG_BY_FAMILY` dump request with `body` and hands each answer's payload
/// to `each` until the dump is complete.
fn request(sock: &OwnedFd, body: &[u8], each: impl FnMut(&[u8])) -> io::Result<()> {
    request_flags(sock, body, NLM_F_REQUEST | NLM_F_DUMP, each)
}

/// Sends one `SOCK_DIAG_BY_FAMILY` request with netlink `flags`: a dump is complete at its
/// `NLMSG_DONE`, an exact lookup at its one answer (or error).
fn request_flags(
    sock: &OwnedFd,
    body: &[u8],
    flags: u16,
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    let dump = flags & NLM_F_DUMP != 0;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let req = crate::netlink::Message::new(SOCK_DIAG_BY_FAMILY, flags, body).bytes(seq);
    sendto(
        sock.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io::Error::from)?;
        if n == 0 {
            return Err(io::Error::other("sock_diag: netlink socket closed"));
        }
        let mut answered = false;
        let mut counting = |p: &[u8]| {
            answered = true;
            each(p)
        };
        if parse_batch(&buf[..n], seq, &mut counting)? || (!dump && answered) {
            return Ok(());
        }
    }
}

/// Parses one datagram of a dump; `true` when the dump is complete.
fn parse_batch(mut b: &[u8], seq: u32, each: &mut impl FnMut(&[u8])) -> io::Result<bool> {
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let got_seq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
        if len < 16 || len > b.len() {
            return Err(io::Error::other("sock_diag: truncated netlink message"));
        }
        let payload = &b[16..len];
        b = &b[align4(len).min(b.len())..];
        if got_seq != seq {
            continue; // a late answer to an earlier, abandoned dump
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = payload
                    .get(0..4)
                    .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
                    .unwrap_or(-libc::EIO);
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY => each(payload),
            _ => {}
        }
    }
    Ok(false)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one `unix_diag_msg` and its attributes.
fn parse_sock(p: &[u8]) -> Option<UnixSock> {
    if p.len() < 16 {
        return None;
    }
    let ino = u64::from(u32::from_ne_bytes(p[4..8].try_into().ok()?));
    let mut s = UnixSock {
        ino,
        name: None,
        file: None,
        uid: None,
    };
    let mut a = &p[16..];
    while a.len() >= 4 {
        let alen = usize::from(u16::from_ne_bytes([a[0], a[1]]));
        let atype = u16::from_ne_bytes([a[2], a[3]]);
        if alen < 4 || alen > a.len() {
            break;
        }
        let data = &a[4..alen];
        match atype {
            UNIX_DIAG_NAME => {
                // A filesystem name ends at its first NUL (binders may count one in the length).
                let end = match data.first() {
                    Some(0) | None => data.len(),
                    _ => data.iter().position(|&b| b == 0).unwrap_or(data.len()),
                };
                s.name = Some(data[..end].to_vec());
            }
            UNIX_DIAG_VFS if data.len() >= 8 => {
                let vino = u32::from_ne_bytes(data[0..4].try_into().ok()?);
                let vdev = u32::from_ne_bytes(data[4..8].try_into().ok()?);
                s.file = Some((user_dev(vdev), u64::from(vino)));
            }
            UNIX_DIAG_UID if data.len() >= 4 => {
                s.uid = Some(u32::from_ne_bytes(data[0..4].try_into().ok()?));
            }
            _ => {}
        }
        a = &a[align4(alen).min(a.len())..];
    }
    Some(s)
}

/// Parses one `inet_diag_msg`: family, state, timer, retransmits, then the socket id (ports
/// in network order, addresses as four 32-bit words), then expiry, queues, uid and inode.
fn parse_inet(p: &[u8]) -> Option<InetListener> {
    if p.len() < 72 || p[1] != TCP_LISTEN {
        return None;
    }
    let port = u16::from_be_bytes([p[4], p[5]]);
    let ip = match i32::from(p[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(p[8], p[9], p[10], p[11])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?)),
        _ => return None,
    };
    let uid = u32::from_ne_bytes(p[64..68].try_into().ok()?);
    let inode = u64::from(u32::from_ne_bytes(p[68..72].try_into().ok()?));
    Some(InetListener {
        ip,
        port,
        inode,
        uid,
    })
}

/// The kernel reports the device in its internal encoding (major << 20 | minor); `stat`
/// reports the user-space one.
fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// Whether `sock` is bound to the socket file `(dev, ino)` (the kernel reports 32 bits of the
/// inode number).
pub(crate) fn same_file(sock: &UnixSock, dev: u64, ino: u64) -> bool {
    sock.file == Some((dev, ino & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_listener_is_found_by_its_file_and_keeps_its_bound_name_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sock");
        let l = UnixListener::bind(&path).unwrap();
        let moved = dir.path().join("moved.sock");
        std::fs::rename(&path, &moved).unwrap();
        let meta = std::fs::metadata(&moved).unwrap();
        let sock_ino = std::fs::File::from(OwnedFd::from(l.try_clone().unwrap()))
            .metadata()
            .unwrap()
            .ino();
        let all = dump(&open().unwrap()).unwrap();
        let found: Vec<_> = all
            .iter()
            .filter(|s| same_file(s, meta.dev(), meta.ino()))
            .collect();
        assert_eq!(found.len(), 1, "{all:?}");
        assert_eq!(found[0].ino, sock_ino);
        assert_eq!(
            found[0].name.as_deref(),
            Some(path.as_os_str().as_encoded_bytes()),
            "the bound name is the original path"
        );
        assert_eq!(found[0].uid, Some(nix::unistd::geteuid().as_raw()));
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..96 {
            for fill in [0u8, 0x0a, 0xff] {
                let b = vec![fill; n];
                let _ = parse_batch(&b, 1, &mut |_| {});
                let _ = parse_sock(&b);
                let _ = parse_inet(&b);
            }
        }
    }

    fn inode_of(fd: impl Into<OwnedFd>) -> u64 {
        std::fs::File::from(fd.into()).metadata().unwrap().ino()
    }

    /// A listener on an ephemeral port is found with its inode and uid; the connected sockets
    /// on that port (the accepted one shares the listener's local port) are not reported, and
    /// once the listener is closed nothing is.
    fn finds_only_the_listener(addr: &str, family: i32) {
        let l = std::net::TcpListener::bind(addr).unwrap();
        let port = l.local_addr().unwrap().port();
        let ino = inode_of(l.try_clone().unwrap());
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let sock = open().unwrap();
        let found = tcp_listeners(&sock, family, port).unwrap();
        assert_eq!(
            found,
            vec![InetListener {
                ip: l.local_addr().unwrap().ip(),
                port,
                inode: ino,
                uid: nix::unistd::geteuid().as_raw(),
            }]
        );
        let other = if family == libc::AF_INET {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        assert_eq!(tcp_listeners(&sock, other, port).unwrap(), vec![]);
        drop(l);
        assert_eq!(tcp_listeners(&sock, family, port).unwrap(), vec![]);
        // The connection still exists on that port: it is simply not a listener.
        assert_eq!(accepted.local_addr().unwrap().port(), port);
        drop((client, accepted));
    }

    #[test]
    fn the_tcp_query_finds_an_ipv4_listener_and_nothing_else() {
        finds_only_the_listener("127.0.0.1:0", libc::AF_INET);
    }

    #[test]
    fn the_tcp_query_finds_an_ipv6_listener_and_nothing_else() {
        finds_only_the_listener("[::1]:0", libc::AF_INET6);
    }
}
