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
//! Both jails use it: landjail for every `connect()` and `listen()` (it shares the host's
//! network namespace), nsjail for every `connect()` (its notification descriptor is created by
//! the jail's init and handed to boundary over the helper's socketpair).
//!
//! Decisions:
//! - TCP in landjail (AF_INET/AF_INET6 sockets; the filter allows no other kind): the proxy's
//!   listening addresses (127.0.0.1 and ::1 on the proxy port, and the IPv4-mapped form of
//!   127.0.0.1); and a loopback address whose listening sockets (read from
//!   `/proc/net/tcp{,6}`) all belong to the jail, so a dev server the agent started is
//!   reachable but the host's own loopback services are not. Anything else fails with
//!   `EACCES`. `AF_UNSPEC` (disconnect) is passed on ([`tcp`]).
//! - TCP, UDP and netlink in nsjail: connected as asked. The socket lives in the jail's network
//!   namespace, where netfilter decides every packet.
//! - `listen()` (landjail): refused with `EACCES` unless the socket is bound to a loopback
//!   address (an unbound socket would be bound to every address), so no host elsewhere reaches
//!   a jailed server; the listen is then made here on the checked socket (never continued: a
//!   swapped descriptor cannot slip through), and the socket's inode recorded as the jail's.
//! - AF_UNIX, filesystem names: the Unix socket policy ([`unix`]): resolved in the target's
//!   root and working directory into an `O_PATH` descriptor, decided on the socket's identity
//!   and listener, and connected through `/proc/self/fd/<n>`, so the socket connected is the
//!   one checked even if the path changes meanwhile.
//! - AF_UNIX, abstract names: landjail refuses them with `EACCES` (the supervisor sits outside
//!   the Landlock domain, so connecting from here would bypass the scoping that keeps abstract
//!   sockets of the host out of reach); in nsjail the abstract namespace is the jail's own
//!   network namespace's, so they are connected.
//! - AF_NETLINK (only route and sock_diag sockets exist in landjail): passed on; netlink talks
//!   to the local kernel.

mod connect;
pub(crate) mod diag;
mod target;
pub(crate) mod tcp;
pub mod unix;

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use nix::sys::socket::SockaddrStorage;

use tracing::{debug, warn};

use connect::{check_connect, socket_domain, CheckedConnect};
use target::thread_pidfd;

/// What the supervisor needs to decide.
pub(crate) struct Policy {
    /// Which network the jailed sockets are in.
    pub(crate) net: Net,
    /// Which Unix sockets the jail may connect to.
    pub(crate) unix: unix::UnixPolicy,
    /// Inodes of sockets on which a jailed process called `listen()` (landjail).
    pub(crate) jail_listeners: Mutex<HashSet<u64>>,
}

/// The network the jailed processes' sockets live in.
pub(crate) enum Net {
    /// landjail: the host's network namespace; TCP may reach only `proxy` and the jail's own
    /// loopback servers.
    Host {
        /// The proxy's listening addresses.
        proxy: HashSet<SocketAddr>,
    },
    /// nsjail: the jail's own network namespace, where netfilter decides every packet.
    Namespace {
        /// A sock_diag socket created inside that namespace (lists the jail's Unix sockets).
        diag: OwnedFd,
    },
}

impl Policy {
    fn listeners(&self) -> unix::Listeners<'_> {
        match &self.net {
            Net::Host { .. } => unix::Listeners {
                jail_ns: None,
                jail_inodes: Some(&self.jail_listeners),
            },
            Net::Namespace { diag } => unix::Listeners {
                jail_ns: Some(diag),
                jail_inodes: None,
            },
        }
    }
}

/// Serves notifications on `notify` until every jailed process has exited.
pub(crate) fn serve(notify: OwnedFd, policy: Arc<Policy>) {
    // This thread and the connect threads it starts (they inherit it) work without effective
    // capabilities.
    drop_effective_capabilities();
    let notify = Arc::new(notify);
    loop {
        let rev = match crate::sys::poll_in(notify.as_fd()) {
            Ok(rev) => rev,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(error = %e, "landjail supervisor: poll failed; jailed connects will fail");
                return;
            }
        };
        if rev & libc::POLLIN == 0 {
            if rev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                debug!("landjail supervisor: no jailed process left");
                return;
            }
            continue;
        }
        let req = match crate::sys::notif_recv(notify.as_raw_fd()) {
            Ok(req) => req,
            // The caller died or was interrupted before we took the notification.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINTR)) => {
                continue
            }
            Err(e) => {
                warn!(error = %e, "landjail supervisor: cannot receive notifications");
                return;
            }
        };
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

