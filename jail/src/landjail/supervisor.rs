//! The seccomp user-notification supervisor: performs every `connect()` of the jailed processes
//! on their behalf, to a destination it has checked.
//!
//! For each notification: open a pidfd for the calling thread, copy the socket address out of
//! its memory (`process_vm_readv`), then confirm with `SECCOMP_IOCTL_NOTIF_ID_VALID` that the
//! thread is still blocked in that very syscall (so the pidfd and the memory we read belong to
//! it, not to a recycled id). The socket is taken with `pidfd_getfd` and its real family read
//! from the socket (`SO_DOMAIN`), which the target cannot change. The connect is then made here,
//! from our own copy of the address, and the result returned as the syscall's result. The kernel
//! is never told to continue the original call: between our check and the kernel's own read,
//! another thread of the target could rewrite the address or swap the descriptor.
//!
//! Decisions:
//! - TCP (AF_INET/AF_INET6 sockets; the filter allows no other kind): the proxy's listening
//!   addresses (127.0.0.1 and ::1 on the proxy port, and the IPv4-mapped form of 127.0.0.1);
//!   and a loopback address whose listening sockets (read from `/proc/net/tcp{,6}`) all belong
//!   to the jail, so a dev server the agent started is reachable but the host's own loopback
//!   services (a local SOCKS proxy, a database, another proxy) are not. Anything else fails
//!   with `EACCES`. `AF_UNSPEC` (disconnect) is passed on.
//! - `listen()`: the socket's inode is recorded as the jail's, then the kernel continues the
//!   call. Continuing is safe here: if another thread swaps the descriptor meanwhile, the
//!   socket that ends up listening is simply not recorded, and the one recorded did belong to a
//!   jailed process either way.
//! - AF_UNIX, filesystem names: a Unix socket in the filesystem is not the network, and agents
//!   need them (ssh-agent, git credential helpers, language servers). The path is resolved from
//!   the target's own root and working directory (`/proc/<tid>/root`, `/proc/<tid>/cwd`) into an
//!   `O_PATH` descriptor, checked to be a socket that is not one of the hidden paths (the agent's
//!   audit socket), and connected through `/proc/self/fd/<n>`, so the socket connected is the
//!   one checked even if the path changes meanwhile.
//! - AF_UNIX, abstract names: refused with `EACCES`. The supervisor sits outside the Landlock
//!   domain, so connecting from here would bypass the scoping that keeps abstract sockets of
//!   the host out of reach; jailed programs rarely need abstract sockets.
//! - AF_NETLINK (only route and sock_diag sockets exist in the jail): passed on; netlink talks
//!   to the local kernel.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
use tracing::{debug, info, warn};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread, so `pidfd_getfd` uses the descriptor
/// table of the thread that made the call.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// What the supervisor needs to decide.
pub(crate) struct Policy {
    /// The only TCP destinations allowed: the proxy's listeners.
    pub(crate) allowed: HashSet<SocketAddr>,
    /// Sockets that must not be connected to (the agent's audit socket).
    pub(crate) hidden: Vec<PathBuf>,
    /// Inodes of sockets on which a jailed process called `listen()`.
    pub(crate) jail_listeners: Mutex<HashSet<u64>>,
}

/// A connect decision before it is carried out.
enum Action {
    Connect(Vec<u8>),
    ConnectUnixFd(OwnedFd),
}

