//! The jails' system-call layer: safe wrappers around the raw calls the jails make (pidfds,
//! capabilities, descriptor passing, seccomp and its notification ioctls, socket calls on a
//! jailed process's socket, Landlock, keyrings; for the audit forwarder, what the agent's socket
//! has not read and who listens on it; for the proxy, giving freed memory back to the system).
//! Every `unsafe` block of the crate's syscall plumbing belongs here, each with its `SAFETY`
//! note, so the rest of the crate calls functions with ordinary types; where `nix` or `rustix`
//! has a safe call, the wrapper uses it, so there is still one place a kind of call is made.
//!
//! Functions marked async-signal-safe allocate nothing and take no locks: they may run between
//! `fork` and `exec` in a multi-threaded parent.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use libc::{c_int, c_ulong};

use crate::seccomp::Program;

/// Installs `prog` as a seccomp filter on the calling thread (and, with `TSYNC` not used, on
/// it alone: call it before starting threads, or before `exec`). With `listener`, the filter
/// gets a user-notification listener, returned for the caller to hand over (and close). Needs `no_new_privs` (or `CAP_SYS_ADMIN`). Async-signal-safe.
///
/// Where the kernel knows it (Linux 5.19), the listener waits killably: once the supervisor has
/// received a notification only a fatal signal interrupts the caller, so a Go program's
/// preemption signals do not abort connects half done.
pub(crate) fn seccomp_install(prog: &Program, listener: bool) -> io::Result<Option<OwnedFd>> {
    let fprog = prog.fprog();
    let attempts: &[libc::c_ulong] = if listener {
        &[
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
        ]
    } else {
        &[0]
    };
    for &flags in attempts {
        // SAFETY: seccomp(SET_MODE_FILTER) reads the sock_fprog, whose program (borrowed from
        // `prog`) outlives the call; it returns a new fd with a listener, 0 without.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r >= 0 {
            // SAFETY: with a listener, r is a new descriptor nothing else owns.
            return Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(r as RawFd) }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    Err(io::Error::last_os_error())
}

/// `ioctl(fd, TIOCSTI, &byte)`: pushes one byte into the input queue of terminal `fd` (which
/// must be the caller's controlling terminal). The selftest's probe uses it on a pty of its own.
pub(crate) fn tiocsti(fd: BorrowedFd<'_>, byte: u8) -> io::Result<()> {
    // SAFETY: TIOCSTI reads one byte from the pointer, which points at a local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI, &byte as *const u8) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns `cmd` as the leader of a new session, without a controlling terminal (it may then
/// take one of its own).
pub(crate) fn spawn_in_new_session(cmd: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs between fork and exec and only calls setsid, which is
    // async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// The id of the caller's user keyring (`keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING)`,
/// without creating it): whether the keyrings are reachable at all.
pub(crate) fn user_keyring_id() -> io::Result<i64> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    // SAFETY: integer arguments only; the kernel reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_USER_KEYRING,
            0 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A `userfaultfd` for user-space faults only (which unprivileged users may create).
pub(crate) fn userfaultfd() -> io::Result<OwnedFd> {
    const UFFD_USER_MODE_ONLY: libc::c_long = 1;
    // SAFETY: integer flags only; on success the kernel returns a new descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            UFFD_USER_MODE_ONLY | libc::O_CLOEXEC as libc::c_long,
        )
    };
    owned(r)
}

