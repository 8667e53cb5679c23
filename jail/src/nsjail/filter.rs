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
//! With [`NsjailOptions::nested_sandboxes`](crate::NsjailOptions) the target may also create
//! user, mount, PID, network, IPC, UTS and cgroup namespaces (`unshare`, `clone`) and call
//! `mount`, `umount2` and `pivot_root`, which is what bubblewrap needs to build an agent's own
//! sandbox. What stays: `setns` (no joining a namespace the target did not create), `clone3`
//! (`ENOSYS`), the new mount API, and every other rule, which the nested processes inherit. A
//! mount call still needs `CAP_SYS_ADMIN` over the mount namespace, which the target has only
//! in namespaces it created itself: the jail's mounts are locked there (they cannot be
//! unmounted or made writable), and the kernel refuses a fresh procfs or sysfs because the
//! jail's are partly masked. A nested network namespace starts empty. The cost is kernel
//! attack surface: capabilities over its own namespaces reach code (netfilter among it) that
//! the jail otherwise keeps away from the target, hence off by default. A root-started jail's
//! target (uid 0) also keeps `CAP_SETFCAP` and cannot write extended attributes, and its
//! `mount` calls are made by the supervisor, which refuses overlay and FUSE
//! ([`Nested::of`], `supervisor::mount`).
//!
//! The filter is installed by the jail's init after it dropped its privileges and before it
//! starts the target, so it binds init and everything the target starts. The jail's sender
//! process (`supervisor::sender`) installs the same rules without the supervisor's
//! notifications (its sends must not come back to the supervisor).

use std::os::fd::OwnedFd;

use crate::seccomp::{Action, Filter, NetNs};
use crate::JailError;

/// `CAP_SETFCAP`'s number (capabilities(7); not in the libc crate).
const CAP_SETFCAP: u32 = 31;

/// Whether, and for whom, the target may build sandboxes of its own (bubblewrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nested {
    /// No new namespaces, no mounts (the default).
    Off,
    /// Namespaces and mounts for a target that is not uid 0 in the jail.
    Allowed,
    /// The same for a uid 0 target, which also keeps `CAP_SETFCAP` (see [`Nested::of`]).
    AllowedAsRoot,
}

impl Nested {
    /// The setting for a target with uid `uid` in the jail's user namespace. A uid 0 target
    /// (boundary started by root: the jail maps uid 0 to the host's root) can map uid 0 into a
    /// user namespace of its own only with `CAP_SETFCAP` (Linux 5.12+), which is what
    /// bubblewrap does; so it keeps that capability. Its risk is the capability's other use:
    /// a file capability written by a holder whose namespace's root is the host's root is a
    /// file capability on the host (a `cap_setuid` copy of an interpreter in `/tmp`, for
    /// every user). So the rules then refuse writing extended attributes altogether
    /// (`EOPNOTSUPP`, which tools read as "this file system keeps none"): seccomp cannot read
    /// the attribute's name, and the nested namespaces inherit the refusal. The other way to
    /// a set-id or capable host file is a mount whose file system copies files with their
    /// mode: overlayfs copies a lower file up into an upper directory on the host, as the
    /// mounter (the host's root). So every `mount` goes to the supervisor, which reads the
    /// type from its own copy and allows fresh mounts only of memory file systems
    /// (`supervisor::mount`).
    pub(crate) fn of(nested_sandboxes: bool, uid: u32) -> Nested {
        match (nested_sandboxes, uid) {
            (false, _) => Nested::Off,
            (true, 0) => Nested::AllowedAsRoot,
            (true, _) => Nested::Allowed,
        }
    }

    /// The capability the target keeps, if any.
    pub(crate) fn kept_capability(self) -> Option<u32> {
        (self == Nested::AllowedAsRoot).then_some(CAP_SETFCAP)
    }
}

/// nsjail's rules (see the module documentation) for `nested`; callers may add their own (a
/// connect supervisor's) before installing them.
pub(crate) fn rules(nested: Nested) -> Filter {
    let mut f = Filter::common();
    f.sockets(NetNs::Own);
    f.no_set_id_modes();
    if nested != Nested::Off {
        for n in [
            libc::SYS_unshare,
            libc::SYS_clone,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
        ] {
            f.set(n, Action::Allow);
        }
    }
    if nested == Nested::AllowedAsRoot {
        // A nested namespace's root is the host's root here: its mounts are made by the
        // supervisor, after it has read the file system type (`supervisor::mount`).
        f.set(libc::SYS_mount, Action::Notify);
        for n in [libc::SYS_setxattr, libc::SYS_lsetxattr, libc::SYS_fsetxattr] {
            f.set(n, Action::Errno(libc::EOPNOTSUPP));
        }
        f.set(
            crate::supervisor::meta::SYS_SETXATTRAT,
            Action::Errno(libc::ENOSYS),
        );
    }
    f
}