/// Serves notifications on `notify` until every jailed process has exited.
pub(crate) fn serve(notify: OwnedFd, policy: Arc<Policy>) {
    // This thread and the connect threads it starts (they inherit it) work without effective
    // capabilities.
    drop_effective_capabilities();
    let mut fds = [libc::pollfd {
        fd: notify.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let notify = Arc::new(notify);
    loop {
        // SAFETY: poll on one valid pollfd, no timeout.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "landjail supervisor: poll failed; jailed connects will fail");
            return;
        }
        let rev = fds[0].revents;
        if rev & libc::POLLIN == 0 {
            if rev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                debug!("landjail supervisor: no jailed process left");
                return;
            }
            continue;
        }
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into `req`.
        let r = unsafe {
            libc::ioctl(
                notify.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut req as *mut libc::seccomp_notif,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The caller died or was interrupted before we took the notification.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => {
                    warn!(error = %e, "landjail supervisor: cannot receive notifications");
                    return;
                }
            }
        }
        // Checks run here; only a connect that may block (a blocking socket) gets a thread of
        // its own, so a busy listener cannot hold up the other jailed processes. (A target that
        // flips its socket to blocking right after the check only stalls its own jail, and at
        // most for the kernel's SYN retries, since the destination is local.)
        let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_notification(&req, &policy, notify.as_raw_fd())
        }))
        .unwrap_or_else(|_| {
            warn!("landjail supervisor: a connect check panicked; refusing it");
            Work::Answer(Some(Reply::Result(Err(libc::EACCES))))
        });
        match work {
            Work::Answer(reply) => respond(notify.as_raw_fd(), req.id, reply),
            Work::Connect(c) if !c.may_block() => {
                respond(notify.as_raw_fd(), req.id, Some(Reply::Result(c.perform())))
            }
            Work::Connect(c) => {
                let notify2 = Arc::clone(&notify);
                let id = req.id;
                let spawned = std::thread::Builder::new()
                    .name("landjail-connect".into())
                    .spawn(move || {
                        respond(notify2.as_raw_fd(), id, Some(Reply::Result(c.perform())))
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "landjail supervisor: cannot start a thread; refusing the connect");
                    respond(
                        notify.as_raw_fd(),
                        id,
                        Some(Reply::Result(Err(libc::EAGAIN))),
                    );
                }
            }
        }
    }
}

/// What a notification needs after its checks.
enum Work {
    /// Answer now (`None`: the target is gone, answer nothing).
    Answer(Option<Reply>),
    /// A checked connect to carry out.
    Connect(CheckedConnect),
}

/// The target's socket and the destination that passed the checks.
struct CheckedConnect {
    sock: OwnedFd,
    action: Action,
}

impl CheckedConnect {
    /// A blocking socket's connect can wait (a full backlog, a slow peer).
    fn may_block(&self) -> bool {
        // SAFETY: F_GETFL on a valid descriptor.
        let flags = unsafe { libc::fcntl(self.sock.as_raw_fd(), libc::F_GETFL) };
        flags < 0 || flags & libc::O_NONBLOCK == 0
    }

    fn perform(self) -> Result<i64, i32> {
        let result = match &self.action {
            Action::Connect(bytes) => raw_connect(&self.sock, bytes),
            Action::ConnectUnixFd(target) => {
                let path = format!("/proc/self/fd/{}", target.as_raw_fd());
                raw_connect(&self.sock, &sockaddr_un(path.as_bytes()))
            }
        };
        result.map(|()| 0)
    }
}

/// The answer to one notification.
enum Reply {
    /// The syscall's result: a value or an errno.
    Result(Result<i64, i32>),
    /// Let the kernel run the syscall (only for `listen`).
    Continue,
}

/// Clears this thread's effective capabilities (capabilities are per thread in Linux), so the
/// connects the supervisor makes for the target pass the same permission checks as the target's own would:
/// when boundary runs as root, the capability-less jailed root must not reach a Unix socket
/// through the supervisor that it could not reach itself. Reading the target's memory and
/// taking its descriptors need no capability: same user, and the target has none.
fn drop_effective_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write a v3 header and two data structs, valid locals.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) != 0 {
            return;
        }
        if data.iter().all(|d| d.effective == 0) {
            return;
        }
        for d in &mut data {
            d.effective = 0;
        }
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) != 0 {
            debug!(error = %io::Error::last_os_error(), "landjail supervisor: cannot drop capabilities in the connect thread");
        }
    }
}