/// An io_uring instance with one entry (closed again by dropping it).
pub(crate) fn io_uring_setup() -> io::Result<OwnedFd> {
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u64; 15];
    // SAFETY: the kernel reads and writes the 120-byte params struct, a valid local.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    owned(r)
}

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`; 63 if
/// unreadable, which only makes the loops longer). Allocates: call it before `fork`.
pub(crate) fn cap_last_cap() -> c_int {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// The calling thread's capability sets (v3: two 32-bit words per set).
fn capget() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes a v3 header and two data structs, both valid locals.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) as c_int
    })?;
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads a v3 header and two data structs, both valid locals.
    check(unsafe {
        libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) as c_int
    })?;
    Ok(())
}

/// Drops every capability for good: locks root's special cases off with securebits (where
/// `CAP_SETPCAP` allows it), empties the bounding, ambient, effective, permitted and
/// inheritable sets, and fails with `EPERM` if a root process would regain capabilities on
/// `exec` (bounding set left and securebits not set). An ordinary user cannot empty its
/// bounding set; with `no_new_privs` nothing can be gained from it. Async-signal-safe.
pub(crate) fn drop_all_capabilities(last_cap: c_int) -> io::Result<()> {
    drop_capabilities_but(last_cap, None)
}

/// [`drop_all_capabilities`], but `keep` (which must be permitted) stays in every set,
/// ambient included, so the programs the caller execs hold it too and nothing else: a
/// root-started nsjail's init keeps `CAP_SETFCAP` for nested sandboxes. Securebits are set
/// after the ambient raise (`SECBIT_NO_CAP_AMBIENT_RAISE` forbids later ones) and before the
/// last `capset` gives up `CAP_SETPCAP`. Async-signal-safe.
pub(crate) fn drop_capabilities_but(last_cap: c_int, keep: Option<u32>) -> io::Result<()> {
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    let clear_all = libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong;
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, clear_all, 0, 0, 0) })?;
    let mut kept = [CapData::default(); 2];
    if let Some(c) = keep {
        let (word, bit) = ((c / 32) as usize, 1u32 << (c % 32));
        let mut now = capget()?;
        if now[word].permitted & bit == 0 {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        now[word].inheritable |= bit;
        capset(&now)?;
        raise_ambient(&[c])?;
        kept[word] = CapData {
            effective: bit,
            permitted: bit,
            inheritable: bit,
        };
    }
    // SAFETY: prctl with integer arguments. Needs CAP_SETPCAP; without it (an ordinary user)
    // it fails, which is checked below where it matters (uid 0).
    let secbits_set =
        unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as c_ulong, 0, 0, 0) } == 0;
    let others = (0..=last_cap).filter(|&cap| Some(cap as u32) != keep);
    for cap in others.clone() {
        // SAFETY: prctl with integer arguments; EPERM (no CAP_SETPCAP) is checked below.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) };
    }
    capset(&kept)?;
    let mut bounding_left = false;
    for cap in others {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as c_ulong, 0, 0, 0) } == 1 {
            bounding_left = true;
        }
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three uid_t into valid locals.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if bounding_left && !secbits_set && (r == 0 || e == 0 || s == 0) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

/// Raises `caps` into the inheritable and ambient sets, so a program we `exec` keeps them
/// although its uid would not (a root-started init keeps CAP_SETFCAP for nested sandboxes).
/// Each must be permitted.
/// Async-signal-safe.
pub(crate) fn raise_ambient(caps: &[u32]) -> io::Result<()> {
    let mut data = capget()?;
    for &c in caps {
        data[(c / 32) as usize].inheritable |= 1 << (c % 32);
    }
    capset(&data)?;
    for &c in caps {
        let raise = libc::PR_CAP_AMBIENT_RAISE as c_ulong;
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, raise, c as c_ulong, 0, 0) })?;
    }
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: nothing this process execs can gain privileges (setuid, file
/// capabilities). Async-signal-safe.
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) })?;
    Ok(())
}

/// Makes the calling process join a new, empty session keyring, so the target cannot read
/// keys of the session boundary was started from (`keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`).
/// The keyring is inherited by everything the caller forks and execs. Call it before the
/// seccomp filter is installed (the filter refuses `keyctl`). Async-signal-safe.
pub(crate) fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a null name reads no memory of ours; it only changes this process's
    // session keyring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Most descriptors one message carries (nsjail's helper hands over a handful).
const MAX_FDS: usize = 16;

/// Sends `data` and, as `SCM_RIGHTS`, `fds` (at most 16) over the Unix socket `sock`; returns
/// the bytes sent. The one way the jails pass descriptors. Async-signal-safe (no allocation),
/// so landjail's child may use it between `fork` and `exec`.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // Room for one cmsghdr with MAX_FDS ints, 8-byte aligned.
    let mut cbuf = [0u64; 2 + MAX_FDS / 2];
    let bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as _;
        // SAFETY: msg_control points at a zeroed buffer of at least CMSG_SPACE(bytes) bytes,
        // so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let dst = libc::CMSG_DATA(c).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(dst.add(i), *fd);
            }
        }
    }
    // SAFETY: sendmsg with a fully initialised msghdr whose buffers outlive the call; the
    // kernel only reads `data` through the iovec.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives into `buf` and takes the descriptors that came with it (close-on-exec); returns
/// the bytes received (0: the peer is gone) and the descriptors. Counterpart of
/// [`send_with_fds`].
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our table; we own them.
            fds.extend(
                list.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

/// Whether the kernel's seccomp user-notification structures fit the ones this build knows
/// (`SECCOMP_GET_NOTIF_SIZES`): `Err` when notification is unavailable (before Linux 5.0),
/// `Ok(false)` when the kernel's are larger.
pub(crate) fn seccomp_notif_sizes_fit() -> io::Result<bool> {
    #[repr(C)]
    #[derive(Default)]
    struct Sizes {
        notif: u16,
        resp: u16,
        data: u16,
    }
    let mut s = Sizes::default();
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes three u16 into a valid local.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0u32,
            &mut s as *mut Sizes,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(
        usize::from(s.notif) <= std::mem::size_of::<libc::seccomp_notif>()
            && usize::from(s.resp) <= std::mem::size_of::<libc::seccomp_notif_resp>(),
    )
}

/// Clears the calling thread's effective capabilities (permitted ones stay, so nothing is lost
/// for good); threads it starts inherit the empty set. Returns whether anything was cleared.
pub(crate) fn drop_effective_capabilities() -> io::Result<bool> {
    let mut data = capget()?;
    if data.iter().all(|d| d.effective == 0) {
        return Ok(false);
    }
    for d in &mut data {
        d.effective = 0;
    }
    capset(&data)?;
    Ok(true)
}

/// Waits for the next seccomp notification on listener `notify` (a raw descriptor: a wrong
/// one only makes the ioctl fail) (`SECCOMP_IOCTL_NOTIF_RECV`).
/// `ENOENT`: the caller died or was interrupted before we took it.
pub(crate) fn notif_recv(notify: RawFd) -> io::Result<libc::seccomp_notif> {
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into `req`, a valid local.
    check(unsafe {
        libc::ioctl(
            notify,
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut req as *mut libc::seccomp_notif,
        )
    })?;
    Ok(req)
}

/// Answers notification `id`: the syscall returns `val`, or fails with `errno` when it is not 0
/// (`SECCOMP_IOCTL_NOTIF_SEND`). `ENOENT`: the caller is gone.
pub(crate) fn notif_send(notify: RawFd, id: u64, val: i64, errno: i32) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error: -errno,
        flags: 0,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from a valid local.
    check(unsafe {
        libc::ioctl(
            notify,
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &mut resp as *mut libc::seccomp_notif_resp,
        )
    })?;
    Ok(())
}

/// Whether notification `id` is still pending (its caller alive and waiting): checked after
/// reading the caller's memory, so what was read belongs to that call
/// (`SECCOMP_IOCTL_NOTIF_ID_VALID`).
pub(crate) fn notif_id_valid(notify: RawFd, id: u64) -> bool {
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

/// Enters the Landlock domain of ruleset `ruleset` (`landlock_restrict_self`); needs
/// `no_new_privs`. Async-signal-safe.
pub(crate) fn landlock_restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: landlock_restrict_self takes a descriptor and flags; it reads no memory of ours.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) as c_int })?;
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec (`close_range(CLOSE_RANGE_CLOEXEC)`,
/// or one by one before Linux 5.11). Close-on-exec rather than close, so std's exec-error pipe
/// still works. Async-signal-safe.
pub(crate) fn cloexec_from(first: c_int) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with a flag only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 20) as c_int;
    for fd in first..max {
        // SAFETY: fcntl on a possibly closed fd fails with EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// `pidfd_open(2)`: a handle on process `pid` that cannot be confused with a later process of
/// the same pid.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// A pidfd for thread `tid` (`PIDFD_THREAD`), so [`pidfd_getfd`] uses the descriptor table of
/// that thread. `EINVAL`: the kernel predates `PIDFD_THREAD` and `tid` is not a thread-group
/// leader.
pub(crate) fn pidfd_open_thread(tid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(tid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    let flags = rustix::process::PidfdFlags::from_bits_retain(PIDFD_THREAD);
    Ok(rustix::process::pidfd_open(pid, flags)?)
}

/// `pidfd_getfd(2)`: a copy of descriptor `fd` of the process behind `pidfd` (the same open
/// file), close-on-exec. Needs ptrace access to that process.
pub(crate) fn pidfd_getfd(pidfd: &OwnedFd, fd: RawFd) -> io::Result<OwnedFd> {
    // A jailed caller's descriptor number may be anything; rustix asserts it is not negative.
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(rustix::process::pidfd_getfd(
        pidfd,
        fd,
        rustix::process::PidfdGetfdFlags::empty(),
    )?)
}

/// `pidfd_send_signal(2)`: signals exactly the process behind `pidfd`, never a reused pid.
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, sig: nix::sys::signal::Signal) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig as i32)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

/// The address family a socket really has (`getsockopt(SO_DOMAIN)`), whatever the caller
/// claims in a `sockaddr`.
pub(crate) fn socket_domain(sock: BorrowedFd<'_>) -> io::Result<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int (and its length) into valid locals.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// `connect(2)` with a socket address given as raw bytes (as read from a jailed caller, any
/// family); at most a `sockaddr_storage` of them is used.
pub(crate) fn connect_raw(sock: BorrowedFd<'_>, addr: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = addr
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // Copied into an aligned sockaddr_storage so the kernel sees a properly aligned struct.
    // SAFETY: copies n <= sizeof(ss) bytes into ss; the regions cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        )
    };
    // SAFETY: connect reads n bytes of a valid sockaddr_storage.
    check(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            n as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `listen(2)` with the backlog exactly as given (the kernel clamps it, as for the caller).
pub(crate) fn listen(sock: BorrowedFd<'_>, backlog: c_int) -> io::Result<()> {
    // SAFETY: listen takes a descriptor and an int; it reads no memory of ours.
    check(unsafe { libc::listen(sock.as_raw_fd(), backlog) })?;
    Ok(())
}

/// Waits, without a timeout, until `fd` is readable or hung up; returns poll's `revents`.
pub(crate) fn poll_in(fd: BorrowedFd<'_>) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, no timeout.
    check(unsafe { libc::poll(&mut p, 1, -1) })?;
    Ok(p.revents)
}

/// Whether `fd`'s open file is in non-blocking mode (`O_NONBLOCK`); `None` if unreadable.
pub(crate) fn is_nonblocking(fd: BorrowedFd<'_>) -> Option<bool> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    (flags >= 0).then_some(flags & libc::O_NONBLOCK != 0)
}

/// Makes the calling process's group the foreground group of terminal `fd`, ignoring the
/// SIGTTOU a background group gets for trying. Async-signal-safe (usable before exec).
pub(crate) fn take_foreground(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd and the signal table; the previous SIGTTOU disposition is
    // restored before returning.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        let r = libc::tcsetpgrp(fd, libc::getpgrp());
        let err = io::Error::last_os_error();
        libc::signal(libc::SIGTTOU, old);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Makes `cmd`'s child keep descriptor `fd` open across `exec` (it is close-on-exec in the
/// parent, so no other child inherits it), and no other descriptor but 0, 1 and 2: how
/// boundary hands the control socket to the re-executed namespace helper. Whatever else
/// boundary's caller had open would otherwise live on in the helper and the jail's init, where
/// the jailed command can take it (`pidfd_getfd` on its parent, init).
pub(crate) fn inherit_across_exec(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only calls close_range and
    // fcntl, which are async-signal-safe; they change the flags of the child's own descriptors.
    unsafe {
        cmd.pre_exec(move || {
            cloexec_from(3);
            check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            Ok(())
        })
    };
}

/// Makes `cmd`'s child start with no blocked signals (init blocks the ones it forwards), with
/// no descriptor but 0, 1 and 2 (whatever boundary's caller had open, sockets to host services
/// included, would be a channel around the policy; landjail's child does the same) and, with
/// `tty`, in a process group of its own that is the terminal's foreground group.
pub(crate) fn exec_unblocked_in_foreground(cmd: &mut Command, tty: Option<RawFd>) {
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-safe
    // calls (sigprocmask, setpgid, tcsetpgrp, signal, close_range/fcntl) on locals.
    unsafe {
        cmd.pre_exec(move || {
            let empty = nix::sys::signal::SigSet::empty();
            empty.thread_set_mask().map_err(io::Error::from)?;
            if let Some(fd) = tty {
                check(libc::setpgid(0, 0))?;
                take_foreground(fd)?;
            }
            cloexec_from(3);
            Ok(())
        })
    };
}

/// Bytes written to the Unix stream socket `fd` that its peer has not read yet (`TIOCOUTQ`).
/// The audit forwarder uses it to learn what the Coder agent has read (the agent never replies).
pub fn unix_unread_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: c_int = 0;
    // SAFETY: TIOCOUTQ stores one c_int through the pointer, which points at a live local; the
    // descriptor is borrowed, so it stays open for the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut c_int) })?;
    Ok(n.max(0) as usize)
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd for the process behind the peer of the Unix socket `fd`
/// (for a connection to a listener, the process that called `listen`). Unlike the pid of
/// `SO_PEERCRED` it cannot come to name another process. `ENOPROTOOPT` on older kernels;
/// `EINVAL` or `ESRCH` when that process has exited.
pub fn peer_pidfd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // Not in this libc release yet; the asm-generic value (x86, arm, riscv).
    const SO_PEERPIDFD: c_int = 77;
    let mut pidfd: c_int = -1;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes (one c_int) through the pointer, which
    // points at a live local, and the new length through `len`; the descriptor is borrowed.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            &mut pidfd as *mut c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    if pidfd < 0 || len as usize != std::mem::size_of::<c_int>() {
        return Err(io::Error::other("SO_PEERPIDFD returned no descriptor"));
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn c_path(p: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Makes the mount at `path` and every mount beneath it read-only, in one call
/// (`mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`, Linux 5.12). Needs `CAP_SYS_ADMIN` over
/// the caller's mount namespace; flags the kernel locked stay as they are.
pub(crate) fn mount_tree_readonly(path: &std::path::Path) -> io::Result<()> {
    let c = c_path(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a NUL-terminated path and `attr` a mount_attr whose size we pass; the
    // kernel only reads both.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as c_int
    })?;
    Ok(())
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`),
/// keeping each mount's flags as they are now, to be attached later with [`attach_tree`].
pub(crate) fn clone_tree(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: `c` is a NUL-terminated path the kernel only reads; the result is a new fd.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })
}

