//! nsjail's sender: a process that carries out the supervisor's checked sends and connects with
//! the jail's own credentials.
//!
//! Why not send from boundary, as landjail does: boundary's uid owns the jail's user namespace,
//! and the kernel gives the owner every capability in a namespace it owns, effective set or
//! not. A netlink message boundary sent for the jail would pass `CAP_NET_ADMIN` checks made on
//! the sender (`ns_capable`), and so would control messages that need `CAP_NET_RAW` or
//! `CAP_NET_ADMIN` (`SO_MARK`, `SO_PRIORITY` above 6, some IPv6 options): the jail could
//! rewrite its own netfilter rules or routes. The filter cannot tell a netlink socket from a
//! Unix one by its descriptor number, so every `sendmsg` reaches the supervisor. Connects too:
//! a netlink `connect()` naming multicast groups is checked on the connecting process.
//!
//! So the namespace helper forks this process before it forks the jail's init: it is in the
//! jail's user and network namespaces, drops every capability (also the bounding set when it
//! is root without a user namespace) and sets `no_new_privs`, exactly as init does before it
//! starts the target, and installs the jail's own filter minus the notification. Its
//! credentials are the target's. It is not in the jail's PID namespace, so no jailed process
//! can see it, signal it or trace it, and it is not dumpable besides. It keeps only its
//! channel to boundary.
//!
//! The supervisor still decides everything (see [`super::send`], [`super::connect`]): the
//! sender only sends, or connects, what it is handed. Boundary talks to it over connections (stream socketpairs) whose sender ends
//! it passes over the channel (a `SOCK_SEQPACKET` pair); each connection is served by a thread
//! of the sender, one request at a time, and boundary keeps a few idle ones for later sends, so
//! concurrent sends never share one and a send that waits holds up only its own. A request is
//! a header, the descriptors (the caller's socket, the checked socket file, the `SCM_RIGHTS`
//! files, by `SCM_RIGHTS` in batches), then name, control and data (one write when small); the
//! answer is the send's result as an `i64` (negative: an errno). A filesystem destination is
//! reached through the sender's own descriptor of the checked socket file, by a name relative
//! to its working directory, its `/proc/self/fd` (its `/proc` mount is the jail's, where it has
//! no pid).
//!
//! What a receiver sees: `SO_PASSCRED` and `SO_PEERCRED` report the sender's pid (a process
//! outside the jail's PID namespace: pid 0 for a receiver in the jail) and the jail's uid and
//! gid, as a send or connect of the target's own would (but for the pid).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use tracing::warn;

use super::send::{map_control, Message, MAX_DATA};

/// The request header: flags, kind ([`HAS_DEST`], [`CONNECT`]), name, control and data
/// lengths, descriptor count.
const HDR: usize = 28;
/// Kind bits: the destination is the descriptor after the socket; a `connect()`, not a send.
const HAS_DEST: u32 = 1;
const CONNECT: u32 = 2;
/// Descriptors per `SCM_RIGHTS` batch (`sys::send_with_fds` carries at most 16).
const BATCH: usize = 16;
/// The kernel's limits: socket address size, control bytes, files per `SCM_RIGHTS` (253) and
/// room for the socket and the destination.
const MAX_NAME: usize = 128;
const MAX_CONTROL: usize = 64 << 10;
const MAX_FDS: usize = 256;
/// Requests up to this size go in one write (with their first descriptors).
const ONE_WRITE: usize = 64 << 10;
/// Most idle connections kept for later sends: a burst of concurrent sends (a thousand
/// connections resolving names at once) opens one connection each, and keeping them all would
/// leave that many descriptors in boundary, and threads in the sender, for the rest of the run.
const MAX_IDLE: usize = 4;

/// Boundary's end of the channel to the sender process, and the connections to it that are
/// not in use.
pub(crate) struct Sender {
    chan: OwnedFd,
    idle: Mutex<Vec<UnixStream>>,
}

