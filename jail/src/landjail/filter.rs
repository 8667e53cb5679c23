//! The seccomp BPF program installed in the jailed process.
//!
//! Classic BPF cannot follow pointers, so the filter decides only on syscall numbers and
//! integer arguments; everything that needs the target's memory (the address of `connect()`)
//! is sent to the supervisor with `SECCOMP_RET_USER_NOTIF`.
//!
//! What the program does, in order:
//! - any syscall from a foreign architecture (i386 on x86_64, where sockets go through the
//!   unfilterable `socketcall` multiplexer) or the x32 ABI kills the process;
//! - `connect` goes to the supervisor, always (also AF_UNIX: letting the kernel continue would
//!   let another thread swap the descriptor or the address after the check);
//! - `listen` goes to the supervisor, which notes the socket as the jail's own, so jailed
//!   processes can reach servers they started on loopback (and nothing else on loopback);
//! - `socket`: AF_UNIX any type; AF_INET/AF_INET6 only `SOCK_STREAM` with protocol 0 or TCP
//!   (no UDP, no ICMP datagram sockets, no raw sockets, no SCTP or MPTCP, which Landlock's TCP
//!   rules do not cover); AF_NETLINK only `NETLINK_ROUTE` and `NETLINK_SOCK_DIAG`, which tools
//!   such as `ip` and glibc's `getaddrinfo` read and which cannot change anything without
//!   capabilities the target does not have; every other family (packet, vsock, bluetooth, ...)
//!   fails with `EACCES`;
//! - `socketpair` only for AF_UNIX;
//! - `sendto`, `sendmsg`, `sendmmsg` with `MSG_FASTOPEN` fail with `EOPNOTSUPP`: TCP Fast Open
//!   connects to the address inside the send call, past both `connect()` and Landlock;
//!   `setsockopt(IPPROTO_TCP, TCP_FASTOPEN_CONNECT)` fails with `ENOPROTOOPT` for the same reason
//!   (clients fall back to a plain connect);
//! - no new network or user namespaces: `unshare` and `clone` with `CLONE_NEWNET` or
//!   `CLONE_NEWUSER` fail with `EPERM`, `setns` with `EPERM`, and `clone3` (whose flags sit
//!   behind a pointer) with `ENOSYS`, so libc falls back to `clone`. The supervisor checks
//!   loopback listeners in the target's network namespace, which must stay the one its sockets
//!   were made in; and a user namespace would hand the target capabilities again;
//! - `seccomp(SECCOMP_SET_MODE_FILTER)` with `SECCOMP_FILTER_FLAG_NEW_LISTENER` fails with
//!   `EPERM`: when two stacked filters both answer `USER_NOTIF`, the newest one's listener gets
//!   the notification, so a jailed process could take its own `connect()` notifications and let
//!   them continue past our supervisor (filters without a listener stay allowed: sandboxes in
//!   browsers and runtimes use them);
//! - `io_uring_*` fail with `ENOSYS`: io_uring creates sockets and connects without passing
//!   through the seccomp filter (programs fall back to ordinary syscalls);
//! - everything else is allowed.

use libc::{sock_filter, sock_fprog};

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little-endian: the low word comes first).
const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("landjail's seccomp filter knows only x86_64 and aarch64");

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

const SOCK_TYPE_MASK: u32 = 0xf;
const NETLINK_ROUTE: u32 = 0;
const NETLINK_SOCK_DIAG: u32 = 4;
const TCP_FASTOPEN_CONNECT: u32 = 30;

/// A jump target while assembling: a label resolved when the program is finished.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum L {
    Next,
    Allow,
    Kill,
    Notify,
    Eacces,
    Eopnotsupp,
    Enoprotoopt,
    Enosys,
    Socket,
    Inet,
    Netlink,
    Socketpair,
    SendFlags3,
    SendFlags2,
    Setsockopt,
    NsFlags0,
    Eperm,
    Seccomp,
}

enum Insn {
    Stmt(u16, u32),
    Jump(u16, u32, L, L),
    Label(L),
}

struct Asm(Vec<Insn>);

