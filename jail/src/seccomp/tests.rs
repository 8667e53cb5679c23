//! Decisions of the common rules and of the builder, checked with the BPF interpreter.

use super::*;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
const EACCES: u32 = RET_ERRNO | libc::EACCES as u32;

fn sys(f: &Filter, nr: c_long, args: [u64; 6]) -> u32 {
    eval(f.program().insns(), AUDIT_ARCH, nr, args)
}

#[test]
fn terminal_injection_ioctls_are_refused_and_ordinary_ones_are_not() {
    let f = Filter::common();
    let io = |cmd: u64| sys(&f, libc::SYS_ioctl, [0, cmd, 0, 0, 0, 0]);
    assert_eq!(io(libc::TIOCSTI), EPERM);
    assert_eq!(io(libc::TIOCLINUX), EPERM);
    assert_eq!(io(libc::TIOCSETD), EPERM);
    assert_eq!(io(libc::TIOCCONS), EPERM);
    // The kernel reads the command as an unsigned int: upper bits change nothing.
    assert_eq!(io((1 << 32) | libc::TIOCSTI), EPERM);
    for ok in [
        libc::TCGETS,
        libc::TCSETS,
        libc::TIOCGWINSZ,
        libc::TIOCSWINSZ,
        libc::TIOCGPGRP,
        libc::TIOCSPGRP,
        libc::FIONREAD,
        libc::FIONBIO,
    ] {
        assert_eq!(io(ok), RET_ALLOW, "ioctl {ok:#x}");
    }
}

#[test]
fn no_new_network_or_user_namespaces() {
    let f = Filter::common();
    let newnet = libc::CLONE_NEWNET as u64;
    let newuser = libc::CLONE_NEWUSER as u64;
    assert_eq!(sys(&f, libc::SYS_unshare, [newnet, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(sys(&f, libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), EPERM);
    let newns = libc::CLONE_NEWNS as u64;
    assert_eq!(
        sys(&f, libc::SYS_unshare, [newns, 0, 0, 0, 0, 0]),
        RET_ALLOW
    );
    assert_eq!(
        sys(&f, libc::SYS_clone, [newnet | 17, 0, 0, 0, 0, 0]),
        EPERM
    );
    let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    assert_eq!(sys(&f, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(sys(&f, libc::SYS_clone3, [0, 88, 0, 0, 0, 0]), ENOSYS);
    assert_eq!(sys(&f, libc::SYS_setns, [3, 0, 0, 0, 0, 0]), EPERM);
}

#[test]
fn no_second_notification_listener() {
    let f = Filter::common();
    let filter = libc::SECCOMP_SET_MODE_FILTER as u64;
    let listener: u64 = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let s = |a0, a1| sys(&f, libc::SYS_seccomp, [a0, a1, 0, 0, 0, 0]);
    assert_eq!(s(filter, listener), EPERM);
    assert_eq!(s(filter, listener | 1), EPERM);
    assert_eq!(s(filter, 0), RET_ALLOW);
    assert_eq!(s(3, listener), RET_ALLOW);
}

#[test]
fn non_namespaced_kernel_interfaces_are_refused() {
    let f = Filter::common();
    for n in KERNEL_ADMIN {
        assert_eq!(sys(&f, *n, [0; 6]), EPERM, "syscall {n}");
    }
    assert_eq!(
        sys(&f, libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
        ENOSYS
    );
    for ok in [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_ptrace,
        libc::SYS_getpid,
    ] {
        assert_eq!(sys(&f, ok, [0; 6]), RET_ALLOW, "syscall {ok}");
    }
}

#[test]
fn foreign_architectures_are_killed() {
    let f = Filter::common();
    let prog = f.program();
    assert_eq!(
        eval(prog.insns(), 0x4000_0003, 102, [0; 6]),
        RET_KILL_PROCESS
    ); // i386 socketcall
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        eval(
            prog.insns(),
            AUDIT_ARCH,
            (X32_SYSCALL_BIT as i64) | 41,
            [0; 6]
        ),
        RET_KILL_PROCESS
    );
}

#[test]
fn socket_allow_list_for_each_network_namespace() {
    for netns in [NetNs::Host, NetNs::Own] {
        let mut f = Filter::common();
        f.sockets(netns);
        let s = |d: i32, t: i32, p: i32| {
            sys(
                &f,
                libc::SYS_socket,
                [d as u64, t as u64, p as u64, 0, 0, 0],
            )
        };
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_DGRAM, 0), RET_ALLOW);
        assert_eq!(s(libc::AF_INET6, libc::SOCK_STREAM, 0), RET_ALLOW);
        assert_eq!(s(libc::AF_NETLINK, libc::SOCK_RAW, 0), RET_ALLOW);
        for family in [
            libc::AF_VSOCK,
            libc::AF_PACKET,
            libc::AF_BLUETOOTH,
            libc::AF_CAN,
            libc::AF_TIPC,
            libc::AF_RDS,
            libc::AF_ALG,
            41, // AF_KCM
            libc::AF_XDP,
            42, // AF_QIPCRTR
            libc::AF_NFC,
            43, // AF_SMC
            libc::AF_IUCV,
            libc::AF_X25,
            libc::AF_AX25,
            libc::AF_APPLETALK,
            libc::AF_IPX,
            libc::AF_LLC,
            libc::AF_PPPOX,
            libc::AF_KEY,
            45, // AF_MCTP
        ] {
            assert_eq!(s(family, libc::SOCK_STREAM, 0), EACCES, "family {family}");
            assert_eq!(s(family, libc::SOCK_DGRAM, 0), EACCES, "family {family}");
        }
        let udp = s(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let nfnetlink = s(libc::AF_NETLINK, libc::SOCK_RAW, 12);
        match netns {
            NetNs::Host => assert_eq!((udp, nfnetlink), (EACCES, EACCES)),
            NetNs::Own => assert_eq!((udp, nfnetlink), (RET_ALLOW, RET_ALLOW)),
        }
        let pair = |d: i32| sys(&f, libc::SYS_socketpair, [d as u64, 1, 0, 0, 0, 0]);
        assert_eq!(pair(libc::AF_UNIX), RET_ALLOW);
        assert_eq!(pair(libc::AF_INET), EACCES);
    }
}

#[test]
fn builder_rules_apply_in_order_with_their_fallback() {
    let mut f = Filter::empty();
    f.when(libc::SYS_prlimit64, vec![Cond::Eq(0, 0)], Action::Allow)
        .when(libc::SYS_prlimit64, vec![Cond::Null(2)], Action::Allow)
        .otherwise(libc::SYS_prlimit64, Action::Errno(libc::EPERM));
    f.notify(libc::SYS_connect);
    assert!(f.has_notify());
    assert!(!Filter::common().has_notify());
    let p = |pid: u64, new: u64| sys(&f, libc::SYS_prlimit64, [pid, 0, new, 0, 0, 0]);
    assert_eq!(p(0, 0x7fff_0000), RET_ALLOW);
    assert_eq!(p(1234, 0), RET_ALLOW);
    assert_eq!(p(1234, 0x7fff_0000), EPERM);
    // A pointer whose low half is zero is not NULL.
    assert_eq!(p(1234, 1 << 32), EPERM);
    assert_eq!(
        sys(&f, libc::SYS_connect, [3, 0, 16, 0, 0, 0]),
        RET_USER_NOTIF
    );
    assert_eq!(sys(&f, libc::SYS_listen, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
    // set() replaces what was there.
    f.set(libc::SYS_connect, Action::Allow);
    assert!(!f.has_notify());
}
