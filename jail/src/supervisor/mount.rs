//! `mount` for the nested sandboxes of a jail started by root (nsjail, `--nested-sandboxes`).
//!
//! There the jailed command is uid 0 and keeps `CAP_SETFCAP`, so bubblewrap can map uid 0 into
//! a user namespace of its own, and every such namespace has the host's root as its root. A
//! mount there runs with that root's rights over the host's root-owned files, and one file
//! system turns this into root outside the jail: overlayfs copies a file up into its upper
//! directory inside the kernel, mode and file capabilities included, so an overlay with
//! `lowerdir=/usr/bin` and its upper directory in the working directory leaves a setuid-root
//! copy of `su` on the host (measured, see docs/jail-types.md). Seccomp cannot read the file
//! system type (it sits behind a pointer), and a check followed by letting the kernel continue
//! the call would read it twice: another thread can swap `tmpfs` for `overlay` in between.
//!
//! So every `mount` of such a jail comes here. The supervisor copies the arguments out of the
//! caller, decides on its copy, and makes the call itself from that copy (`sys::mount_as`: a
//! child that joins every namespace of the caller's (user, mount, PID, network, IPC, cgroup,
//! UTS, time), its root and working directory, with its groups and exactly its effective capabilities), so the kernel
//! never reads the caller's memory again. Decisions, on the call the kernel would make (the flags read as the kernel
//! reads them, [`Kind::of`]):
//! - a new mount (no remount, bind, move or propagation flag) only of the file systems in
//!   [`NEW_MOUNT_TYPES`], which keep their files in memory: what bubblewrap mounts fresh
//!   besides `proc`. overlay, FUSE, `proc`, `sysfs`, `cgroup2` and every other type fail with
//!   `EPERM` (and a log line naming the type);
//! - bind mounts, moves, propagation changes and remounts keep the kernel's own checks, made
//!   with the caller's rights: the jail's mounts are locked in every nested namespace (no
//!   unmount, no `MS_RDONLY` or `MS_NOSUID` cleared), and a bind mount changes no file.
//!
//! The new mount API (`fsopen`, `fsmount`, `open_tree`, `move_mount`, ...) stays refused by the
//! shared rules, and so do extended-attribute writes for such a jail (`nsjail::filter`), so a
//! file capability cannot be written either way. A caller whose effective capabilities lack
//! `CAP_SYS_ADMIN` gets the kernel's own `EPERM` from the child: nothing is mounted with rights
//! the caller does not hold.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use libc::c_ulong;
use rustix::fs::{Mode, OFlags};
use tracing::{debug, warn};

use super::id_valid;
use super::target::read_cstr;
use crate::sys::{MountAs, MountAsError, MOUNT_NAMESPACES};

/// File systems a nested sandbox may mount fresh: those that keep their files in memory, owned
/// by whoever makes them, none of which copies a host file with its mode. Not `proc`, `sysfs`
/// or `cgroup2`: a fresh one shows host kernel settings whose files the host's root owns
/// (`/proc/sys/kernel/core_pattern`, the limits and freezer of the cgroup boundary runs in),
/// which a nested namespace's root here may write; the jail's own are masked and read-only.
/// (The kernel refuses a fresh `proc` or `sysfs` under the jail's masked ones anyway.)
pub(crate) const NEW_MOUNT_TYPES: &[&str] = &["tmpfs", "ramfs", "devpts", "mqueue"];

const PATH_MAX: usize = 4096;
const FSTYPE_MAX: usize = 255;
/// The kernel copies at most a page of options.
const DATA_MAX: usize = 4095;

/// What a `mount` call does, as the kernel decides it (`path_mount`, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `MS_REMOUNT` (with `MS_BIND`: only the mount's flags): uses the options, not the type.
    Remount,
    /// `MS_BIND`: a view of an existing directory or file.
    Bind,
    /// A propagation change (`MS_SHARED`, `MS_PRIVATE`, `MS_SLAVE`, `MS_UNBINDABLE`).
    Propagation,
    /// `MS_MOVE`.
    Move,
    /// A new mount of the named file system type.
    New,
}

