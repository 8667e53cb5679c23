//! nsjail's seccomp rules, on top of the rules both jails share ([`Filter::common`]).
//!
//! The network namespace already confines internet and netlink sockets, so nsjail allows
//! every type and protocol of AF_INET, AF_INET6 and AF_NETLINK (the DNS stub inside the jail
//! needs UDP; changing the jail's netfilter or links needs capabilities the target lacks).
//! Every other family fails with `EACCES` (the allow-list landjail uses): the ones with a port
//! space or device shared with the host (`AF_VSOCK` reaches the hypervisor and the host's
//! other guests around the namespace and the proxy; Bluetooth, CAN, TIPC, RDS, ...), and also
//! `AF_PACKET` (namespaced, but nothing in a jail needs it and it is a frequent target of
//! kernel exploits) and `AF_ALG`. The shared rules add terminal injection, new user and
//! network namespaces, io_uring, a second notification listener and the administrator-only
//! kernel interfaces, and files with setuid or setgid bits (created with them, or `chmod`:
//! a root-started target's files in `/tmp` or the working directory are root's on the host,
//! where they would run as root for every user). Host processes are out of reach through the PID namespace (their pids
//! do not exist inside), so no rule restricts the pid arguments of `prlimit64` and the like.
//!
//! The filter is installed by the jail's init after it dropped its privileges and before it
//! starts the target, so it binds init and everything the target starts. The jail's sender
//! process (`supervisor::sender`) installs the same rules without the supervisor's
//! notifications (its sends must not come back to the supervisor).

use std::os::fd::OwnedFd;

use crate::seccomp::{Filter, NetNs};

/// nsjail's rules (see the module documentation); callers may add their own (a connect
/// supervisor's) before installing them.
pub(crate) fn rules() -> Filter {
    let mut f = Filter::common();
    f.sockets(NetNs::Own);
    f.no_set_id_modes();
    f
}

/// Installs `filter` on the calling process (the jail's init, after `no_new_privs`); returns
/// the notification listener when a rule notifies (dropping it makes those calls fail with
/// `ENOSYS`: closed, not open).
pub(crate) fn install(filter: &Filter) -> std::io::Result<Option<OwnedFd>> {
    crate::sys::seccomp_install(&filter.program(), filter.has_notify())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{eval, Action, AUDIT_ARCH};

    fn sys(nr: libc::c_long, args: [u64; 6]) -> u32 {
        eval(rules().program().insns(), AUDIT_ARCH, nr, args)
    }

    #[test]
    fn vsock_and_other_host_wide_families_are_refused_internet_is_not() {
        let eacces = Action::Errno(libc::EACCES).ret();
        let allow = Action::Allow.ret();
        let s = |d: i32, t: i32| sys(libc::SYS_socket, [d as u64, t as u64, 0, 0, 0, 0]);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_STREAM), eacces);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_DGRAM), eacces);
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW), eacces);
        assert_eq!(s(libc::AF_INET, libc::SOCK_DGRAM), allow);
        assert_eq!(s(libc::AF_INET6, libc::SOCK_STREAM), allow);
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_SEQPACKET), allow);
        let tiocsti = libc::TIOCSTI;
        let eperm = Action::Errno(libc::EPERM).ret();
        assert_eq!(sys(libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]), eperm);
        // No supervisor here (yet): connects go straight to the kernel.
        assert_eq!(sys(libc::SYS_connect, [3, 0, 16, 0, 0, 0]), allow);
        assert!(!rules().has_notify());
    }

    #[test]
    fn no_setuid_or_setgid_files_are_made() {
        let eperm = Action::Errno(libc::EPERM).ret();
        let allow = Action::Allow.ret();
        let creat = (libc::O_CREAT | libc::O_WRONLY) as u64;
        assert_eq!(sys(libc::SYS_openat, [0, 0, creat, 0o4755, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_openat, [0, 0, creat, 0o755, 0, 0]), allow);
        // A set-id mode without O_CREAT is no mode at all.
        assert_eq!(sys(libc::SYS_openat, [0, 0, 0, 0o4755, 0, 0]), allow);
        assert_eq!(sys(libc::SYS_fchmodat, [0, 0, 0o4755, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_fchmodat, [0, 0, 0o2775, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_fchmodat, [0, 0, 0o755, 0, 0, 0]), allow);
        assert_eq!(sys(libc::SYS_fchmod, [3, 0o6755, 0, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_fchmod, [3, 0o644, 0, 0, 0, 0]), allow);
        assert_eq!(sys(libc::SYS_fchmodat2, [0, 0, 0o4700, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_mknodat, [0, 0, 0o104755, 0, 0, 0]), eperm);
    }
}
