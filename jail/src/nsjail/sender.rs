//! Starting nsjail's sender process (what it does and why: [`crate::supervisor::sender`]).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{ForkResult, Pid};
use rustix::fs::{Mode, OFlags};

use super::wire::Failure;

/// The sender's pid, in the helper that forked it.
static SENDER: OnceLock<Pid> = OnceLock::new();

/// Forks the sender from the namespace helper, once the helper is in the jail's user and
/// network namespaces and before it forks init (so the sender is outside the jail's PID
/// namespace and `/proc` is still one where it has a pid). `close`: the helper's descriptors
/// the sender must not keep (boundary's control socket). Returns boundary's end of the
/// channel and the sender's start, which [`Starting::wait`] sees through before the jail is
/// reported ready.
///
/// The sender finds its `fd` directory through this `/proc`, opened before the fork: init
/// mounts the jail's own `/proc` (where the sender has no pid) over it in the mount namespace
/// they share, and without `ip` and `nft` to start in between it often does so before the
/// sender has run at all.
pub(super) fn spawn(close: &[RawFd]) -> Result<(OwnedFd, Starting), Failure> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("creating the sender's channel: {e}"))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the sender's start pipe: {e}"))?;
    let proc = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening /proc for the jail's sender: {e}"))?;
    // SAFETY: the helper is single-threaded (it never starts a thread), so the child may run
    // arbitrary code after fork.
    match unsafe { crate::sys::fork() }.map_err(|e| format!("forking the jail's sender: {e}"))? {
        ForkResult::Child => {
            drop(ours);
            drop(ready_r);
            for &fd in close {
                let _ = nix::unistd::close(fd);
            }
            match confine(&proc) {
                Ok(()) => {
                    let _ = nix::unistd::write(&ready_w, &[1]);
                    drop(ready_w);
                    crate::supervisor::sender::serve(theirs)
                }
                // The helper reads the end of the pipe without a byte and fails the start.
                Err(e) => eprintln!("boundary jail sender: {e}"),
            }
            std::process::exit(0)
        }
        ForkResult::Parent { child } => {
            drop(proc);
            let _ = SENDER.set(child);
            Ok((ours, Starting(ready_r)))
        }
    }
}

/// A sender that is confining itself; it writes one byte when it is ready to serve.
pub(super) struct Starting(OwnedFd);

impl Starting {
    /// Waits until the sender has confined itself; an error if it could not. By the time
    /// init has built the jail it has, so the helper calls this last.
    pub(super) fn wait(self) -> Result<(), Failure> {
        let mut b = [0u8; 1];
        loop {
            match nix::unistd::read(self.0.as_raw_fd(), &mut b) {
                Ok(1) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {
                    return Err(
                        "the jail's sender process could not confine itself (its error \
                                is above)"
                            .into(),
                    )
                }
                Err(e) => return Err(format!("waiting for the jail's sender process: {e}").into()),
            }
        }
    }
}

/// Ends and reaps the sender (the helper calls it once init has exited), so it does not stay
/// behind as a zombie for whoever adopts it.
pub(super) fn end() {
    if let Some(&pid) = SENDER.get() {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Gives the sender the target's credentials and nothing more (see the module documentation
/// of [`crate::supervisor::sender`]). `proc`: the host's `/proc`, whatever is mounted there now.
fn confine(proc: &OwnedFd) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let _ = nix::sys::prctl::set_name(c"boundary-send");
    let dir = rustix::fs::openat(
        proc,
        "self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::fchdir(dir.as_raw_fd())?;
    crate::process::drop_all_privileges()?;
    nix::sys::prctl::set_dumpable(false)?;
    super::filter::install(&super::filter::rules(super::filter::Nested::Off))?;
    Ok(())
}