/// Sends the answer; `None` means the target is gone and nothing is sent.
fn respond(notify: RawFd, id: u64, reply: Option<Reply>) {
    let Some(reply) = reply else { return };
    let (val, error, flags) = match reply {
        Reply::Result(Ok(v)) => (v, 0, 0),
        Reply::Result(Err(errno)) => (0, -errno, 0),
        Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from a valid local.
    let r = unsafe {
        libc::ioctl(
            notify,
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    };
    if r < 0 {
        debug!(error = %io::Error::last_os_error(), "landjail supervisor: target left before the answer");
    }
}

fn id_valid(id: u64, notify: RawFd) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads one u64 from a valid local.
    unsafe {
        libc::ioctl(
            notify,
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &mut id as *mut u64,
        ) == 0
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EACCES)
}

/// A pidfd for the calling thread. Before Linux 6.9 (no `PIDFD_THREAD`) only thread-group
/// leaders have pidfds, so the thread's process is used; its descriptor table is the thread's
/// unless the thread was made without `CLONE_FILES`, which threading libraries never do.
fn thread_pidfd(tid: Pid) -> Result<OwnedFd, rustix::io::Errno> {
    match pidfd_open(tid, PidfdFlags::from_bits_retain(PIDFD_THREAD)) {
        Err(rustix::io::Errno::INVAL) => {
            let status = std::fs::read_to_string(format!("/proc/{}/status", tid.as_raw_nonzero()))
                .map_err(|_| rustix::io::Errno::SRCH)?;
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
                .and_then(Pid::from_raw)
                .ok_or(rustix::io::Errno::SRCH)?;
            pidfd_open(tgid, PidfdFlags::empty())
        }
        other => other,
    }
}

/// Checks one notification.
fn check_notification(req: &libc::seccomp_notif, policy: &Policy, notify: RawFd) -> Work {
    let nr = i64::from(req.data.nr);
    if nr == libc::SYS_connect {
        match check_connect(req, policy, notify) {
            None => Work::Answer(None),
            Some(Err(e)) => Work::Answer(Some(Reply::Result(Err(e)))),
            Some(Ok(c)) => Work::Connect(c),
        }
    } else if nr == libc::SYS_listen {
        Work::Answer(handle_listen(req, policy, notify))
    } else {
        Work::Answer(Some(Reply::Result(Err(libc::ENOSYS))))
    }
}

fn handle_listen(req: &libc::seccomp_notif, policy: &Policy, notify: RawFd) -> Option<Reply> {
    let tid = req.pid;
    let target_fd = req.data.args[0] as i32;
    let pid = Pid::from_raw(tid as i32)?;
    let pidfd = thread_pidfd(pid).ok()?;
    if !id_valid(req.id, notify) {
        return None;
    }
    if let Ok(sock) = pidfd_getfd(&pidfd, target_fd, PidfdGetfdFlags::empty()) {
        if let Ok(meta) = std::fs::File::from(sock).metadata() {
            if meta.mode() & libc::S_IFMT == libc::S_IFSOCK {
                let mut set = policy
                    .jail_listeners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                set.insert(meta.ino());
            }
        }
    }
    Some(Reply::Continue)
}

/// Checks one `connect()`; `None` when the target is no longer waiting.
fn check_connect(
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
    let Some(pid) = Pid::from_raw(tid as i32) else {
        return Some(Err(libc::ESRCH));
    };
    let pidfd = match thread_pidfd(pid) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(e.raw_os_error())),
    };
    let mut addr = vec![0u8; addr_len as usize];
    if addr_len > 0 {
        let mut local = [io::IoSliceMut::new(&mut addr)];
        let remote = [nix::sys::uio::RemoteIoVec {
            base: addr_ptr as usize,
            len: addr_len as usize,
        }];
        let who = nix::unistd::Pid::from_raw(tid as i32);
        match nix::sys::uio::process_vm_readv(who, &mut local, &remote) {
            Ok(n) if n == addr_len as usize => {}
            Ok(_) => return Some(Err(libc::EFAULT)),
            Err(e) => {
                debug!(error = %e, tid, "landjail supervisor: cannot read the connect address");
                // EPERM: the thread is not inspectable (non-dumpable); refuse, do not guess.
                let errno = match e {
                    nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => libc::EACCES,
                    _ => libc::EFAULT,
                };
                return Some(Err(errno));
            }
        }
    }
    // The thread is still in this syscall: the pidfd and the bytes read are its own.
    if !id_valid(req.id, notify) {
        return None;
    }
    let sock = match pidfd_getfd(&pidfd, target_fd, PidfdGetfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(e.raw_os_error())),
    };
    let domain = match socket_domain(&sock) {
        Ok(d) => d,
        Err(e) => return Some(Err(errno(&e))),
    };
    let action = match decide(domain, &addr, tid, policy) {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(CheckedConnect { sock, action }))
}

