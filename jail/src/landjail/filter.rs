//! landjail's seccomp rules, on top of the rules both jails share ([`Filter::common`]).
//!
//! - `connect` goes to the supervisor, always (also AF_UNIX: letting the kernel continue would
//!   let another thread swap the descriptor or the address after the check);
//! - `listen` goes to the supervisor, which notes the socket as the jail's own, so jailed
//!   processes can reach servers they started on loopback (and nothing else on loopback);
//! - `socket`: AF_UNIX any type; AF_INET/AF_INET6 only `SOCK_STREAM` with protocol 0 or TCP
//!   (no UDP, no ICMP datagram sockets, no raw sockets, no SCTP or MPTCP, which Landlock's TCP
//!   rules do not cover); AF_NETLINK route and sock_diag only; every other family (packet,
//!   vsock, bluetooth, ...) fails with `EACCES`; `socketpair` only AF_UNIX;
//! - `sendto`, `sendmsg`, `sendmmsg` with `MSG_FASTOPEN` fail with `EOPNOTSUPP`: TCP Fast Open
//!   connects to the address inside the send call, past both `connect()` and Landlock;
//!   `setsockopt(IPPROTO_TCP, TCP_FASTOPEN_CONNECT)` fails with `ENOPROTOOPT` for the same reason
//!   (clients fall back to a plain connect);
//! - changes of file metadata (mode, owner, times, extended attributes), which Landlock does
//!   not control, go to the supervisor, which makes them only beneath the writable paths
//!   (`supervisor::meta`); `setxattrat`, `removexattrat` and `file_setattr` fail with `ENOSYS`;
//!   creating a setuid or setgid file fails with `EPERM`, `openat2` with `ENOSYS`;
//! - other processes: landjail shares the host's PID namespace, so calls that act on a process
//!   chosen by pid, process group or user could reach processes outside the jail (the kernel
//!   only checks that the uid matches). `prlimit64` that sets a limit, `setpriority`,
//!   `ioprio_set`, `sched_setaffinity`, `sched_setscheduler`, `sched_setparam` and
//!   `sched_setattr` are allowed only on the caller itself (pid 0; `PRIO_PROCESS` or
//!   `IOPRIO_WHO_PROCESS` with 0) and fail with `EPERM` otherwise. A filter cannot tell the
//!   jail's own children from host processes, so `renice`, `taskset -p` or `prlimit --pid`
//!   aimed at a child fail too, and so do per-thread calls by thread id (glibc's
//!   `pthread_setaffinity_np`, `pthread_setschedparam`); the calling thread itself (pid 0)
//!   works. Reading (`getpriority`, `prlimit64` without a new limit, `sched_get*`) is allowed.
//!   Calls that need ptrace access to the other process (`process_vm_writev`, `kcmp`,
//!   `pidfd_getfd`, `migrate_pages`, `move_pages`, `process_madvise`, `/proc/<pid>/mem`) are
//!   refused by Landlock, which denies ptrace access outside the domain; signals by its
//!   scoping (Linux 6.12); writes to `/proc/<pid>/oom_score_adj` and the like by the Landlock
//!   write rules (nothing under `/proc` is writable);
//! - System V IPC and POSIX message queues fail with `EPERM` ([`no_host_ipc`]): their objects
//!   are the host's, named by id or key, out of Landlock's sight.

use super::super::seccomp::{Action, Cond, Filter, NetNs, Program};

const TCP_FASTOPEN_CONNECT: u32 = 30;
const IOPRIO_WHO_PROCESS: u32 = 1;

/// Builds landjail's program (see the module documentation).
pub(crate) fn program() -> Program {
    rules().program()
}

fn rules() -> Filter {
    let mut f = Filter::common();
    f.sockets(NetNs::Host);
    f.notify(libc::SYS_connect).notify(libc::SYS_listen);
    let fastopen = libc::MSG_FASTOPEN as u32;
    let eopnotsupp = Action::Errno(libc::EOPNOTSUPP);
    for (n, flags) in [
        (libc::SYS_sendto, 3),
        (libc::SYS_sendmmsg, 3),
        (libc::SYS_sendmsg, 2),
    ] {
        f.when(n, vec![Cond::AnySet(flags, fastopen)], eopnotsupp);
    }
    crate::supervisor::add_send_rules(&mut f);
    crate::supervisor::meta::add_rules(&mut f);
    f.when(
        libc::SYS_setsockopt,
        vec![
            Cond::Eq(1, libc::IPPROTO_TCP as u32),
            Cond::Eq(2, TCP_FASTOPEN_CONNECT),
        ],
        Action::Errno(libc::ENOPROTOOPT),
    );
    own_process_only(&mut f);
    no_host_ipc(&mut f);
    f
}

