//! One seccomp filter builder for both jails: [`Filter::common`] holds the rules every jail
//! needs, and each jail adds its own on top (`landjail::filter`, `nsjail::filter`).
//!
//! Classic BPF cannot follow pointers, so rules decide only on the syscall number and integer
//! arguments (the low 32 bits, which is all the kernel reads of an `int` argument, so garbage in
//! the upper half changes nothing); anything that needs the caller's memory goes to a
//! supervisor with [`Action::Notify`]. Syscalls of a foreign architecture (i386 on x86_64,
//! where sockets go through the unfilterable `socketcall` multiplexer) and the x32 ABI kill
//! the process. Syscalls without a rule are allowed.
//!
//! The rules common to both jails ([`Filter::common`]) refuse:
//! - terminal injection and takeover: `ioctl` `TIOCSTI` (push bytes into the terminal's input:
//!   the user's shell would run them after boundary exits), `TIOCLINUX` (console selection
//!   paste), `TIOCSETD` (line discipline of the shared terminal) and `TIOCCONS` (redirect
//!   console output) fail with `EPERM`; reading, writing, window size and job control work;
//! - new user and network namespaces (`unshare`, `clone` with `CLONE_NEWUSER` or
//!   `CLONE_NEWNET`; `setns`) with `EPERM`, and `clone3`, whose flags sit behind a pointer, with
//!   `ENOSYS` so libc falls back to `clone`. A user namespace hands capabilities back to the
//!   target and opens the large kernel surface reachable only with them (nf_tables and others);
//! - a second seccomp notification listener (`seccomp` with `SECCOMP_FILTER_FLAG_NEW_LISTENER`):
//!   the newest listener gets the notification, so the target could answer its own connects;
//!   filters without a listener stay allowed (browsers and runtimes use them);
//! - `io_uring_*` with `ENOSYS`: io_uring makes sockets and connects without passing through
//!   the filter (programs fall back to ordinary syscalls);
//! - kernel interfaces that are not per namespace or exist for the machine's administrator,
//!   with `EPERM`: the BPF syscall, `perf_event_open`, `userfaultfd`, the keyrings (`keyctl`,
//!   `add_key`, `request_key`: the user keyring is shared with every process of the user),
//!   module loading, `kexec`, `reboot`, swap, process accounting, the kernel log (`syslog`),
//!   setting the clock, `open_by_handle_at`, quotas, `vhangup`, every way to mount (`mount`,
//!   `umount2`, `pivot_root`, the new mount API) and, on x86_64, `iopl`/`ioperm`. Most need a
//!   capability the target never holds; refusing them by number too keeps a mistake elsewhere
//!   from becoming an escape.

mod bpf;

#[cfg(test)]
pub(crate) use bpf::eval;

use bpf::{Asm, Label, NEXT};
use libc::{c_long, sock_filter, sock_fprog};

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Low 32 bits of argument `i` (little-endian: the low word comes first).
const fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

/// The architecture the filter allows (`AUDIT_ARCH_*`).
#[cfg(target_arch = "x86_64")]
pub(crate) const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
pub(crate) const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the jails' seccomp filter knows only x86_64 and aarch64");

/// Syscall numbers with this bit are the x32 ABI.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// What the filter does with a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Let the kernel run it.
    Allow,
    /// Fail it with this errno.
    Errno(i32),
    /// Suspend the caller and ask the supervisor holding the notification listener.
    Notify,
    /// Kill the whole process.
    Kill,
}

impl Action {
    /// The `SECCOMP_RET_*` value.
    pub(crate) fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Errno(e) => RET_ERRNO | (e as u32 & 0xffff),
            Action::Notify => RET_USER_NOTIF,
            Action::Kill => RET_KILL_PROCESS,
        }
    }
}

/// A test on one syscall argument (`arg` counts from 0).
#[derive(Clone, Debug)]
pub(crate) enum Cond {
    /// The low 32 bits equal the value.
    Eq(u8, u32),
    /// The low 32 bits are one of the values.
    In(u8, Vec<u32>),
    /// The low 32 bits, masked, equal the value.
    MaskedEq(u8, u32, u32),
    /// At least one bit of the mask is set in the low 32 bits.
    AnySet(u8, u32),
    /// The whole 64-bit argument is zero (a NULL pointer).
    Null(u8),
}