/// Why `nested_sandboxes` cannot work for a jail built without a user namespace
/// (`--no-user-namespace`, or where the host refuses user namespaces and the jail is built
/// through sudo or file capabilities): the jailed command is then an unprivileged process of
/// the host's own user namespace, and creating a nested one is exactly what the host (or the
/// missing user namespace) refuses.
pub(crate) fn nested_without_user_namespace() -> JailError {
    JailError::Unsupported(
        "nested_sandboxes needs the jail's own user namespace: without one (--no-user-namespace, \
         or a host that refuses user namespaces, where boundary builds the jail through sudo or \
         file capabilities) the jailed command's own sandbox cannot create the namespaces it \
         needs. Allow unprivileged user namespaces on this host and drop --no-user-namespace, or \
         leave nested_sandboxes off and run the agent without its own sandbox \
         (codex --dangerously-bypass-approvals-and-sandbox)"
            .into(),
    )
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
        eval(rules(Nested::Off).program().insns(), AUDIT_ARCH, nr, args)
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
        assert!(!rules(Nested::Off).has_notify());
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

    /// Nested sandboxes open namespaces and mounts, and nothing else: `setns`, `clone3`, the
    /// new mount API and the other rules stay; without the setting all of it is refused.
    #[test]
    fn nested_sandboxes_allow_namespaces_and_mounts_only() {
        let eperm = Action::Errno(libc::EPERM).ret();
        let enosys = Action::Errno(libc::ENOSYS).ret();
        let allow = Action::Allow.ret();
        let all_ns = (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP) as u64;
        let nested_modes = [
            (Nested::Off, eperm),
            (Nested::Allowed, allow),
            (Nested::AllowedAsRoot, allow),
        ];
        for (nested, want) in nested_modes {
            let f = rules(nested);
            let sys = |nr, args| eval(f.program().insns(), AUDIT_ARCH, nr, args);
            assert_eq!(sys(libc::SYS_unshare, [all_ns, 0, 0, 0, 0, 0]), want);
            assert_eq!(sys(libc::SYS_clone, [all_ns, 0, 0, 0, 0, 0]), want);
            // Started by root, the supervisor reads the file system type first.
            let mount = if nested == Nested::AllowedAsRoot {
                Action::Notify.ret()
            } else {
                want
            };
            assert_eq!(sys(libc::SYS_mount, [0, 0, 0, 0, 0, 0]), mount);
            assert_eq!(sys(libc::SYS_umount2, [0, 0, 0, 0, 0, 0]), want);
            assert_eq!(sys(libc::SYS_pivot_root, [0, 0, 0, 0, 0, 0]), want);
            assert_eq!(sys(libc::SYS_setns, [3, 0, 0, 0, 0, 0]), eperm);
            assert_eq!(sys(libc::SYS_clone3, [0, 88, 0, 0, 0, 0]), enosys);
            for n in [
                libc::SYS_fsopen,
                libc::SYS_fsconfig,
                libc::SYS_fsmount,
                libc::SYS_fspick,
                libc::SYS_move_mount,
                libc::SYS_open_tree,
                libc::SYS_mount_setattr,
                467, // open_tree_attr
            ] {
                assert_eq!(sys(n, [0, 0, 0, 0, 0, 0]), eperm);
            }
            let vsock = libc::AF_VSOCK as u64;
            let stream = libc::SOCK_STREAM as u64;
            let eacces = Action::Errno(libc::EACCES).ret();
            assert_eq!(sys(libc::SYS_socket, [vsock, stream, 0, 0, 0, 0]), eacces);
            assert_eq!(sys(libc::SYS_bpf, [0, 0, 0, 0, 0, 0]), eperm);
            assert_eq!(sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]), enosys);
            // Extended attributes (file capabilities among them) only for a non-root target.
            let xattrs = if nested == Nested::AllowedAsRoot {
                Action::Errno(libc::EOPNOTSUPP).ret()
            } else {
                allow
            };
            for n in [libc::SYS_setxattr, libc::SYS_lsetxattr, libc::SYS_fsetxattr] {
                assert_eq!(sys(n, [0, 0, 0, 0, 0, 0]), xattrs);
            }
            assert_eq!(sys(libc::SYS_removexattr, [0, 0, 0, 0, 0, 0]), allow);
        }
    }

    #[test]
    fn only_a_root_target_with_nested_sandboxes_keeps_a_capability() {
        assert_eq!(Nested::of(false, 0), Nested::Off);
        assert_eq!(Nested::of(false, 1000), Nested::Off);
        assert_eq!(Nested::of(true, 1000), Nested::Allowed);
        assert_eq!(Nested::of(true, 0), Nested::AllowedAsRoot);
        assert_eq!(Nested::Allowed.kept_capability(), None);
        assert_eq!(Nested::AllowedAsRoot.kept_capability(), Some(CAP_SETFCAP));
    }
}