impl Asm {
    fn ld(&mut self, off: u32) {
        self.0.push(Insn::Stmt(BPF_LD | BPF_W | BPF_ABS, off));
    }
    fn and(&mut self, k: u32) {
        self.0.push(Insn::Stmt(BPF_ALU | BPF_AND | BPF_K, k));
    }
    fn ret(&mut self, k: u32) {
        self.0.push(Insn::Stmt(BPF_RET | BPF_K, k));
    }
    fn jeq(&mut self, k: u32, t: L, f: L) {
        self.0.push(Insn::Jump(BPF_JMP | BPF_JEQ | BPF_K, k, t, f));
    }
    fn jge(&mut self, k: u32, t: L, f: L) {
        self.0.push(Insn::Jump(BPF_JMP | BPF_JGE | BPF_K, k, t, f));
    }
    fn jset(&mut self, k: u32, t: L, f: L) {
        self.0.push(Insn::Jump(BPF_JMP | BPF_JSET | BPF_K, k, t, f));
    }
    fn label(&mut self, l: L) {
        self.0.push(Insn::Label(l));
    }

    /// Resolves labels into relative jump offsets.
    fn finish(self) -> Vec<sock_filter> {
        let mut pos = Vec::new();
        let mut n = 0usize;
        for i in &self.0 {
            match i {
                Insn::Label(l) => pos.push((*l, n)),
                _ => n += 1,
            }
        }
        let find = |l: L, here: usize| -> u8 {
            if l == L::Next {
                return 0;
            }
            let (_, at) = pos
                .iter()
                .find(|(x, _)| *x == l)
                .unwrap_or_else(|| panic!("BPF label {l:?} is not defined"));
            let off = at
                .checked_sub(here + 1)
                .unwrap_or_else(|| panic!("BPF label {l:?} jumps backwards"));
            u8::try_from(off).unwrap_or_else(|_| panic!("BPF jump to {l:?} too far"))
        };
        let mut out = Vec::with_capacity(n);
        for i in &self.0 {
            match *i {
                Insn::Label(_) => {}
                Insn::Stmt(code, k) => out.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump(code, k, t, f) => {
                    let here = out.len();
                    out.push(sock_filter {
                        code,
                        jt: find(t, here),
                        jf: find(f, here),
                        k,
                    });
                }
            }
        }
        out
    }
}

fn nr(n: libc::c_long) -> u32 {
    u32::try_from(n).expect("syscall numbers are small and positive")
}