impl Kind {
    /// The kind of a call with `flags`, and the flags the kernel goes on with (the pre-2.4
    /// magic number in the high half is dropped first, as the kernel does: its bits would
    /// otherwise read as propagation flags).
    pub(crate) fn of(flags: u64) -> (Kind, c_ulong) {
        const MGC_MSK: u64 = 0xffff_0000;
        const MGC_VAL: u64 = 0xc0ed_0000;
        let flags = if flags & MGC_MSK == MGC_VAL {
            flags & !MGC_MSK
        } else {
            flags
        } as c_ulong;
        let kind = if flags & libc::MS_REMOUNT != 0 {
            Kind::Remount
        } else if flags & libc::MS_BIND != 0 {
            Kind::Bind
        } else if flags
            & (libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE)
            != 0
        {
            Kind::Propagation
        } else if flags & libc::MS_MOVE != 0 {
            Kind::Move
        } else {
            Kind::New
        };
        (kind, flags)
    }
}

/// Whether a new mount of `fstype` is allowed.
pub(crate) fn type_allowed(fstype: &[u8]) -> bool {
    NEW_MOUNT_TYPES.iter().any(|t| t.as_bytes() == fstype)
}

/// A checked call, ready to make.
pub(super) struct Checked(MountAs);

impl Checked {
    /// Makes the call (in a forked child; it may block on a slow file system).
    pub(super) fn perform(self) -> Result<i64, i32> {
        match crate::sys::mount_as(&self.0) {
            Ok(()) => Ok(0),
            Err(MountAsError::Mount(e)) => Err(e),
            Err(MountAsError::Setup(step, e)) => {
                warn!(
                    step,
                    errno = e,
                    "jail supervisor: cannot make a nested sandbox's mount ({step}); refusing it"
                );
                Err(libc::EPERM)
            }
        }
    }
}

/// Checks one `mount` notification: `None` when the caller is gone, an errno to answer, or the
/// call to make.
pub(super) fn check(req: &libc::seccomp_notif, notify: i32) -> Option<Result<Checked, i32>> {
    let tid = req.pid;
    let a = req.data.args;
    let (kind, flags) = Kind::of(a[3]);
    let who = match Caller::read(tid) {
        Ok(w) => w,
        Err(e) => {
            debug!(
                tid,
                errno = e,
                "jail supervisor: cannot inspect a mount's caller"
            );
            return id_valid(req.id, notify).then_some(Err(e));
        }
    };
    let copy = |addr: u64, max: usize| -> Result<Option<CString>, i32> {
        if addr == 0 {
            return Ok(None);
        }
        let s = read_cstr(tid, addr, max)?;
        Ok(Some(
            CString::new(s).expect("read_cstr stops at the first NUL"),
        ))
    };
    let args = (|| {
        let target = copy(a[1], PATH_MAX)?.ok_or(libc::EFAULT)?;
        let source = match kind {
            Kind::Remount | Kind::Propagation => None,
            _ => copy(a[0], PATH_MAX)?,
        };
        let fstype = match kind {
            Kind::New => copy(a[2], FSTYPE_MAX)?,
            _ => None,
        };
        let data = match kind {
            Kind::New | Kind::Remount => copy(a[4], DATA_MAX)?,
            _ => None,
        };
        Ok((source, target, fstype, data))
    })();
    // Everything read above belongs to the thread that is still in this call.
    if !id_valid(req.id, notify) {
        return None;
    }
    let (source, target, fstype, data) = match args {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    if kind == Kind::New {
        let name = fstype.as_ref().map(|t| t.to_bytes()).unwrap_or_default();
        if !type_allowed(name) {
            warn!(
                fstype = %String::from_utf8_lossy(name),
                "jail supervisor: refused a nested sandbox's mount: in a jail started by root \
                 only {NEW_MOUNT_TYPES:?} may be mounted fresh (there a nested namespace's \
                 root is the host's root: an overlay copies setuid-root files onto the host, \
                 a fresh proc, sysfs or cgroup2 shows host settings it may write); start \
                 boundary as the workspace user for other file systems"
            );
            return Some(Err(libc::EPERM));
        }
    }
    Some(Ok(Checked(MountAs {
        namespaces: who.namespaces,
        root: who.root,
        cwd: who.cwd,
        groups: who.groups,
        caps: who.caps,
        source,
        target,
        fstype,
        flags,
        data,
    })))
}

/// The calling thread's namespaces, root, working directory, groups and capabilities, opened
/// and read before the notification is confirmed valid.
struct Caller {
    namespaces: [OwnedFd; MOUNT_NAMESPACES.len()],
    root: OwnedFd,
    cwd: OwnedFd,
    groups: Vec<libc::gid_t>,
    caps: [u32; 2],
}

impl Caller {
    fn read(tid: u32) -> Result<Caller, i32> {
        let open = |what: &str, flags: OFlags| -> Result<OwnedFd, i32> {
            rustix::fs::open(
                format!("/proc/{tid}/{what}").as_str(),
                flags | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| e.raw_os_error())
        };
        let status = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ESRCH))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .ok_or(libc::ESRCH)
        };
        let cap_eff = u64::from_str_radix(field("CapEff:")?, 16).map_err(|_| libc::ESRCH)?;
        // The supervisor's child keeps its own uid and gid (boundary's: root), so it acts for a
        // caller whose file-system ids are the same; a jail started by root maps only uid 0.
        let fs_id = |name: &str| -> Result<u32, i32> {
            field(name)?
                .split_whitespace()
                .nth(3)
                .and_then(|v| v.parse().ok())
                .ok_or(libc::ESRCH)
        };
        let (uid, gid) = (fs_id("Uid:")?, fs_id("Gid:")?);
        if uid != rustix::process::geteuid().as_raw() || gid != rustix::process::getegid().as_raw()
        {
            warn!(
                tid,
                uid,
                gid,
                "jail supervisor: refused a nested sandbox's mount by a caller whose file ids \
                 are not the jail's root"
            );
            return Err(libc::EPERM);
        }
        let groups = field("Groups:")?
            .split_whitespace()
            .map(|g| g.parse().map_err(|_| libc::ESRCH))
            .collect::<Result<Vec<_>, _>>()?;
        let mut namespaces = Vec::with_capacity(MOUNT_NAMESPACES.len());
        for (name, _) in MOUNT_NAMESPACES {
            namespaces.push(open(&format!("ns/{name}"), OFlags::RDONLY)?);
        }
        Ok(Caller {
            namespaces: namespaces.try_into().expect("one per namespace"),
            root: open("root", OFlags::PATH | OFlags::DIRECTORY)?,
            cwd: open("cwd", OFlags::PATH | OFlags::DIRECTORY)?,
            groups,
            caps: [cap_eff as u32, (cap_eff >> 32) as u32],
        })
    }
}