impl Sender {
    /// Wraps boundary's end of the channel (a `SOCK_SEQPACKET` socket).
    pub(crate) fn new(chan: OwnedFd) -> Sender {
        Sender {
            chan,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `m` on `sock` (our copy of the caller's socket) with `flags`, through the sender
    /// process; waits for its result. A sender that is gone fails the send with `EACCES`.
    pub(super) fn send(&self, sock: BorrowedFd<'_>, m: &Message, flags: i32) -> io::Result<usize> {
        self.request(sock, m, flags, false).map(|v| v as usize)
    }

    /// Connects `sock` to `m`'s name (or checked socket file), through the sender process.
    pub(super) fn connect(&self, sock: BorrowedFd<'_>, m: &Message) -> io::Result<()> {
        self.request(sock, m, 0, true).map(|_| ())
    }

    fn request(
        &self,
        sock: BorrowedFd<'_>,
        m: &Message,
        flags: i32,
        connect: bool,
    ) -> io::Result<i64> {
        let result = self.connection().and_then(|mut conn| {
            let v = exchange(&mut conn, sock, m, flags, connect)?;
            let mut idle = self.idle_list();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
            // Otherwise dropped: the sender's thread for it sees the end and exits.
            Ok(v)
        });
        match result {
            Ok(v) if v < 0 => Err(io::Error::from_raw_os_error((-v) as i32)),
            Ok(v) => Ok(v),
            Err(e) => {
                warn!(error = %e, "nsjail: the jail's sender process is not answering; refusing the call");
                Err(io::Error::from_raw_os_error(libc::EACCES))
            }
        }
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<UnixStream>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection, or a new one handed to the sender (which serves it on a thread of
    /// its own, so a send that waits holds up only its own connection).
    fn connection(&self) -> io::Result<UnixStream> {
        if let Some(conn) = self.idle_list().pop() {
            return Ok(conn);
        }
        let (ours, theirs) = UnixStream::pair()?;
        crate::sys::send_with_fds(self.chan.as_fd(), &[0], &[theirs.as_raw_fd()])?;
        Ok(ours)
    }
}

/// One request and its answer on connection `conn`.
fn exchange(
    conn: &mut UnixStream,
    sock: BorrowedFd<'_>,
    m: &Message,
    flags: i32,
    connect: bool,
) -> io::Result<i64> {
    let mut fds = vec![sock.as_raw_fd()];
    fds.extend(m.dest.iter().map(AsRawFd::as_raw_fd));
    fds.extend(m.rights.iter().map(AsRawFd::as_raw_fd));
    let name: &[u8] = if m.dest.is_some() { &[] } else { &m.name };
    let mut req = Vec::with_capacity(HDR);
    req.extend_from_slice(&flags.to_ne_bytes());
    let kind = u32::from(m.dest.is_some()) * HAS_DEST + u32::from(connect) * CONNECT;
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(name.len() as u32).to_ne_bytes());
    req.extend_from_slice(&(m.control.len() as u32).to_ne_bytes());
    req.extend_from_slice(&(m.data.len() as u64).to_ne_bytes());
    req.extend_from_slice(&(fds.len() as u32).to_ne_bytes());
    let body = name.len() + m.control.len() + m.data.len();
    // Small and few descriptors: everything in one write, so the sender wakes once.
    let whole = body <= ONE_WRITE && fds.len() <= BATCH;
    if whole {
        req.extend_from_slice(name);
        req.extend_from_slice(&m.control);
        req.extend_from_slice(&m.data);
    }
    let mut batches = fds.chunks(BATCH);
    let first = batches.next().unwrap_or_default();
    let n = crate::sys::send_with_fds(conn.as_fd(), &req, first)?;
    conn.write_all(&req[n..])?;
    if !whole {
        for batch in batches {
            crate::sys::send_with_fds(conn.as_fd(), &[0], batch)?;
        }
        conn.write_all(name)?;
        conn.write_all(&m.control)?;
        conn.write_all(&m.data)?;
    }
    let mut result = [0u8; 8];
    conn.read_exact(&mut result)?;
    Ok(i64::from_ne_bytes(result))
}

/// One request, as the sender process received it.
struct Request {
    sock: OwnedFd,
    name: Vec<u8>,
    data: Vec<u8>,
    control: Vec<u8>,
    flags: i32,
    /// A `connect()` to `name` rather than a send.
    connect: bool,
    /// The destination socket file and the `SCM_RIGHTS` files, kept open until sent.
    _held: Vec<OwnedFd>,
}

/// The sender process's loop (see the module documentation); returns when boundary closes
/// the channel. `chan`: the sender's end; the working directory must be its `/proc/self/fd`.
pub(crate) fn serve(chan: OwnedFd) {
    loop {
        let mut b = [0u8; 1];
        match crate::sys::recv_with_fds(chan.as_fd(), &mut b) {
            Ok((0, _)) => return,
            Ok((_, fds)) => fds.into_iter().for_each(|fd| handle(UnixStream::from(fd))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Serves one connection on a thread of its own, request after request, until boundary
/// closes it (or breaks the protocol).
fn handle(conn: UnixStream) {
    let serve_one = move || {
        let mut conn = conn;
        while let Ok(req) = read_request(&mut conn) {
            let result = perform(&req);
            if conn.write_all(&result.to_ne_bytes()).is_err() {
                return;
            }
        }
    };
    // If no thread can be started, the connection is dropped: boundary sees it close and
    // refuses the send.
    let _ = std::thread::Builder::new().spawn(serve_one);
}

fn perform(req: &Request) -> i64 {
    if req.connect {
        return match crate::sys::connect_raw(req.sock.as_fd(), &req.name) {
            Ok(()) => 0,
            Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
        };
    }
    let sent = crate::sys::send_msg(
        req.sock.as_fd(),
        &req.name,
        &req.data,
        &req.control,
        req.flags,
    );
    match sent {
        Ok(n) => n as i64,
        Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sender request: {what}"),
    )
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

fn read_request(conn: &mut UnixStream) -> io::Result<Request> {
    let mut hdr = [0u8; HDR];
    let (n, mut fds) = crate::sys::recv_with_fds(conn.as_fd(), &mut hdr)?;
    if n == 0 {
        return Err(invalid("no header"));
    }
    conn.read_exact(&mut hdr[n..])?;
    let flags = i32::from_ne_bytes(hdr[..4].try_into().expect("4 bytes"));
    let kind = u32_at(&hdr, 4) as u32;
    let (has_dest, connect) = (kind & HAS_DEST != 0, kind & CONNECT != 0);
    let (name_len, ctl_len, nfds) = (u32_at(&hdr, 8), u32_at(&hdr, 12), u32_at(&hdr, 24));
    let data_len = u64::from_ne_bytes(hdr[16..24].try_into().expect("8 bytes")) as usize;
    if name_len > MAX_NAME || ctl_len > MAX_CONTROL || data_len > MAX_DATA || nfds > MAX_FDS {
        return Err(invalid("too large"));
    }
    while fds.len() < nfds {
        let mut b = [0u8; 1];
        let (n, more) = crate::sys::recv_with_fds(conn.as_fd(), &mut b)?;
        if n == 0 || more.is_empty() {
            return Err(invalid("descriptors missing"));
        }
        fds.extend(more);
    }
    if fds.len() != nfds || nfds < 1 + usize::from(has_dest) {
        return Err(invalid("descriptor count"));
    }
    let mut body = vec![0u8; name_len + ctl_len + data_len];
    conn.read_exact(&mut body)?;
    let data = body.split_off(name_len + ctl_len);
    let control = body.split_off(name_len);
    let mut fds = fds.into_iter();
    let sock = fds.next().expect("counted");
    let held: Vec<OwnedFd> = fds.collect();
    let name = if has_dest {
        // Relative to our working directory, /proc/self/fd: the checked socket file itself.
        super::connect::sockaddr_un(held[0].as_raw_fd().to_string().as_bytes())
    } else {
        body
    };
    let mut rights = held[usize::from(has_dest)..].iter().map(AsRawFd::as_raw_fd);
    let control = map_control(
        &control,
        |_, _| Ok(()),
        |_| rights.next().ok_or(libc::EINVAL),
    )
    .map_err(|_| invalid("control messages"))?;
    if rights.next().is_some() {
        return Err(invalid("descriptors left over"));
    }
    Ok(Request {
        sock,
        name,
        data,
        control,
        flags,
        connect,
        _held: held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_send_with_many_descriptors_arrives_and_errors_come_back() {
        let (ours, theirs) = socketpair_seqpacket();
        std::thread::spawn(move || serve(theirs));
        let sender = Sender::new(ours);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        // 20 files: more than one SCM_RIGHTS batch between boundary and the sender.
        let files: Vec<OwnedFd> = (0..20)
            .map(|_| std::fs::File::open("/dev/null").unwrap().into())
            .collect();
        let numbers: Vec<u8> = files
            .iter()
            .flat_map(|f| f.as_raw_fd().to_ne_bytes())
            .collect();
        let mut control = ((16 + numbers.len()) as u64).to_ne_bytes().to_vec();
        control.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        control.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        control.extend_from_slice(&numbers);
        let m = Message {
            name: super::super::connect::sockaddr_un(path.as_os_str().as_encoded_bytes()),
            dest: None,
            data: b"hello".to_vec(),
            control,
            rights: files,
        };
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        assert_eq!(sender.send(sock.as_fd(), &m, flags).unwrap(), 5);
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut buf = [0u8; 16];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 20]);
        let got = recvmsg::<()>(
            receiver.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let mut received = Vec::new();
        for c in got.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(list) = c {
                received.extend(list);
            }
        }
        let n = got.bytes;
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(received.len(), 20);
        for fd in received {
            let _ = nix::unistd::close(fd);
        }
        // The socket's own error comes back as the send's errno.
        let gone = Message {
            name: super::super::connect::sockaddr_un(b"/nonexistent/boundary.sock"),
            dest: None,
            data: b"x".to_vec(),
            control: Vec::new(),
            rights: Vec::new(),
        };
        let e = sender.send(sock.as_fd(), &gone, flags).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    fn socketpair_seqpacket() -> (OwnedFd, OwnedFd) {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }
}