/// Builds the filter program (see the module documentation for what it allows).
pub(crate) fn program() -> Vec<sock_filter> {
    let mut a = Asm(Vec::new());
    a.ld(OFF_ARCH);
    a.jeq(AUDIT_ARCH, L::Next, L::Kill);
    a.ld(OFF_NR);
    #[cfg(target_arch = "x86_64")]
    a.jge(X32_SYSCALL_BIT, L::Kill, L::Next);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = X32_SYSCALL_BIT;
    a.jeq(nr(libc::SYS_connect), L::Notify, L::Next);
    a.jeq(nr(libc::SYS_listen), L::Notify, L::Next);
    a.jeq(nr(libc::SYS_socket), L::Socket, L::Next);
    a.jeq(nr(libc::SYS_socketpair), L::Socketpair, L::Next);
    a.jeq(nr(libc::SYS_sendto), L::SendFlags3, L::Next);
    a.jeq(nr(libc::SYS_sendmmsg), L::SendFlags3, L::Next);
    a.jeq(nr(libc::SYS_sendmsg), L::SendFlags2, L::Next);
    a.jeq(nr(libc::SYS_setsockopt), L::Setsockopt, L::Next);
    a.jeq(nr(libc::SYS_unshare), L::NsFlags0, L::Next);
    a.jeq(nr(libc::SYS_clone), L::NsFlags0, L::Next);
    a.jeq(nr(libc::SYS_clone3), L::Enosys, L::Next);
    a.jeq(nr(libc::SYS_setns), L::Eperm, L::Next);
    a.jeq(nr(libc::SYS_seccomp), L::Seccomp, L::Next);
    a.jeq(nr(libc::SYS_io_uring_setup), L::Enosys, L::Next);
    a.jeq(nr(libc::SYS_io_uring_enter), L::Enosys, L::Next);
    a.jeq(nr(libc::SYS_io_uring_register), L::Enosys, L::Allow);

    a.label(L::Socket);
    a.ld(off_arg_lo(0));
    a.jeq(libc::AF_UNIX as u32, L::Allow, L::Next);
    a.jeq(libc::AF_INET as u32, L::Inet, L::Next);
    a.jeq(libc::AF_INET6 as u32, L::Inet, L::Next);
    a.jeq(libc::AF_NETLINK as u32, L::Netlink, L::Eacces);

    a.label(L::Inet);
    a.ld(off_arg_lo(1));
    a.and(SOCK_TYPE_MASK);
    a.jeq(libc::SOCK_STREAM as u32, L::Next, L::Eacces);
    a.ld(off_arg_lo(2));
    a.jeq(0, L::Allow, L::Next);
    a.jeq(libc::IPPROTO_TCP as u32, L::Allow, L::Eacces);

    a.label(L::Netlink);
    a.ld(off_arg_lo(2));
    a.jeq(NETLINK_ROUTE, L::Allow, L::Next);
    a.jeq(NETLINK_SOCK_DIAG, L::Allow, L::Eacces);

    a.label(L::Socketpair);
    a.ld(off_arg_lo(0));
    a.jeq(libc::AF_UNIX as u32, L::Allow, L::Eacces);

    a.label(L::SendFlags3);
    a.ld(off_arg_lo(3));
    a.jset(libc::MSG_FASTOPEN as u32, L::Eopnotsupp, L::Allow);

    a.label(L::SendFlags2);
    a.ld(off_arg_lo(2));
    a.jset(libc::MSG_FASTOPEN as u32, L::Eopnotsupp, L::Allow);

    a.label(L::Setsockopt);
    a.ld(off_arg_lo(1));
    a.jeq(libc::IPPROTO_TCP as u32, L::Next, L::Allow);
    a.ld(off_arg_lo(2));
    a.jeq(TCP_FASTOPEN_CONNECT, L::Enoprotoopt, L::Allow);

    a.label(L::NsFlags0);
    a.ld(off_arg_lo(0));
    a.jset(
        (libc::CLONE_NEWNET | libc::CLONE_NEWUSER) as u32,
        L::Eperm,
        L::Allow,
    );

    a.label(L::Seccomp);
    a.ld(off_arg_lo(0));
    a.jeq(libc::SECCOMP_SET_MODE_FILTER, L::Next, L::Allow);
    a.ld(off_arg_lo(1));
    a.jset(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32,
        L::Eperm,
        L::Allow,
    );

    a.label(L::Allow);
    a.ret(RET_ALLOW);
    a.label(L::Kill);
    a.ret(RET_KILL_PROCESS);
    a.label(L::Notify);
    a.ret(RET_USER_NOTIF);
    a.label(L::Eacces);
    a.ret(RET_ERRNO | libc::EACCES as u32);
    a.label(L::Eopnotsupp);
    a.ret(RET_ERRNO | libc::EOPNOTSUPP as u32);
    a.label(L::Enoprotoopt);
    a.ret(RET_ERRNO | libc::ENOPROTOOPT as u32);
    a.label(L::Eperm);
    a.ret(RET_ERRNO | libc::EPERM as u32);
    a.label(L::Enosys);
    a.ret(RET_ERRNO | libc::ENOSYS as u32);
    a.finish()
}