/// Attaches a tree from [`clone_tree`] at `target` (`move_mount`), on top of what is there.
pub(crate) fn attach_tree(tree: BorrowedFd<'_>, target: &std::path::Path) -> io::Result<()> {
    let c = c_path(target)?;
    // SAFETY: an empty from-path with MOVE_MOUNT_F_EMPTY_PATH names `tree` itself; `c` is a
    // NUL-terminated path. The kernel only reads both strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) as c_int
    })?;
    Ok(())
}

/// Runs `f` in `cmd`'s child between `fork` and `exec`; an error aborts the spawn. The one way
/// the jails add a step of their own to a child's start.
///
/// # Safety
/// The child is a copy of a possibly multi-threaded parent in which only the forking thread
/// runs: `f` must be async-signal-safe (no allocation, no locks, no logging), and it must not
/// close or reuse descriptors std's spawn uses.
pub(crate) unsafe fn pre_exec<F>(cmd: &mut Command, f: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    // SAFETY: the caller upholds the contract above, which is `pre_exec`'s.
    unsafe { cmd.pre_exec(f) };
}

/// Forks the calling process. The child returns `ForkResult::Child`; the parent gets its pid.
///
/// # Safety
/// The caller must be single-threaded (then the child may run any code), or the child must
/// only make async-signal-safe calls until it execs or exits.
pub(crate) unsafe fn fork() -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller upholds the contract above, which is `fork`'s.
    Ok(unsafe { nix::unistd::fork() }?)
}

