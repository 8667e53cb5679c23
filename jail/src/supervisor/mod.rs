//! The seccomp user-notification supervisor: performs every `connect()` of the jailed processes,
//! and every send that names a destination, on their behalf, to a destination it has checked.
//!
//! For each notification: open a pidfd for the calling thread, copy the socket address out of
//! its memory (`process_vm_readv`), then confirm with `SECCOMP_IOCTL_NOTIF_ID_VALID` that the
//! thread is still blocked in that very syscall (so the pidfd and the memory we read belong to
//! it, not to a recycled id). The socket is taken with `pidfd_getfd` and its real family read
//! from the socket (`SO_DOMAIN`), which the target cannot change. The connect is then made from
//! our own copy of the address (here in landjail; in nsjail by the sender process, which has
//! the jail's own credentials, see [`sender`]), and the result returned as the syscall's result.
//! The kernel is never told to continue the original call: between our check and the kernel's
//! own read, another thread of the target could rewrite the address or swap the descriptor.
//!
//! Both jails use it: landjail for every `connect()` and `listen()` (it shares the host's
//! network namespace), nsjail for every `connect()` (its notification descriptor is created by
//! the jail's init and handed to boundary over the helper's socketpair).
//!
//! Decisions:
//! - TCP in landjail (AF_INET/AF_INET6 sockets; the filter allows no other kind): the proxy's
//!   listening addresses (127.0.0.1 and ::1 on the proxy port, and the IPv4-mapped form of
//!   127.0.0.1); and a loopback address whose listening sockets (asked of the kernel with a
//!   `sock_diag` query for the listeners on that port, [`diag`]) all belong to the jail, so
//!   a dev server the agent started is reachable but the host's own loopback services are
//!   not. Anything else fails with `EACCES`. `AF_UNSPEC` (disconnect) is passed on ([`tcp`]).
//! - TCP, UDP and netlink in nsjail: connected as asked (by the sender, so a netlink connect
//!   naming multicast groups is checked against the jail's capabilities, not boundary's). The
//!   socket lives in the jail's network namespace, where netfilter decides every packet.
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
//! - File metadata (landjail: `chmod`, `chown`, times, extended attributes): resolved like a
//!   Unix socket path, changed here through our own descriptor when the file lies beneath the
//!   paths the target may write ([`meta`]).
//! - `mount` (nsjail started by root, with nested sandboxes): a new mount only of memory
//!   file systems, made here from the copied arguments with the caller's rights
//!   ([`mount`]).
//! - Sends that name a destination (`sendto` with an address, every `sendmsg`, `sendmmsg`):
//!   copied out of the caller, a filesystem Unix destination decided by the same policy as
//!   `connect()` ([`send`]), and sent: by the supervisor in landjail, by nsjail's sender
//!   process, which has the jail's own credentials, in nsjail ([`sender`]).
//!
//! Why nsjail needs the sender: boundary's uid owns the jail's user namespace, and the kernel
//! grants the owner every capability inside it (effective set or not), so calls boundary made
//! for the jail would pass capability checks made on the caller (netlink changes to the jail's
//! own netfilter rules and routes, multicast netlink connects, `SO_MARK` control messages).
//!
//! The listener reaches boundary by `pidfd_getfd` ([`take_listener`]), not `SCM_RIGHTS`: once
//! the filter is installed, the installing process's own `sendmsg` would wait for a supervisor
//! that does not have the listener yet.

mod connect;
pub(crate) mod diag;
pub(crate) mod meta;
pub(crate) mod mount;
mod send;
pub(crate) mod sender;
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

use connect::{check_connect, socket_domain};
use target::thread_pidfd;

/// What the supervisor needs to decide.
pub(crate) struct Policy {
    /// Which network the jailed sockets are in.
    pub(crate) net: Net,
    /// Which Unix sockets the jail may connect to.
    pub(crate) unix: unix::UnixPolicy,
    /// Inodes of sockets on which a jailed process called `listen()` (landjail).
    pub(crate) jail_listeners: Mutex<HashSet<u64>>,
    /// landjail: where the target may change file metadata ([`meta`]); `None` in nsjail,
    /// whose filter does not send those calls.
    pub(crate) files: Option<meta::WritableRoots>,
    /// nsjail started by root with nested sandboxes: `mount` calls come here and are made
    /// from the supervisor's copy of their arguments ([`mount`]); otherwise none are sent.
    pub(crate) nested_mounts: bool,
    /// Who made each TCP connect, for the proxy to name the requesting process
    /// (`crate::attribution`).
    pub(crate) connects: Arc<crate::attribution::ConnectLog>,
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
        /// The process that carries out checked sends with the jail's credentials
        /// ([`sender`]); landjail sends from the supervisor itself.
        sender: Arc<sender::Sender>,
    },
}

