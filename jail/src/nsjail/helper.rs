//! The namespace helper: `boundary` re-executed with a hidden argv[1] (or through sudo, see
//! `privilege`). It enters new user (unless the jail is built without one),
//! network, mount, UTS, IPC and cgroup namespaces, builds the network, creates the listening sockets, forks the
//! jail's init into a new PID namespace, hands the sockets and init's pid back, then waits for
//! init and exits with its status. If `boundary` dies (even by SIGKILL) its end of the control
//! socket closes, and the helper kills init, which takes the whole PID namespace with it.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getgid, getuid, pipe2, ForkResult, Pid};

use super::net;
use super::pid1;
use super::wire::{self, Failure, Reply, Request, SetupStatus};
use crate::sys::pidfd_open;

/// Entry point from [`crate::init_hook`]; returns the exit code.
pub fn main(fd: i32) -> i32 {
    // SAFETY: boundary passed this inherited fd number for exactly this purpose (see
    // `sys::inherit_across_exec`); nothing else in this fresh process knows it.
    let sock = UnixStream::from(unsafe { crate::sys::adopt_inherited_fd(fd) });
    serve(sock)
}

/// Entry point of the helper started through sudo (as root, see `privilege`): connects back
/// to boundary's socket `name`, becomes the calling user, then serves as usual.
pub fn main_from_sudo(name: &std::ffi::OsString) -> i32 {
    match super::privilege::connect_from_sudo(name) {
        Ok(sock) => serve(sock),
        Err(e) => {
            eprintln!("boundary jail helper (sudo): {e}");
            125
        }
    }
}

fn serve(mut sock: UnixStream) -> i32 {
    // `ps` then shows the helper and the jail's init by a name that says what they are.
    let _ = nix::sys::prctl::set_name(c"boundary-jail");
    if let Err(e) = fcntl(sock.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
        eprintln!("boundary jail helper: control socket: {e}");
        return 125;
    }
    let req = match wire::recv_frame(&mut sock).and_then(|f| match f {
        Some(f) => Request::decode(&f),
        None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no request")),
    }) {
        Ok(r) => r,
        Err(e) => {
            let failure = format!("the jail helper could not read its request: {e}");
            let _ = wire::send_reply(&sock, &Reply::Failed(failure.into()));
            return 125;
        }
    };
    if let Err(failure) = super::privilege::confine_request(&req) {
        let _ = wire::send_reply(&sock, &Reply::Failed(failure));
        return 125;
    }
    match build(&req, &sock) {
        Ok((pid, pidfd)) => supervise(&mut sock, pid, pidfd),
        Err(failure) => {
            let _ = wire::send_reply(&sock, &Reply::Failed(failure));
            125
        }
    }
}

/// A step of creating or entering the user namespace failed: boundary may try again without
/// one (see `privilege`).
fn userns_failure(step: &str, e: impl std::fmt::Display) -> Failure {
    Failure::UserNamespace {
        detail: format!("{step}: {e}"),
    }
}

/// A namespace other than the user namespace could not be created.
fn namespace_failure(req: &Request, step: &str, e: Errno) -> Failure {
    if req.user_namespace {
        return userns_failure(step, e);
    }
    let hint = if e == Errno::EPERM && !nix::unistd::geteuid().is_root() {
        super::privilege::no_user_namespace_hint()
    } else if e == Errno::EPERM {
        "without a user namespace the jail needs CAP_SYS_ADMIN in the host's user namespace \
         (real root, sudo or file capabilities); or use --jail-type landjail"
            .into()
    } else {
        "use --jail-type landjail where these namespaces are not available".into()
    };
    Failure::Namespaces {
        detail: format!("{step} without a user namespace: {e}"),
        hint,
    }
}