/// System V IPC and POSIX message queues: landjail shares the host's IPC namespace, whose
/// objects are named by global ids and keys, not paths, so Landlock does not see them. The
/// owner check is all the kernel makes: a root-started target (uid 0 without capabilities)
/// could attach and rewrite, or remove, root's shared memory segments, semaphores and queues
/// (a database's shared buffers). A filter cannot tell the jail's objects from the host's, so
/// every call that names one fails with `EPERM` (`shmdt` stays: it only detaches). Programs that
/// need them (PostgreSQL's SysV segment) run in nsjail, which has its own IPC namespace.
fn no_host_ipc(f: &mut Filter) {
    for n in [
        libc::SYS_shmget,
        libc::SYS_shmat,
        libc::SYS_shmctl,
        libc::SYS_semget,
        libc::SYS_semop,
        libc::SYS_semtimedop,
        libc::SYS_semctl,
        libc::SYS_msgget,
        libc::SYS_msgsnd,
        libc::SYS_msgrcv,
        libc::SYS_msgctl,
        libc::SYS_mq_open,
        libc::SYS_mq_unlink,
    ] {
        f.set(n, Action::Errno(libc::EPERM));
    }
}

/// Calls that change another process: allowed only on the caller.
fn own_process_only(f: &mut Filter) {
    let eperm = Action::Errno(libc::EPERM);
    let me = || Cond::Eq(0, 0);
    f.when(libc::SYS_prlimit64, vec![me()], Action::Allow)
        .when(libc::SYS_prlimit64, vec![Cond::Null(2)], Action::Allow)
        .otherwise(libc::SYS_prlimit64, eperm);
    let who_me = |which: u32| vec![Cond::Eq(0, which), Cond::Eq(1, 0)];
    f.when(
        libc::SYS_setpriority,
        who_me(libc::PRIO_PROCESS),
        Action::Allow,
    )
    .otherwise(libc::SYS_setpriority, eperm);
    f.when(
        libc::SYS_ioprio_set,
        who_me(IOPRIO_WHO_PROCESS),
        Action::Allow,
    )
    .otherwise(libc::SYS_ioprio_set, eperm);
    for n in [
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setattr,
    ] {
        f.when(n, vec![me()], Action::Allow).otherwise(n, eperm);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::seccomp::{eval, AUDIT_ARCH};
    use super::*;

    fn sys(nr: libc::c_long, args: [u64; 6]) -> u32 {
        eval(program().insns(), AUDIT_ARCH, nr, args)
    }

    const ALLOW: u32 = 0x7fff_0000;
    const NOTIFY: u32 = 0x7fc0_0000;
    fn errno(e: i32) -> u32 {
        Action::Errno(e).ret()
    }

    #[test]
    fn only_tcp_streams_among_internet_sockets() {
        let s =
            |d: i32, t: i32, p: i32| sys(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        let eacces = errno(libc::EACCES);
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_STREAM, 0), ALLOW);
        let cloexec = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        assert_eq!(s(libc::AF_INET, cloexec, 0), ALLOW);
        assert_eq!(
            s(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
            ALLOW
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_DGRAM, 0), eacces);
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            eacces
        );
        let nonblock = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK;
        assert_eq!(s(libc::AF_INET6, nonblock, 0), eacces);
        assert_eq!(s(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), eacces);
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            eacces
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, 262), eacces); // MPTCP
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW, 0), eacces);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_STREAM, 0), eacces);
        // The kernel truncates int arguments, and so does the filter.
        let high = (1u64 << 32) | libc::AF_INET as u64;
        let dgram = libc::SOCK_DGRAM as u64;
        assert_eq!(sys(libc::SYS_socket, [high, dgram, 0, 0, 0, 0]), eacces);
    }

    #[test]
    fn connect_and_addressed_sends_go_to_the_supervisor_and_fast_open_is_refused() {
        assert_eq!(sys(libc::SYS_connect, [3, 0, 16, 0, 0, 0]), NOTIFY);
        assert_eq!(sys(libc::SYS_listen, [3, 128, 0, 0, 0, 0]), NOTIFY);
        let fo = libc::MSG_FASTOPEN as u64;
        let eop = errno(libc::EOPNOTSUPP);
        assert_eq!(sys(libc::SYS_sendto, [3, 0, 1, fo, 0, 16]), eop);
        assert_eq!(sys(libc::SYS_sendto, [3, 0, 1, 0, 0, 0]), ALLOW);
        // A destination named: decided by the supervisor (a Unix datagram to a host socket).
        assert_eq!(sys(libc::SYS_sendto, [3, 0, 1, 0, 0x1000, 16]), NOTIFY);
        assert_eq!(sys(libc::SYS_sendmsg, [3, 0, fo, 0, 0, 0]), eop);
        assert_eq!(sys(libc::SYS_sendmsg, [3, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(sys(libc::SYS_sendmmsg, [3, 0, 1, fo, 0, 0]), eop);
        assert_eq!(sys(libc::SYS_sendmmsg, [3, 0, 1, 0, 0, 0]), NOTIFY);
        let tcp = libc::IPPROTO_TCP as u64;
        assert_eq!(
            sys(libc::SYS_setsockopt, [3, tcp, 30, 0, 4, 0]),
            errno(libc::ENOPROTOOPT)
        );
        let nodelay = libc::TCP_NODELAY as u64;
        assert_eq!(sys(libc::SYS_setsockopt, [3, tcp, nodelay, 0, 4, 0]), ALLOW);
    }

    #[test]
    fn other_processes_cannot_be_limited_reniced_or_pinned() {
        let eperm = errno(libc::EPERM);
        let victim = 4242u64;
        let limit = 0x7ffd_0000u64; // a pointer to a new limit
        let cpu = libc::RLIMIT_CPU as u64;
        assert_eq!(
            sys(libc::SYS_prlimit64, [victim, cpu, limit, 0, 0, 0]),
            eperm
        );
        assert_eq!(sys(libc::SYS_prlimit64, [0, cpu, limit, 0, 0, 0]), ALLOW);
        assert_eq!(
            sys(libc::SYS_prlimit64, [victim, cpu, 0, limit, 0, 0]),
            ALLOW
        );
        let prio =
            |which: i32, who: u64| sys(libc::SYS_setpriority, [which as u64, who, 19, 0, 0, 0]);
        assert_eq!(prio(libc::PRIO_PROCESS as i32, 0), ALLOW);
        assert_eq!(prio(libc::PRIO_PROCESS as i32, victim), eperm);
        assert_eq!(prio(libc::PRIO_PGRP as i32, 0), eperm);
        assert_eq!(prio(libc::PRIO_USER as i32, 0), eperm);
        assert_eq!(sys(libc::SYS_getpriority, [2, 0, 0, 0, 0, 0]), ALLOW);
        let io = |which: u64, who: u64| sys(libc::SYS_ioprio_set, [which, who, 0, 0, 0, 0]);
        assert_eq!(io(1, 0), ALLOW);
        assert_eq!(io(1, victim), eperm);
        assert_eq!(io(2, 0), eperm);
        assert_eq!(io(3, 0), eperm);
        for n in [
            libc::SYS_sched_setaffinity,
            libc::SYS_sched_setscheduler,
            libc::SYS_sched_setparam,
            libc::SYS_sched_setattr,
        ] {
            assert_eq!(
                sys(n, [0, 8, limit, 0, 0, 0]),
                ALLOW,
                "syscall {n} on itself"
            );
            assert_eq!(sys(n, [victim, 8, limit, 0, 0, 0]), eperm, "syscall {n}");
        }
    }

    #[test]
    fn host_ipc_objects_are_out_of_reach() {
        let eperm = errno(libc::EPERM);
        for n in [
            libc::SYS_shmget,
            libc::SYS_shmat,
            libc::SYS_shmctl,
            libc::SYS_semctl,
        ] {
            assert_eq!(sys(n, [0; 6]), eperm);
        }
        assert_eq!(sys(libc::SYS_msgsnd, [1, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_mq_open, [0; 6]), eperm);
        assert_eq!(sys(libc::SYS_shmdt, [0; 6]), ALLOW);
    }

    #[test]
    fn the_shared_rules_are_there() {
        let eperm = errno(libc::EPERM);
        assert_eq!(sys(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_bpf, [0; 6]), eperm);
        assert_eq!(sys(libc::SYS_read, [0; 6]), ALLOW);
    }
}