/// Takes ownership of descriptor `fd`, inherited from the process that started us (how the
/// namespace helper receives boundary's control socket).
///
/// # Safety
/// `fd` must be open, and nothing else in this process may own or close it.
pub(crate) unsafe fn adopt_inherited_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Calls `handler` for `sig` from now on if `sig` is still at its default disposition, and
/// returns true; otherwise leaves the disposition someone else set (a handler, or ignore) in
/// place and returns false.
///
/// # Safety
/// `handler` runs in signal context: it must be async-signal-safe (atomics only, say).
pub(crate) unsafe fn catch_if_default(
    sig: nix::sys::signal::Signal,
    handler: extern "C" fn(c_int),
) -> io::Result<bool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the caller guarantees `handler` is async-signal-safe.
    let old = unsafe { sigaction(sig, &action) }?;
    if old.handler() == SigHandler::SigDfl {
        return Ok(true);
    }
    // SAFETY: restoring the disposition that was there before, which its owner installed.
    unsafe { sigaction(sig, &old) }?;
    Ok(false)
}

/// Registers `fd` with the current tokio runtime for readiness to read (a pidfd turns readable
/// when its process exits; an inotify descriptor when it has events). Panics outside a
/// runtime, like tokio.
pub fn async_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns this OwnedFd, so the descriptor stays open and names the same
    // file for the AsyncFd's whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// `sendmsg(sock, {name, [data], control}, flags)`: one message from buffers of ours (the