#[derive(Debug)]
struct Syscall {
    nr: u32,
    rules: Vec<(Vec<Cond>, Action)>,
    otherwise: Action,
}

/// The rules of one filter: per syscall, conditional rules tried in order, then a fallback.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    syscalls: Vec<Syscall>,
}

/// A syscall number as the filter compares it.
fn nr(n: c_long) -> u32 {
    u32::try_from(n).expect("syscall numbers are small and positive")
}

/// Which network namespace the jailed process is in: decides which internet and netlink
/// sockets [`Filter::sockets`] allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NetNs {
    /// The host's (landjail): only TCP streams, which Landlock's rules cover, and netlink
    /// route and sock_diag, which tools read and which change nothing without capabilities.
    Host,
    /// One of its own (nsjail): every internet and netlink socket, which the namespace
    /// confines.
    Own,
}

impl Filter {
    /// No rules: every syscall of the native architecture is allowed.
    pub(crate) fn empty() -> Self {
        Filter::default()
    }

    /// The rules both jails share (see the module documentation).
    pub(crate) fn common() -> Self {
        let mut f = Filter::empty();
        let eperm = Action::Errno(libc::EPERM);
        let enosys = Action::Errno(libc::ENOSYS);
        let tty = [
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TIOCSETD,
            libc::TIOCCONS,
        ];
        let tty = tty.iter().map(|&c| c as u32).collect();
        f.when(libc::SYS_ioctl, vec![Cond::In(1, tty)], eperm);
        let new_ns = (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as u32;
        f.when(libc::SYS_unshare, vec![Cond::AnySet(0, new_ns)], eperm);
        f.when(libc::SYS_clone, vec![Cond::AnySet(0, new_ns)], eperm);
        f.set(libc::SYS_clone3, enosys);
        f.set(libc::SYS_setns, eperm);
        let listener = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
        f.when(
            libc::SYS_seccomp,
            vec![
                Cond::Eq(0, libc::SECCOMP_SET_MODE_FILTER),
                Cond::AnySet(1, listener),
            ],
            eperm,
        );
        for n in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            f.set(n, enosys);
        }
        for n in KERNEL_ADMIN {
            f.set(*n, eperm);
        }
        f.no_set_id_files();
        f
    }

    /// Creating a file with [`SET_ID`] bits fails with `EPERM` (`open`, `openat`, `creat` with
    /// `O_CREAT` or `O_TMPFILE`, `mknod`); `openat2`, whose mode sits behind a pointer, fails
    /// with `ENOSYS` (libraries fall back to `openat`). A root-started target writes files the
    /// host sees as root's (`/tmp`, the working directory): a setuid one would run as root for
    /// every host user, where no `no_new_privs` holds. Changing a mode is the other half:
    /// landjail's supervisor decides it (`supervisor::meta`), nsjail refuses it by number
    /// ([`no_set_id_modes`](Self::no_set_id_modes)).
    pub(crate) fn no_set_id_files(&mut self) -> &mut Self {
        let creating = (libc::O_CREAT | (libc::O_TMPFILE & !libc::O_DIRECTORY)) as u32;
        let eperm = Action::Errno(libc::EPERM);
        let create_with =
            |flags: u8, mode: u8| vec![Cond::AnySet(flags, creating), Cond::AnySet(mode, SET_ID)];
        #[cfg(target_arch = "x86_64")]
        {
            self.when(libc::SYS_open, create_with(1, 2), eperm);
            self.when(libc::SYS_creat, vec![Cond::AnySet(1, SET_ID)], eperm);
            self.when(libc::SYS_mknod, vec![Cond::AnySet(1, SET_ID)], eperm);
        }
        self.when(libc::SYS_openat, create_with(2, 3), eperm);
        self.when(libc::SYS_mknodat, vec![Cond::AnySet(2, SET_ID)], eperm);
        self.set(libc::SYS_openat2, Action::Errno(libc::ENOSYS));
        self
    }