impl Policy {
    fn listeners(&self) -> unix::Listeners<'_> {
        match &self.net {
            Net::Host { .. } => unix::Listeners {
                jail_ns: None,
                jail_inodes: Some(&self.jail_listeners),
            },
            Net::Namespace { diag, .. } => unix::Listeners {
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
    let waiting = Waiting::new(MAX_WAITING_CALLS);
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
            Work::Perform { may_block, job } if !may_block => {
                respond(notify.as_raw_fd(), req.id, Some(Reply::Result(job())))
            }
            Work::Perform { job, .. } => {
                let notify2 = Arc::clone(&notify);
                let id = req.id;
                let slot = waiting.take();
                let spawned = std::thread::Builder::new()
                    .name("jail-blocking-call".into())
                    .spawn(move || {
                        let _slot = slot;
                        respond(notify2.as_raw_fd(), id, Some(Reply::Result(job())))
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "jail supervisor: cannot start a thread; refusing the call");
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

/// Most calls (connects, sends, mounts) that wait on threads of their own at once, per jail.
/// Beyond it the supervisor waits for one to finish before it takes the next notification, so
/// the jail's further calls wait too: a jail that parks thousands of blocking sends on sockets
/// nobody reads stalls itself, and cannot make boundary start a thread (and hold a copy of
/// the message and a descriptor) for each.
const MAX_WAITING_CALLS: usize = 64;

/// Counts the calls waiting on their own threads ([`MAX_WAITING_CALLS`]).
struct Waiting {
    count: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

/// One waiting call's place; frees it when dropped (its thread ends).
struct Slot(Arc<Waiting>);

impl Waiting {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            count: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max,
        })
    }

    /// A place for one more waiting call, after waiting for one to end if all are taken.
    fn take(self: &Arc<Self>) -> Slot {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        if *n >= self.max {
            warn!(
                waiting = *n,
                "jail supervisor: {} of the jail's calls are waiting (sends on full sockets, \
                 connects to busy listeners); its further connects and sends wait until one ends",
                self.max
            );
            while *n >= self.max {
                n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
            }
        }
        *n += 1;
        Slot(Arc::clone(self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

/// Takes the notification listener from the jailed process that installed the filter: it
/// writes the listener's descriptor number and its pid ([`offer_listener`]) and keeps the
/// listener open until we answer; we copy it with `pidfd_getfd` and answer one byte. Not sent
/// with `SCM_RIGHTS`: the filter sends every `sendmsg` to the supervisor, which does not have
/// the listener yet. `pidfd`: the offering process, when the caller already holds one.
pub(crate) fn take_listener(sock: &UnixStream, pidfd: Option<&OwnedFd>) -> io::Result<OwnedFd> {
    use std::io::{Read, Write};
    let gone = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the jail exited before handing over its seccomp listener",
        )
    };
    let mut msg = [0u8; 8];
    (&*sock).read_exact(&mut msg).map_err(|_| gone())?;
    let fd = i32::from_ne_bytes(msg[..4].try_into().expect("4 bytes"));
    let pid = u32::from_ne_bytes(msg[4..].try_into().expect("4 bytes"));
    let opened;
    let pidfd = match pidfd {
        Some(p) => p,
        None => {
            // The offering process is our child, blocked until we answer: its pid is not reused.
            opened = crate::sys::pidfd_open(pid)?;
            &opened
        }
    };
    let listener = crate::sys::pidfd_getfd(pidfd, fd).inspect_err(|_| {
        // The offering process waits for our answer and may hold a copy of our end too:
        // without this it would wait forever instead of failing its start.
        let _ = sock.shutdown(std::net::Shutdown::Both);
    })?;
    (&*sock).write_all(&[1])?;
    Ok(listener)
}

/// Offers the notification listener to [`take_listener`] and waits until it is taken; the
/// caller then closes its copy (nsjail's init).
pub(crate) fn offer_listener(sock: &UnixStream, listener: &OwnedFd) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut msg = listener.as_raw_fd().to_ne_bytes().to_vec();
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    (&*sock).write_all(&msg)?;
    let mut ack = [0u8; 1];
    (&*sock).read_exact(&mut ack)
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

/// `sendto` with an address, `sendmsg` and `sendmmsg` go to the supervisor ([`send`]); rules
/// already set for them (landjail's `MSG_FASTOPEN` refusal) are tried first. Both jails; nsjail's
/// sends are carried out by its sender process ([`sender`]).
pub(crate) fn add_send_rules(f: &mut crate::seccomp::Filter) {
    use crate::seccomp::{Action, Cond};
    f.when(libc::SYS_sendto, vec![Cond::Null(4)], Action::Allow)
        .otherwise(libc::SYS_sendto, Action::Notify)
        .otherwise(libc::SYS_sendmsg, Action::Notify)
        .otherwise(libc::SYS_sendmmsg, Action::Notify);
}

/// What a notification needs after its checks.
enum Work {
    /// Answer now (`None`: the target is gone, answer nothing).
    Answer(Option<Reply>),
    /// A checked call to carry out (on a thread of its own when it may block).
    Perform {
        may_block: bool,
        job: Box<dyn FnOnce() -> Result<i64, i32> + Send>,
    },
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
            Some(Ok(c)) => Work::Perform {
                may_block: c.may_block(),
                job: Box::new(move || c.perform()),
            },
        }
    } else if [libc::SYS_sendto, libc::SYS_sendmsg, libc::SYS_sendmmsg].contains(&nr) {
        match send::check_send(req, policy, notify) {
            None => Work::Answer(None),
            Some(Err(e)) => Work::Answer(Some(Reply::Result(Err(e)))),
            Some(Ok(s)) => match s.try_now() {
                Ok(result) => Work::Answer(Some(Reply::Result(result))),
                Err(s) => Work::Perform {
                    may_block: true,
                    job: Box::new(move || s.perform()),
                },
            },
        }
    } else if nr == libc::SYS_listen {
        Work::Answer(handle_listen(req, policy, notify))
    } else if nr == libc::SYS_mount && policy.nested_mounts {
        match mount::check(req, notify) {
            None => Work::Answer(None),
            Some(Err(e)) => Work::Answer(Some(Reply::Result(Err(e)))),
            Some(Ok(m)) => Work::Perform {
                may_block: true,
                job: Box::new(move || m.perform()),
            },
        }
    } else if let (true, Some(roots)) = (meta::handles(nr), &policy.files) {
        Work::Answer(meta::check_change(req, roots, notify).map(Reply::Result))
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