/// connect supervisor's copy of a jailed process's message). Returns the bytes sent.
pub(crate) fn send_msg(
    sock: BorrowedFd<'_>,
    name: &[u8],
    data: &[u8],
    control: &[u8],
    flags: c_int,
) -> io::Result<usize> {
    // Aligned copies: the kernel reads a sockaddr and cmsghdrs from them.
    let mut name_buf = [0u64; 16];
    let mut ctl_buf = vec![0u64; control.len().div_ceil(8)];
    if name.len() > std::mem::size_of_val(&name_buf) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: both destinations are at least as long as their sources (checked and sized
    // above), and u64 buffers may hold any bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), name_buf.as_mut_ptr().cast(), name.len());
        std::ptr::copy_nonoverlapping(control.as_ptr(), ctl_buf.as_mut_ptr().cast(), control.len());
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if !name.is_empty() {
        msg.msg_name = name_buf.as_mut_ptr().cast();
        msg.msg_namelen = name.len() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = ctl_buf.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
    }
    // SAFETY: every pointer in `msg` refers to a live buffer of the stated length; the kernel
    // only reads them.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Makes this process non-dumpable: no core file (which would hold the run's CA key, written
/// where a jailed process may read it), and `/proc/<pid>` owned by root, so a process of the
/// same uid (landjail's target) cannot trace it or read its memory. Reset by `execve`, so the
/// helper and the target boundary starts are unaffected.
pub fn make_undumpable() -> io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(io::Error::from)
}

/// Gives the C allocator's free memory back to the system: glibc's `malloc_trim(0)` returns
/// free pages anywhere in its heaps (not only at the top, as `free` does on its own). For the
/// proxy after a burst of idle connections freed their buffers (`ProxyConfig::release_memory`).
/// Takes the allocator's locks while it walks its free lists: call it rarely, off the async
/// threads. Does nothing where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only walks and unmaps the allocator's own free
    // chunks under its own locks; glibc allows it from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Undoes [`make_undumpable`] in landjail's forked child (a raw `prctl`, safe between `fork`
/// and `exec`): the supervisor copies the child's seccomp listener with `pidfd_getfd`, which
/// needs ptrace access, and a non-root boundary has none to a non-dumpable process.
pub(crate) fn make_dumpable() -> io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(io::Error::from)
}