fn build(req: &Request, sock: &UnixStream) -> Result<(Pid, OwnedFd), Failure> {
    let (uid, gid) = (getuid(), getgid());
    // Before the user namespace: written with CAP_SYS_RESOURCE (boundary run by root), the
    // kernel also makes 1000 the floor, so the jail cannot lower it again. A helper started
    // through sudo or with file capabilities is not dumpable, so its own `/proc` files are
    // root's and the write is refused (EACCES): that jail keeps boundary's value (documented;
    // making the capable helper dumpable to write it would expose it to the user's ptrace).
    match crate::process::prefer_for_oom_kill() {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
        r => r.map_err(|e| {
            Failure::from(format!(
                "making the jail the first to go when memory runs out (writing 1000 to \
                 /proc/self/oom_score_adj): {e}; boundary needs a writable /proc"
            ))
        })?,
    }
    if req.user_namespace {
        unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| userns_failure("creating a user namespace", e))?;
        match fs::write("/proc/self/setgroups", "deny") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(userns_failure("writing /proc/self/setgroups", e)),
        }
        fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
            .map_err(|e| userns_failure("writing the user namespace's uid_map", e))?;
        fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
            .map_err(|e| userns_failure("writing the user namespace's gid_map", e))?;
    }
    // UTS, IPC and cgroup namespaces too: the target's hostname, System V IPC and POSIX message
    // queues, and its view of the cgroup tree are its own.
    let private = CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(private).map_err(|e| {
        namespace_failure(
            req,
            "creating network, mount, UTS, IPC and cgroup namespaces",
            e,
        )
    })?;
    let (sender, sender_start) = super::sender::spawn(&[sock.as_raw_fd()])?;
    let ipv6 = net::setup_links()?;
    let (mut sockets, proxy_port, dns_port) = net::create_sockets(req.proxy_port, ipv6)?;
    let diag = crate::supervisor::diag::open()
        .map_err(|e| format!("creating a sock_diag socket in the jail's network namespace: {e}"))?;
    sockets.push((wire::SocketKind::UnixDiag, diag));
    let inet_diag = crate::supervisor::diag::open()
        .map_err(|e| format!("creating a sock_diag socket in the jail's network namespace: {e}"))?;
    sockets.push((wire::SocketKind::InetDiag, inet_diag));
    sockets.push((wire::SocketKind::Sender, sender));
    if !req.skip_netfilter {
        super::nft::install(proxy_port, dns_port)?;
    }
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| namespace_failure(req, "creating a PID namespace", e))?;
    let (status_r, status_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("creating the setup pipe: {e}"))?;
    // init sends the seccomp listener here; boundary's supervisor answers it.
    let (listener_r, listener_w) =
        UnixStream::pair().map_err(|e| format!("creating the listener socketpair: {e}"))?;
    // SAFETY: the helper is single-threaded (it never starts a thread), so the child may run
    // arbitrary code after fork.
    match unsafe { crate::sys::fork() }.map_err(|e| format!("forking the jail's init: {e}"))? {
        ForkResult::Child => {
            drop(status_r);
            drop(listener_r);
            drop(sockets);
            // Init must not hold boundary's control socket (boundary notices the helper's end
            // by its EOF). `pid1::main` never returns, so this copy is never dropped again.
            let _ = nix::unistd::close(sock.as_raw_fd());
            pid1::main(req, status_w, listener_w)
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            drop(listener_w);
            let pidfd = pidfd_open(child.as_raw() as u32)
                .map_err(|e| format!("pidfd for the jail's init: {e}"))?;
            // init offers the listener during its setup and waits until it is taken.
            let listener = crate::supervisor::take_listener(&listener_r, Some(&pidfd));
            let mut status = Vec::new();
            let _ = fs::File::from(status_r).read_to_end(&mut status);
            let failure = match SetupStatus::decode(&status) {
                Ok(Some(SetupStatus::Ready)) => None,
                Ok(Some(SetupStatus::Failed(f))) => Some(f),
                Ok(None) => Some("the jail's init died during setup".into()),
                Err(e) => Some(format!("reading the jail's init setup status: {e}").into()),
            };
            if let Some(failure) = failure {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(failure);
            }
            if let Err(failure) = sender_start.wait() {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(failure);
            }
            let mut sockets = sockets;
            let listener =
                listener.map_err(|e| format!("taking the jail's seccomp listener: {e}"))?;
            sockets.push((wire::SocketKind::SeccompListener, listener));
            let for_parent = pidfd
                .try_clone()
                .map_err(|e| format!("duplicating init's pidfd: {e}"))?;
            sockets.push((wire::SocketKind::InitPidfd, for_parent));
            wire::send_reply(
                sock,
                &Reply::Ready {
                    init_pid: child.as_raw() as u32,
                    sockets,
                },
            )
            .map_err(|e| format!("handing the sockets to boundary: {e}"))?;
            Ok((child, pidfd))
        }
    }
}

fn supervise(sock: &mut UnixStream, init: Pid, pidfd: OwnedFd) -> i32 {
    loop {
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let init_done = fds[0].revents().is_some_and(|r| !r.is_empty());
        let parent_event = fds[1].revents().is_some_and(|r| !r.is_empty());
        if init_done {
            break;
        }
        if parent_event {
            let mut b = [0u8; 64];
            match sock.read(&mut b) {
                Ok(n) if n > 0 => continue,
                _ => {
                    // boundary is gone: nobody supervises the jail any more, so end it.
                    let _ = kill(init, Signal::SIGKILL);
                    break;
                }
            }
        }
    }
    let code = loop {
        match waitpid(init, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(_) => break 125,
        }
    };
    super::sender::end();
    code
}