/// Receives the notification listener sent by the jail over a socketpair (SCM_RIGHTS).
pub(crate) fn recv_listener(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let (_, fds) = crate::sys::recv_with_fds(sock.as_fd(), &mut byte)?;
    fds.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the jail exited before handing over its seccomp listener",
        )
    })
}

/// Sends the notification listener to the supervisor's side of a socketpair (nsjail's init).
pub(crate) fn send_listener(sock: &UnixStream, listener: &OwnedFd) -> io::Result<()> {
    crate::sys::send_with_fds(sock.as_fd(), b"L", &[listener.as_raw_fd()])?;
    Ok(())
}

/// Starts the supervisor on a thread of its own; it ends when no jailed process is left.
pub(crate) fn spawn(notify: OwnedFd, policy: Arc<Policy>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("jail-supervisor".into())
        .spawn(move || serve(notify, policy))
        .map(|_| ())
}

/// Adds the supervisor's rule to a jail's filter: every `connect()` is decided here.
pub(crate) fn add_rules(f: &mut crate::seccomp::Filter) {
    f.set(libc::SYS_connect, crate::seccomp::Action::Notify);
}

/// What a notification needs after its checks.
enum Work {
    /// Answer now (`None`: the target is gone, answer nothing).
    Answer(Option<Reply>),
    /// A checked connect to carry out.
    Connect(CheckedConnect),
}

/// The answer to one notification.
enum Reply {
    /// The syscall's result: a value or an errno.
    Result(Result<i64, i32>),
}

/// Clears this thread's effective capabilities (capabilities are per thread in Linux), so the
/// connects the supervisor makes for the target pass the same permission checks as the target's own would:
/// when boundary runs as root, the capability-less jailed root must not reach a Unix socket
/// through the supervisor that it could not reach itself. Reading the target's memory and
/// taking its descriptors need no capability: same user, and the target has none.
fn drop_effective_capabilities() {
    if let Err(e) = crate::sys::drop_effective_capabilities() {
        debug!(error = %e, "landjail supervisor: cannot drop capabilities in the connect thread");
    }
}

/// Sends the answer; `None` means the target is gone and nothing is sent.
fn respond(notify: RawFd, id: u64, reply: Option<Reply>) {
    let Some(reply) = reply else { return };
    let (val, errno) = match reply {
        Reply::Result(Ok(v)) => (v, 0),
        Reply::Result(Err(errno)) => (0, errno),
    };
    if let Err(e) = crate::sys::notif_send(notify, id, val, errno) {
        debug!(error = %e, "landjail supervisor: target left before the answer");
    }
}

fn id_valid(id: u64, notify: RawFd) -> bool {
    crate::sys::notif_id_valid(notify, id)
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EACCES)
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
    let backlog = req.data.args[1] as i32;
    let pidfd = thread_pidfd(tid).ok()?;
    if !id_valid(req.id, notify) {
        return None;
    }
    let sock = match crate::sys::pidfd_getfd(&pidfd, target_fd) {
        Ok(fd) => fd,
        Err(e) => return Some(Reply::Result(Err(errno(&e)))),
    };
    let domain = match socket_domain(&sock) {
        Ok(d) => d,
        Err(e) => return Some(Reply::Result(Err(errno(&e)))),
    };
    if matches!(policy.net, Net::Host { .. })
        && (domain == libc::AF_INET || domain == libc::AF_INET6)
    {
        let local = match nix::sys::socket::getsockname::<SockaddrStorage>(sock.as_raw_fd()) {
            Ok(a) => a,
            Err(e) => return Some(Reply::Result(Err(e as i32))),
        };
        let local = match (local.as_sockaddr_in(), local.as_sockaddr_in6()) {
            (Some(v4), _) => SocketAddr::from(SocketAddrV4::from(*v4)),
            (_, Some(v6)) => SocketAddr::from(SocketAddrV6::from(*v6)),
            _ => return Some(Reply::Result(Err(libc::EINVAL))),
        };
        if let Err(e) = tcp::check_listen(local, tid) {
            return Some(Reply::Result(Err(e)));
        }
    }
    // Our copy of the target's socket: the same open file, so the target's socket listens.
    if let Err(e) = crate::sys::listen(sock.as_fd(), backlog) {
        return Some(Reply::Result(Err(errno(&e))));
    }
    if let Ok(meta) = rustix::fs::fstat(&sock) {
        let mut set = policy
            .jail_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.insert(meta.st_ino);
    }
    Some(Reply::Result(Ok(0)))
}