// Capabilities through rustix (safe calls): nsjail's privileged helper (sudo, file
// capabilities) keeps exactly the two it needs.

/// Whether the calling thread holds all of `caps` in its permitted set.
pub(crate) fn caps_permitted(caps: rustix::thread::CapabilitySet) -> bool {
    rustix::thread::capabilities(None).is_ok_and(|s| s.permitted.contains(caps))
}

/// Keeps exactly `caps` permitted and effective (each must be permitted now) and empties the
/// inheritable and ambient sets: the helper holds what it needs and nothing a program it runs
/// could inherit by accident.
pub(crate) fn keep_only_capabilities(caps: rustix::thread::CapabilitySet) -> io::Result<()> {
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: caps,
            permitted: caps,
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )?;
    Ok(())
}

/// Root only (`CAP_SETPCAP`): empties the bounding set but for `keep`, so nothing this
/// process or what it execs can ever hold another capability (nsjail's privileged helper).
pub(crate) fn limit_bounding_set(keep: rustix::thread::CapabilitySet) -> io::Result<()> {
    for cap in 0..=cap_last_cap() as u32 {
        let one = rustix::thread::CapabilitySet::from_bits_retain(1 << cap);
        if !keep.contains(one) {
            rustix::thread::remove_capability_from_bounding_set(one)?;
        }
    }
    Ok(())
}