fn socket_domain(sock: &OwnedFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into a valid local.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn raw_connect(sock: &OwnedFd, addr: &[u8]) -> Result<(), i32> {
    // Copy into an aligned sockaddr_storage so the kernel sees a properly aligned struct.
    // SAFETY: sockaddr_storage is plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = addr
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies n <= sizeof(ss) bytes into ss.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    // SAFETY: connect reads n bytes of a valid sockaddr_storage.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            n as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(errno(&io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn sockaddr_un(path: &[u8]) -> Vec<u8> {
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

/// Parses an AF_INET/AF_INET6 address the way the kernel does (length checks included).
pub(crate) fn parse_inet(addr: &[u8]) -> Result<SocketAddr, i32> {
    if addr.len() < 2 {
        return Err(libc::EINVAL);
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    if addr.len() < 16 {
        return Err(libc::EINVAL);
    }
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            Ok(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&addr[8..24]);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Err(libc::EINVAL),
    }
}

/// Whether `dest` is one of the proxy's listeners (IPv4-mapped IPv6 counts as IPv4).
pub(crate) fn allowed(dest: SocketAddr, policy: &Policy) -> bool {
    let canon = match dest {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => dest,
        },
        v4 => v4,
    };
    policy.allowed.contains(&canon)
}

fn decide(domain: i32, addr: &[u8], tid: u32, policy: &Policy) -> Result<Action, i32> {
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
            let dest = parse_inet(addr)?;
            if !allowed(dest, policy) {
                if is_loopback(dest.ip()) {
                    local_listener_is_jails(dest, policy, tid)?;
                } else {
                    info!(%dest, tid, "landjail: refused a connect that does not go to the proxy");
                    return Err(libc::EACCES);
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
                info!(
                    tid,
                    "landjail: refused a connect to an abstract Unix socket"
                );
                return Err(libc::EACCES);
            }
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let path = &name[..end];
            let fd = open_in_target(tid, path).map_err(|e| errno(&e))?;
            let meta = std::fs::File::from(fd.try_clone().map_err(|e| errno(&e))?)
                .metadata()
                .map_err(|e| errno(&e))?;
            if meta.mode() & libc::S_IFMT != libc::S_IFSOCK {
                return Err(libc::ECONNREFUSED);
            }
            for h in &policy.hidden {
                if let Ok(hm) = std::fs::metadata(h) {
                    if hm.dev() == meta.dev() && hm.ino() == meta.ino() {
                        info!(path = %h.display(), tid, "landjail: refused a connect to a hidden socket");
                        return Err(libc::EACCES);
                    }
                }
            }
            Ok(Action::ConnectUnixFd(fd))
        }
        libc::AF_NETLINK => Ok(Action::Connect(addr.to_vec())),
        _ => Err(libc::EACCES),
    }
}

/// Opens `path` with `O_PATH` as the target thread would resolve it.
fn open_in_target(tid: u32, path: &[u8]) -> io::Result<OwnedFd> {
    let (base, rel): (String, &[u8]) = if path.first() == Some(&b'/') {
        (format!("/proc/{tid}/root"), &path[1..])
    } else {
        (format!("/proc/{tid}/cwd"), path)
    };
    let dir = std::fs::File::open(&base)?;
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    let c = std::ffi::CString::new(OsStr::from_bytes(rel).as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat on a valid directory fd with a NUL-terminated path; returns a new fd.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// One listening TCP socket from `/proc/net/tcp{,6}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Listener {
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    pub(crate) inode: u64,
}

/// Parses the listening sockets out of the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub(crate) fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        // The kernel prints each 32-bit word of the address as a native-endian number.
        let mut bytes = Vec::with_capacity(16);
        for chunk in ip_hex.as_bytes().chunks(8) {
            let Ok(w) = std::str::from_utf8(chunk).map(|c| u32::from_str_radix(c, 16)) else {
                break;
            };
            let Ok(w) = w else { break };
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        let ip = match bytes.len() {
            4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&bytes);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => continue,
        };
        out.push(Listener { ip, port, inode });
    }
    out
}