    /// `chmod`, `fchmod`, `fchmodat` and `fchmodat2` with a [`SET_ID`] bit fail with `EPERM`,
    /// decided on the mode argument alone (BPF cannot tell a directory from a file, so
    /// `chmod g+s` on a directory is refused too). For a jail without a metadata supervisor.
    pub(crate) fn no_set_id_modes(&mut self) -> &mut Self {
        let eperm = Action::Errno(libc::EPERM);
        #[cfg(target_arch = "x86_64")]
        self.when(libc::SYS_chmod, vec![Cond::AnySet(1, SET_ID)], eperm);
        self.when(libc::SYS_fchmod, vec![Cond::AnySet(1, SET_ID)], eperm);
        self.when(libc::SYS_fchmodat, vec![Cond::AnySet(2, SET_ID)], eperm);
        self.when(libc::SYS_fchmodat2, vec![Cond::AnySet(2, SET_ID)], eperm);
        self
    }

    /// Every call of `nr` gets `action` (replacing earlier rules for it).
    pub(crate) fn set(&mut self, nr: c_long, action: Action) -> &mut Self {
        let s = self.entry(nr);
        s.rules.clear();
        s.otherwise = action;
        self
    }

    /// A call of `nr` whose arguments pass every condition gets `action`; rules are tried in
    /// the order they were added, calls matching none get the fallback (allow, unless
    /// [`otherwise`](Self::otherwise) set another).
    pub(crate) fn when(&mut self, nr: c_long, conds: Vec<Cond>, action: Action) -> &mut Self {
        self.entry(nr).rules.push((conds, action));
        self
    }

    /// The fallback for calls of `nr` that match none of its rules.
    pub(crate) fn otherwise(&mut self, nr: c_long, action: Action) -> &mut Self {
        self.entry(nr).otherwise = action;
        self
    }

    /// Sends every call of `nr` to the supervisor holding the notification listener.
    pub(crate) fn notify(&mut self, nr: c_long) -> &mut Self {
        self.set(nr, Action::Notify)
    }

    /// Whether some rule notifies (the filter must then be installed with a listener).
    pub(crate) fn has_notify(&self) -> bool {
        self.syscalls.iter().any(|s| {
            s.otherwise == Action::Notify || s.rules.iter().any(|(_, a)| *a == Action::Notify)
        })
    }

    /// `socket` and `socketpair`: an allow-list of families, AF_UNIX (any type), AF_INET,
    /// AF_INET6 and AF_NETLINK (as `netns` says); every other family (vsock, bluetooth,
    /// packet, ...) fails with `EACCES`; `socketpair` only AF_UNIX.
    pub(crate) fn sockets(&mut self, netns: NetNs) -> &mut Self {
        const NETLINK_ROUTE: u32 = 0;
        const NETLINK_SOCK_DIAG: u32 = 4;
        const SOCK_TYPE_MASK: u32 = 0xf;
        let eacces = Action::Errno(libc::EACCES);
        let s = libc::SYS_socket;
        self.set(s, eacces);
        self.when(s, vec![Cond::Eq(0, libc::AF_UNIX as u32)], Action::Allow);
        let mut ip = vec![Cond::In(
            0,
            vec![libc::AF_INET as u32, libc::AF_INET6 as u32],
        )];
        let mut netlink = vec![Cond::Eq(0, libc::AF_NETLINK as u32)];
        if netns == NetNs::Host {
            ip.push(Cond::MaskedEq(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u32));
            ip.push(Cond::In(2, vec![0, libc::IPPROTO_TCP as u32]));
            netlink.push(Cond::In(2, vec![NETLINK_ROUTE, NETLINK_SOCK_DIAG]));
        }
        self.when(s, ip, Action::Allow);
        self.when(s, netlink, Action::Allow);
        self.set(libc::SYS_socketpair, eacces);
        self.when(
            libc::SYS_socketpair,
            vec![Cond::Eq(0, libc::AF_UNIX as u32)],
            Action::Allow,
        );
        self
    }