/// Root only: becomes `uid`/`gid` with supplementary `groups` (real, effective, saved and
/// filesystem ids) keeping the permitted capabilities (`PR_SET_KEEPCAPS`), which the caller
/// then narrows with [`keep_only_capabilities`].
pub(crate) fn become_user_keeping_capabilities(
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: &[nix::unistd::Gid],
) -> io::Result<()> {
    nix::unistd::setgroups(groups)?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::sys::prctl::set_keepcaps(true)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    nix::sys::prctl::set_keepcaps(false)?;
    Ok(())
}

/// A `mount` call to make on a jailed thread's behalf ([`mount_as`]): the thread's namespaces,
/// root, working directory, groups and effective capabilities, and the call's own arguments,
/// copied out of its memory. Everything is prepared before the fork: the child allocates
/// nothing.
pub(crate) struct MountAs {
    /// Its namespaces, in [`MOUNT_NAMESPACES`] order (`/proc/<tid>/ns/...`).
    pub(crate) namespaces: [OwnedFd; MOUNT_NAMESPACES.len()],
    /// Its root directory (`/proc/<tid>/root`).
    pub(crate) root: OwnedFd,
    /// Its working directory (`/proc/<tid>/cwd`).
    pub(crate) cwd: OwnedFd,
    /// Its supplementary groups, as the host numbers them.
    pub(crate) groups: Vec<libc::gid_t>,
    /// Its effective capabilities (two 32-bit words), relative to its own user namespace.
    pub(crate) caps: [u32; 2],
    /// The call's arguments: source, target, file system type, flags, options.
    pub(crate) source: Option<std::ffi::CString>,
    pub(crate) target: std::ffi::CString,
    pub(crate) fstype: Option<std::ffi::CString>,
    pub(crate) flags: c_ulong,
    pub(crate) data: Option<std::ffi::CString>,
}