/// Whether a listener would take a connection to `dest` (same address or a wildcard; an
/// IPv6 wildcard may be dual-stack, so it counts for IPv4 too).
pub(crate) fn listener_matches(l: &Listener, dest: SocketAddr) -> bool {
    if l.port != dest.port() {
        return false;
    }
    let dest_ip = match dest.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match (l.ip, dest_ip) {
        (IpAddr::V4(a), IpAddr::V4(d)) => a == d || a.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V4(d)) => a.is_unspecified() || a.to_ipv4_mapped() == Some(d),
        (IpAddr::V6(a), IpAddr::V6(d)) => a == d || a.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Allows a loopback destination only when every socket listening there is the jail's own.
fn local_listener_is_jails(dest: SocketAddr, policy: &Policy, tid: u32) -> Result<(), i32> {
    let mut matching = Vec::new();
    // The target's network namespace, which the filter keeps equal to its sockets' one.
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/net/{file}")) {
            matching.extend(
                parse_proc_net_tcp(&text)
                    .into_iter()
                    .filter(|l| listener_matches(l, dest)),
            );
        }
    }
    if matching.is_empty() {
        return Err(libc::ECONNREFUSED);
    }
    let set = policy
        .jail_listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if matching.iter().all(|l| set.contains(&l.inode)) {
        Ok(())
    } else {
        info!(%dest, tid, "landjail: refused a connect to a loopback service outside the jail");
        Err(libc::EACCES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_is_parsed() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let l = parse_proc_net_tcp(v4);
        assert_eq!(
            l,
            vec![Listener {
                ip: "127.0.0.1".parse().unwrap(),
                port: 8080,
                inode: 12345
            }]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        let l = parse_proc_net_tcp(v6);
        assert_eq!(
            l,
            vec![Listener {
                ip: "::1".parse().unwrap(),
                port: 8080,
                inode: 777
            }]
        );
    }

    #[test]
    fn wildcards_match_loopback_destinations() {
        let l = |ip: &str, port| Listener {
            ip: ip.parse().unwrap(),
            port,
            inode: 1,
        };
        let d: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(listener_matches(&l("0.0.0.0", 80), d));
        assert!(listener_matches(&l("127.0.0.1", 80), d));
        assert!(listener_matches(&l("::", 80), d));
        assert!(!listener_matches(&l("127.0.0.2", 80), d));
        assert!(!listener_matches(&l("127.0.0.1", 81), d));
        assert!(!listener_matches(&l("::1", 80), d));
        let d6: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(listener_matches(&l("::1", 80), d6));
        assert!(!listener_matches(&l("127.0.0.1", 80), d6));
    }

    #[test]
    fn only_the_proxy_listeners_are_allowed() {
        let p = Policy {
            allowed: ["127.0.0.1:8080", "[::1]:8080"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            hidden: vec![],
            jail_listeners: Mutex::new(HashSet::new()),
        };
        assert!(allowed("127.0.0.1:8080".parse().unwrap(), &p));
        assert!(allowed("[::ffff:127.0.0.1]:8080".parse().unwrap(), &p));
        assert!(allowed("[::1]:8080".parse().unwrap(), &p));
        assert!(!allowed("127.0.0.2:8080".parse().unwrap(), &p));
        assert!(!allowed("10.0.0.1:8080".parse().unwrap(), &p));
        assert!(!allowed("127.0.0.1:8081".parse().unwrap(), &p));
        assert!(!allowed("0.0.0.0:8080".parse().unwrap(), &p));
    }

    #[test]
    fn short_or_foreign_addresses_are_rejected_like_the_kernel_does() {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&[0, 80, 127, 0, 0, 1]);
        assert_eq!(parse_inet(&a), Err(libc::EINVAL));
        a.extend_from_slice(&[0; 8]);
        assert_eq!(parse_inet(&a), Ok("127.0.0.1:80".parse().unwrap()));
        let mut b = a.clone();
        b[0..2].copy_from_slice(&(libc::AF_APPLETALK as u16).to_ne_bytes());
        assert_eq!(parse_inet(&b), Err(libc::EAFNOSUPPORT));
        // Any length the target may pass, however short, is an error and never a panic.
        for n in 0..a.len() {
            assert!(parse_inet(&a[..n]).is_err(), "length {n}");
        }
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.resize(23, 0);
        assert_eq!(parse_inet(&v6), Err(libc::EINVAL));
        v6.push(0);
        assert!(parse_inet(&v6).is_ok());
    }
}