    fn entry(&mut self, n: c_long) -> &mut Syscall {
        let n = nr(n);
        if let Some(i) = self.syscalls.iter().position(|s| s.nr == n) {
            return &mut self.syscalls[i];
        }
        self.syscalls.push(Syscall {
            nr: n,
            rules: Vec::new(),
            otherwise: Action::Allow,
        });
        self.syscalls.last_mut().expect("just pushed")
    }

    /// Compiles the rules: the architecture check, then one block per syscall (skipped by a
    /// single jump when the number differs), then allow.
    pub(crate) fn program(&self) -> Program {
        let mut a = Asm::default();
        // The kills come first: a jump to the end could be longer than BPF's 255.
        let arch_ok = a.new_label();
        a.ld(OFF_ARCH);
        a.jeq(AUDIT_ARCH, arch_ok, NEXT);
        a.ret(Action::Kill.ret());
        a.here(arch_ok);
        a.ld(OFF_NR);
        #[cfg(target_arch = "x86_64")]
        {
            let native = a.new_label();
            a.jge(X32_SYSCALL_BIT, NEXT, native);
            a.ret(Action::Kill.ret());
            a.here(native);
        }
        for s in &self.syscalls {
            let skip = a.new_label();
            a.jeq(s.nr, NEXT, skip);
            for (conds, action) in &s.rules {
                let fail = a.new_label();
                for c in conds {
                    cond(&mut a, c, fail);
                }
                a.ret(action.ret());
                a.here(fail);
            }
            a.ret(s.otherwise.ret());
            // Every path through the block returned, so the accumulator still holds the number.
            a.here(skip);
        }
        a.ret(RET_ALLOW);
        Program(a.finish())
    }
}

/// Emits `c`: falls through when it holds, jumps to `fail` when not.
fn cond(a: &mut Asm, c: &Cond, fail: Label) {
    match c {
        Cond::Eq(i, v) => {
            a.ld(off_arg_lo(*i));
            a.jeq(*v, NEXT, fail);
        }
        Cond::In(i, vs) => {
            a.ld(off_arg_lo(*i));
            let pass = a.new_label();
            for (k, v) in vs.iter().enumerate() {
                let miss = if k + 1 == vs.len() { fail } else { NEXT };
                a.jeq(*v, pass, miss);
            }
            a.here(pass);
        }
        Cond::MaskedEq(i, m, v) => {
            a.ld(off_arg_lo(*i));
            a.and(*m);
            a.jeq(*v, NEXT, fail);
        }
        Cond::AnySet(i, m) => {
            a.ld(off_arg_lo(*i));
            a.jset(*m, NEXT, fail);
        }
        Cond::Null(i) => {
            a.ld(off_arg_lo(*i));
            a.jeq(0, NEXT, fail);
            a.ld(off_arg_lo(*i) + 4);
            a.jeq(0, NEXT, fail);
        }
    }
}

/// The mode bits that make a file run as its owner or group: outside the jail, for every host
/// user, with no `no_new_privs` (a setuid-root copy of an interpreter in `/tmp`).
pub(crate) const SET_ID: u32 = libc::S_ISUID | libc::S_ISGID;

/// `open_tree_attr` (Linux 6.15: `open_tree` that also sets the new tree's attributes); not in
/// the libc crate yet, the same number on every architecture.
const SYS_OPEN_TREE_ATTR: c_long = 467;

/// Administrator-only or non-namespaced kernel interfaces both jails refuse with `EPERM`.
const KERNEL_ADMIN: &[c_long] = &[
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_open_by_handle_at,
    libc::SYS_quotactl,
    libc::SYS_vhangup,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    SYS_OPEN_TREE_ATTR,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// A compiled filter, ready for [`crate::sys::seccomp_install`].
#[derive(Debug, Clone)]
pub(crate) struct Program(Vec<sock_filter>);

impl Program {
    /// The instructions.
    #[cfg(test)]
    pub(crate) fn insns(&self) -> &[sock_filter] {
        &self.0
    }

    /// The form `seccomp(2)` takes; borrows the program, which must outlive it.
    pub(crate) fn fprog(&self) -> sock_fprog {
        sock_fprog {
            len: u16::try_from(self.0.len()).expect("filter program is short"),
            filter: self.0.as_ptr().cast_mut(),
        }
    }
}

#[cfg(test)]
mod tests;