/// Why [`mount_as`] failed.
#[derive(Debug)]
pub(crate) enum MountAsError {
    /// The mount itself failed with this errno: the thread's own call would have.
    Mount(i32),
    /// Becoming the thread failed at `step` (named for the log) with this errno.
    Setup(&'static str, i32),
}

/// The caller's namespaces, in the order the child joins them: first those that decide what a
/// fresh file system shows (network for sysfs, IPC for mqueue, cgroup for cgroup2, PID for proc,
/// which takes the mounting process's own) and the rest (UTS, time), so no handle the child
/// leaves behind (a bind of `/proc/self/ns/...`) names a namespace of boundary's, all while
/// the child still has its rights over the jail's namespaces; then the mount namespace; then
/// the user namespace, after which it holds rights only where the caller does.
pub(crate) const MOUNT_NAMESPACES: [(&str, c_int); 8] = [
    ("net", libc::CLONE_NEWNET),
    ("ipc", libc::CLONE_NEWIPC),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("uts", libc::CLONE_NEWUTS),
    ("time", libc::CLONE_NEWTIME),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// Where the child's steps after the namespaces start in [`MOUNT_STEPS`].
const AFTER_NS: usize = 2 + MOUNT_NAMESPACES.len();

const MOUNT_STEPS: [&str; AFTER_NS + 6] = [
    "raising the supervisor's permitted capabilities, not dumpable",
    "taking the caller's groups",
    "joining its network namespace",
    "joining its IPC namespace",
    "joining its cgroup namespace",
    "joining its UTS namespace",
    "joining its time namespace",
    "joining its PID namespace",
    "joining its mount namespace",
    "joining its user namespace",
    "entering its root",
    "chroot to its root",
    "entering its working directory and closing every descriptor",
    "taking its capabilities",
    "forking into its PID namespace",
    "waiting in its PID namespace",
];

/// Makes the `mount` call `m` describes exactly as the calling thread would: a forked child of
/// the supervisor takes the thread's groups, joins its namespaces ([`MOUNT_NAMESPACES`]; the
/// supervisor's owner rights over the jail's user namespace reach every namespace below it),
/// takes its root and working directory, narrows its capabilities to the thread's effective
/// ones, and forks once more so the mount is made from inside the thread's PID namespace;
/// that grandchild calls `mount` with the copied arguments. Used by nsjail's mount supervisor
/// (`supervisor::mount`), which has decided the copied file system type: the kernel never reads
/// the thread's memory again, so no other thread can swap the type after the check.
pub(crate) fn mount_as(m: &MountAs) -> Result<(), MountAsError> {
    use std::ffi::CStr;
    let full = capget().map_err(|e| MountAsError::Setup(MOUNT_STEPS[0], raw(&e)))?;
    let mut raised = full;
    for d in &mut raised {
        d.effective = d.permitted;
    }
    let mut narrowed = [CapData::default(); 2];
    for (d, &c) in narrowed.iter_mut().zip(&m.caps) {
        *d = CapData {
            effective: c,
            permitted: c,
            inheritable: 0,
        };
    }
    let opt = |s: &Option<std::ffi::CString>| s.as_deref().map_or(std::ptr::null(), CStr::as_ptr);
    let (source, fstype, data) = (opt(&m.source), opt(&m.fstype), opt(&m.data));
    let data = data.cast::<libc::c_void>();
    let ns = m.namespaces.each_ref().map(AsRawFd::as_raw_fd);
    let (root, cwd) = (m.root.as_raw_fd(), m.cwd.as_raw_fd());
    // The child's exit status: 0, the mount's errno (all below 200), or 200 + the set-up step
    // that failed.
    let child = move || -> c_int {
        let fail = |step: usize| 200 + step as c_int;
        if capset(&raised).is_err() {
            return fail(0);
        }
        // Not dumpable: a copy of boundary's memory (the CA key among it) enters the caller's
        // namespaces, where the caller may ptrace what is dumpable and as uid 0 as itself;
        // a non-dumpable process needs CAP_SYS_PTRACE over boundary's own user namespace.
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
            return fail(0);
        }
        // SAFETY: setgroups reads `groups.len()` gids from a live Vec; raw so it changes this
        // (only) thread and nothing broadcasts to threads that do not exist after fork.
        let r = unsafe {
            libc::syscall(libc::SYS_setgroups, m.groups.len(), m.groups.as_ptr()) as c_int
        };
        if r < 0 {
            return fail(1);
        }
        for (i, (&fd, &(_, kind))) in ns.iter().zip(&MOUNT_NAMESPACES).enumerate() {
            // SAFETY: setns with a namespace descriptor owned by `m`.
            if unsafe { libc::setns(fd, kind) } < 0 {
                return fail(2 + i);
            }
        }
        // SAFETY: fchdir/chroot take descriptors owned by `m` and a static C string.
        unsafe {
            if libc::fchdir(root) < 0 {
                return fail(AFTER_NS);
            }
            if libc::chroot(c".".as_ptr()) < 0 {
                return fail(AFTER_NS + 1);
            }
            if libc::fchdir(cwd) < 0 {
                return fail(AFTER_NS + 2);
            }
            // Every descriptor goes, boundary's included: a path through `/proc/self/fd/<n>`
            // must not name one of boundary's files to the caller's mount.
            if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) < 0 {
                return fail(AFTER_NS + 2);
            }
        }
        if capset(&narrowed).is_err() {
            return fail(AFTER_NS + 3);
        }
        // SAFETY: still one thread, async-signal-safe calls only on both sides.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return fail(AFTER_NS + 4);
        }
        if pid == 0 {
            // SAFETY: every pointer is NULL or a NUL-terminated string owned by `m`.
            let r = unsafe { libc::mount(source, m.target.as_ptr(), fstype, m.flags, data) };
            let code = if r < 0 {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EPERM)
            } else {
                0
            };
            // SAFETY: ends the grandchild without running exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the grandchild just forked, into a local.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return fail(AFTER_NS + 5);
            }
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            fail(AFTER_NS + 5)
        }
    };
    // SAFETY: the child makes only async-signal-safe calls (raw system calls on prepared data,
    // no allocation, no locks) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(MountAsError::Setup(
            "forking",
            raw(&io::Error::last_os_error()),
        ));
    }
    if pid == 0 {
        let code = child();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let status = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(MountAsError::Setup("waiting for the mount", e as i32)),
            Ok(s) => break s,
        }
    };
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, c)
            if (200..200 + MOUNT_STEPS.len() as i32).contains(&c) =>
        {
            Err(MountAsError::Setup(
                MOUNT_STEPS[(c - 200) as usize],
                libc::EPERM,
            ))
        }
        nix::sys::wait::WaitStatus::Exited(_, c) => Err(MountAsError::Mount(c)),
        _ => Err(MountAsError::Setup(
            "the mount's child ended by a signal",
            libc::EPERM,
        )),
    }
}

fn raw(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EPERM)
}