#[cfg(test)]
// `c_ulong` is `u64` only on 64-bit targets.
#[allow(clippy::unnecessary_cast)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_kernels_order() {
        let k = |f: c_ulong| Kind::of(f as u64).0;
        assert_eq!(k(0), Kind::New);
        assert_eq!(k(libc::MS_NOSUID | libc::MS_NODEV), Kind::New);
        assert_eq!(
            k(libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY),
            Kind::Remount
        );
        assert_eq!(k(libc::MS_BIND | libc::MS_REC), Kind::Bind);
        assert_eq!(k(libc::MS_PRIVATE | libc::MS_REC), Kind::Propagation);
        assert_eq!(k(libc::MS_SLAVE | libc::MS_BIND), Kind::Bind);
        assert_eq!(k(libc::MS_MOVE), Kind::Move);
        // The old magic number is dropped, as the kernel drops it: its bits include
        // MS_PRIVATE and MS_SLAVE, which would otherwise let a new mount pass as a
        // propagation change and skip the type check.
        let (kind, flags) = Kind::of(0xc0ed_0000 | libc::MS_NOSUID as u64);
        assert_eq!((kind, flags), (Kind::New, libc::MS_NOSUID));
    }

    #[test]
    fn only_memory_file_systems_are_mounted_fresh() {
        for t in ["tmpfs", "devpts", "mqueue", "ramfs"] {
            assert!(type_allowed(t.as_bytes()), "{t}");
        }
        // Copy-up, user-space file systems, and fresh views of host kernel settings.
        let refused = [
            "overlay",
            "fuse",
            "fuse.sshfs",
            "proc",
            "sysfs",
            "cgroup2",
            "cgroup",
            "binfmt_misc",
            "bpf",
            "ext4",
            "",
            "tmpfs\n",
        ];
        for t in refused {
            assert!(!type_allowed(t.as_bytes()), "{t}");
        }
    }
}