/// The program in the form `seccomp(2)` takes; borrows `prog`, which must outlive it.
pub(crate) fn fprog(prog: &[sock_filter]) -> sock_fprog {
    sock_fprog {
        len: u16::try_from(prog.len()).expect("filter program is short"),
        filter: prog.as_ptr().cast_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the subset of classic BPF the program uses, so the decisions can
    /// be checked without installing the filter.
    fn run(prog: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                c if c == BPF_LD | BPF_W | BPF_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                }
                c if c == BPF_ALU | BPF_AND | BPF_K => acc &= i.k,
                c if c == BPF_RET | BPF_K => return i.k,
                c if c & 0x07 == BPF_JMP => {
                    let taken = match c & 0xf0 {
                        BPF_JEQ => acc == i.k,
                        BPF_JGE => acc >= i.k,
                        BPF_JSET => acc & i.k != 0,
                        _ => panic!("unknown jump {c:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    fn sys(nr: libc::c_long, args: [u64; 6]) -> u32 {
        run(&program(), AUDIT_ARCH, nr, args)
    }

    const EACCES: u32 = RET_ERRNO | libc::EACCES as u32;

    #[test]
    fn socket_families_and_types() {
        let s =
            |d: i32, t: i32, p: i32| sys(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_STREAM, 0), RET_ALLOW);
        assert_eq!(s(libc::AF_UNIX, libc::SOCK_DGRAM, 0), RET_ALLOW);
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
            RET_ALLOW
        );
        assert_eq!(
            s(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
            RET_ALLOW
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_DGRAM, 0), EACCES);
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            EACCES
        );
        assert_eq!(
            s(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0),
            EACCES
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP), EACCES);
        assert_eq!(
            s(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            EACCES
        );
        assert_eq!(s(libc::AF_INET, libc::SOCK_STREAM, 262), EACCES); // MPTCP
        assert_eq!(s(libc::AF_PACKET, libc::SOCK_RAW, 0), EACCES);
        assert_eq!(s(libc::AF_VSOCK, libc::SOCK_STREAM, 0), EACCES);
        assert_eq!(s(libc::AF_NETLINK, libc::SOCK_RAW, 0), RET_ALLOW);
        assert_eq!(s(libc::AF_NETLINK, libc::SOCK_RAW, 12), EACCES); // NETLINK_NETFILTER
        assert_eq!(s(libc::AF_NETLINK, libc::SOCK_RAW, 16), EACCES); // NETLINK_GENERIC
                                                                     // Garbage in the upper half of a 64-bit register does not change the decision: the
                                                                     // kernel truncates int arguments the same way.
        assert_eq!(s(libc::AF_INET, libc::SOCK_DGRAM, 0), EACCES);
        assert_eq!(
            sys(
                libc::SYS_socket,
                [
                    (1 << 32) | libc::AF_INET as u64,
                    libc::SOCK_DGRAM as u64,
                    0,
                    0,
                    0,
                    0
                ]
            ),
            EACCES
        );
    }

    #[test]
    fn connect_goes_to_the_supervisor_and_fast_open_is_refused() {
        assert_eq!(sys(libc::SYS_connect, [3, 0, 16, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(sys(libc::SYS_listen, [3, 128, 0, 0, 0, 0]), RET_USER_NOTIF);
        let fo = libc::MSG_FASTOPEN as u64;
        let eop = RET_ERRNO | libc::EOPNOTSUPP as u32;
        assert_eq!(sys(libc::SYS_sendto, [3, 0, 1, fo, 0, 16]), eop);
        assert_eq!(sys(libc::SYS_sendto, [3, 0, 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(sys(libc::SYS_sendmsg, [3, 0, fo, 0, 0, 0]), eop);
        assert_eq!(sys(libc::SYS_sendmsg, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(sys(libc::SYS_sendmmsg, [3, 0, 1, fo, 0, 0]), eop);
        assert_eq!(
            sys(
                libc::SYS_setsockopt,
                [3, libc::IPPROTO_TCP as u64, 30, 0, 4, 0]
            ),
            RET_ERRNO | libc::ENOPROTOOPT as u32
        );
        assert_eq!(
            sys(
                libc::SYS_setsockopt,
                [
                    3,
                    libc::IPPROTO_TCP as u64,
                    libc::TCP_NODELAY as u64,
                    0,
                    4,
                    0
                ]
            ),
            RET_ALLOW
        );
        assert_eq!(
            sys(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(sys(libc::SYS_read, [0, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            sys(libc::SYS_socketpair, [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            EACCES
        );
    }

    #[test]
    fn no_new_network_or_user_namespaces() {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let newnet = libc::CLONE_NEWNET as u64;
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(sys(libc::SYS_unshare, [newnet, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]), eperm);
        assert_eq!(
            sys(libc::SYS_unshare, [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(sys(libc::SYS_clone, [newnet | 17, 0, 0, 0, 0, 0]), eperm);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(sys(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            sys(libc::SYS_clone3, [0, 88, 0, 0, 0, 0]),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(sys(libc::SYS_setns, [3, 0, 0, 0, 0, 0]), eperm);
    }

    #[test]
    fn no_second_notification_listener() {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let filter = libc::SECCOMP_SET_MODE_FILTER as u64;
        let listener: u64 = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        assert_eq!(
            sys(libc::SYS_seccomp, [filter, listener, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(
            sys(libc::SYS_seccomp, [filter, listener | 1, 0, 0, 0, 0]),
            eperm
        );
        assert_eq!(sys(libc::SYS_seccomp, [filter, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(sys(libc::SYS_seccomp, [3, 0, 0, 0, 0, 0]), RET_ALLOW);
    }

    #[test]
    fn foreign_architectures_are_killed() {
        assert_eq!(run(&program(), 0x4000_0003, 102, [0; 6]), RET_KILL_PROCESS); // i386 socketcall
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(
                &program(),
                AUDIT_ARCH,
                (X32_SYSCALL_BIT as i64) | 41,
                [0; 6]
            ),
            RET_KILL_PROCESS
        );
    }
}
