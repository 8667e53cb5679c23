//! Changes of file metadata (landjail): mode, owner, times and extended attributes (POSIX ACLs
//! included), which Landlock does not control. Without this, a target started by root (uid 0
//! without capabilities, still the owner of almost every system file) could `chmod u+s` an
//! interpreter, `chmod 666 /etc/shadow`, `setfacl` a system file or reset its times, and an
//! unprivileged target could do the same to its own files beneath `/proc` and `/sys`.
//!
//! So the filter sends every such call here (`chmod`, `fchmod`, `fchmodat`, `fchmodat2`,
//! `chown`, `fchown`, `lchown`, `fchownat`, `utime`, `utimes`, `futimesat`, `utimensat`,
//! `setxattr`, `lsetxattr`, `fsetxattr`, `removexattr`, `lremovexattr`, `fremovexattr`, and
//! `ioctl(FS_IOC_SETFLAGS)`, which `chattr` uses), refuses the newer `setxattrat`,
//! `removexattrat` and `file_setattr` with `ENOSYS` (libc and tools fall back to the older
//! calls), and refuses the `ioctl`s that change other attributes for good with `EPERM`
//! ([`REFUSED_IOCTLS`]). The supervisor copies the path, name, value or times
//! out of the caller, resolves the path as the caller would (its root, working directory or
//! directory descriptor, taken with `pidfd_getfd`) into an `O_PATH` descriptor of its own, or
//! takes the caller's descriptor for the `f*` calls, and decides on that descriptor: the file
//! it names now (`/proc/self/fd/<n>`, confirmed by `(st_dev, st_ino)`) must lie beneath one of
//! the [`WritableRoots`], the same paths Landlock lets the target write (started by root: the
//! writable list of `crate::writable`; otherwise every top-level directory but `/proc` and
//! `/sys`). Sockets and pipes (their own inodes, no host file) pass; other objects without a
//! path (anonymous inodes, memfds) are refused. A refusal is `EPERM`.
//!
//! Setuid and setgid bits are refused everywhere (`EPERM`, also in the working directory; a
//! setgid directory is fine): the jail runs with `no_new_privs`, so they serve only outside it,
//! where a root-started target's setuid copy of an interpreter in `/tmp` would make every host
//! user root. Files are not created with them either (see [`Filter::no_set_id_files`]).
//!
//! The change is then made here, on that descriptor, never by letting the kernel continue the
//! call (another thread could swap the path or the descriptor after the check). The supervisor
//! thread runs without effective capabilities and with the target's uid, gids and groups, so
//! the kernel's own owner and permission checks are the target's: no change the target could
//! not make itself gets through. Whether a file is beneath a writable path cannot be changed
//! by the target, since Landlock refuses to move or link a file across that border; a hard
//! link that already exists in a writable directory to a file outside does count as inside.
//! A path through the caller's own `/proc/self/fd/<n>` (or `/dev/fd/<n>`) names its
//! descriptor `n`, which is taken and checked like the `f*` calls'; other magic links fail
//! with `ELOOP`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_long;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use tracing::{info, warn};

use super::target::{open_in_target_at, read_cstr, read_mem, thread_pidfd};
use super::{errno, id_valid};
use crate::seccomp::{Action, Cond, Filter};

/// Where the target may change metadata: beneath these canonical paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct WritableRoots(Vec<PathBuf>);

impl WritableRoots {
    /// The roots (canonical, existing paths).
    pub(crate) fn new(roots: Vec<PathBuf>) -> Self {
        WritableRoots(roots)
    }

    /// Whether `p` is one of the roots or lies beneath one (by whole components).
    fn covers(&self, p: &Path) -> bool {
        self.0.iter().any(|r| p.starts_with(r))
    }
}

// Not in the libc crate yet; the numbers are the same on every architecture.
pub(crate) const SYS_SETXATTRAT: c_long = 463;
const SYS_REMOVEXATTRAT: c_long = 466;
const SYS_FILE_SETATTR: c_long = 469;

const PATH_MAX: usize = 4096;
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 65536;

/// The calls decided here.
const CALLS: &[c_long] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utime,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utimes,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_futimesat,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
];

/// `ioctl`s that set inode flags (`chattr`: noatime, nodump, sync, ...; the owner may set all
/// but immutable and append-only): decided here like the calls above.
const SET_FLAGS: [u32; 2] = [0x4008_6602, 0x4004_6602]; // FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS

/// `ioctl`s that change a file's attributes for good and that no everyday tool needs, refused
/// with `EPERM` on every file: `FS_IOC_FSSETXATTR` (project id, extent size, flags),
/// `FS_IOC_SETVERSION` (both sizes), `FS_IOC_ENABLE_VERITY` (makes a file read-only forever)
/// and `FS_IOC_SET_ENCRYPTION_POLICY` (on an empty directory).
const REFUSED_IOCTLS: [u32; 5] = [
    0x401c_5820,
    0x4008_7602,
    0x4004_7602,
    0x4080_6685,
    0x800c_6613,
];

/// Adds the rules: every metadata call to the supervisor, the newest ones refused (no setuid
/// or setgid files are created: [`Filter::common`]).
pub(crate) fn add_rules(f: &mut Filter) {
    for n in CALLS {
        f.notify(*n);
    }
    for n in [SYS_SETXATTRAT, SYS_REMOVEXATTRAT, SYS_FILE_SETATTR] {
        f.set(n, Action::Errno(libc::ENOSYS));
    }
    let refused = Cond::In(1, REFUSED_IOCTLS.to_vec());
    f.when(libc::SYS_ioctl, vec![refused], Action::Errno(libc::EPERM));
    let set_flags = Cond::In(1, SET_FLAGS.to_vec());
    f.when(libc::SYS_ioctl, vec![set_flags], Action::Notify);
}

/// Whether syscall `nr` is decided here (an `ioctl` is sent only for [`SET_FLAGS`]).
pub(super) fn handles(nr: i64) -> bool {
    CALLS.contains(&nr) || nr == libc::SYS_ioctl
}

/// What the call changes.
enum Change {
    Mode(u32),
    Owner(Option<Uid>, Option<Gid>),
    Times(Timestamps),
    SetXattr {
        name: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
    },
    RemoveXattr(Vec<u8>),
    /// Inode flags (`FS_IOC_SETFLAGS`).
    Flags(u32),
}

/// Which file: the caller's descriptor (the `f*` calls), or a path from a directory.
enum Object {
    Fd(i32),
    At {
        dirfd: i32,
        path: Vec<u8>,
        nofollow: bool,
        empty: bool,
    },
}

/// Checks and carries out one metadata call; `None` when the caller is no longer waiting.
pub(super) fn check_change(
    req: &libc::seccomp_notif,
    roots: &WritableRoots,
    notify: i32,
) -> Option<Result<i64, i32>> {
    let tid = req.pid;
    let pidfd = match thread_pidfd(tid) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(errno(&e))),
    };
    let decoded = decode(tid, i64::from(req.data.nr), req.data.args);
    // The thread is still in this syscall: the pidfd and the bytes read are its own.
    if !id_valid(req.id, notify) {
        return None;
    }
    let (object, change) = match decoded {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let (fd, via_fd) = match object {
        Object::Fd(n) => match crate::sys::pidfd_getfd(&pidfd, n) {
            Ok(fd) => (fd, true),
            Err(e) => return Some(Err(errno(&e))),
        },
        Object::At {
            dirfd,
            path,
            nofollow,
            empty,
        } => match resolve(tid, &pidfd, dirfd, &path, nofollow, empty) {
            Ok(fd) => (fd, false),
            Err(e) => return Some(Err(e)),
        },
    };
    if let Err(e) = check(&fd, roots, tid) {
        return Some(Err(e));
    }
    Some(apply(&fd, via_fd, &change).map(|()| 0))
}

/// An `int` argument, as the kernel reads it.
fn int(a: u64) -> i32 {
    a as u32 as i32
}

/// Reads the call's arguments out of the caller.
fn decode(tid: u32, nr: i64, a: [u64; 6]) -> Result<(Object, Change), i32> {
    let cwd = libc::AT_FDCWD;
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u32;
    let at = |dirfd: i32, p: u64, flags: u32| -> Result<Object, i32> {
        Ok(Object::At {
            dirfd,
            path: read_cstr(tid, p, PATH_MAX)?,
            nofollow: flags & nofollow != 0,
            empty: flags & libc::AT_EMPTY_PATH as u32 != 0,
        })
    };
    let flags = |f: u64| -> Result<u32, i32> {
        let f = f as u32;
        let known = nofollow | libc::AT_EMPTY_PATH as u32;
        if f & !known != 0 {
            Err(libc::EINVAL)
        } else {
            Ok(f)
        }
    };
    let owner = |u: u64, g: u64| {
        let (u, g) = (u as u32, g as u32);
        let u = (u != u32::MAX).then(|| Uid::from_raw(u));
        let g = (g != u32::MAX).then(|| Gid::from_raw(g));
        Change::Owner(u, g)
    };
    let mode = |m: u64| Change::Mode(m as u32);
    Ok(match nr {
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod => (at(cwd, a[0], 0)?, mode(a[1])),
        libc::SYS_fchmod => (Object::Fd(int(a[0])), mode(a[1])),
        libc::SYS_fchmodat => (at(int(a[0]), a[1], 0)?, mode(a[2])),
        libc::SYS_fchmodat2 => {
            let f = flags(a[3])?;
            (at(int(a[0]), a[1], f)?, mode(a[2]))
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown => (at(cwd, a[0], 0)?, owner(a[1], a[2])),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lchown => (at(cwd, a[0], nofollow)?, owner(a[1], a[2])),
        libc::SYS_fchown => (Object::Fd(int(a[0])), owner(a[1], a[2])),
        libc::SYS_fchownat => {
            let f = flags(a[4])?;
            (at(int(a[0]), a[1], f)?, owner(a[2], a[3]))
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_utime => (at(cwd, a[0], 0)?, times_utimbuf(tid, a[1])?),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_utimes => (at(cwd, a[0], 0)?, times_timeval(tid, a[1])?),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_futimesat => (at(int(a[0]), a[1], 0)?, times_timeval(tid, a[2])?),
        libc::SYS_utimensat => {
            let f = flags(a[3])?;
            let times = times_timespec(tid, a[2])?;
            if a[1] != 0 {
                (at(int(a[0]), a[1], f)?, times)
            } else if int(a[0]) == cwd {
                return Err(libc::EFAULT);
            } else if f != 0 {
                return Err(libc::EINVAL);
            } else {
                (Object::Fd(int(a[0])), times)
            }
        }
        libc::SYS_setxattr => (at(cwd, a[0], 0)?, set_xattr(tid, a)?),
        libc::SYS_lsetxattr => (at(cwd, a[0], nofollow)?, set_xattr(tid, a)?),
        libc::SYS_fsetxattr => (Object::Fd(int(a[0])), set_xattr(tid, a)?),
        libc::SYS_removexattr => (at(cwd, a[0], 0)?, remove_xattr(tid, a[1])?),
        libc::SYS_lremovexattr => (at(cwd, a[0], nofollow)?, remove_xattr(tid, a[1])?),
        libc::SYS_fremovexattr => (Object::Fd(int(a[0])), remove_xattr(tid, a[1])?),
        libc::SYS_ioctl if SET_FLAGS.contains(&(a[1] as u32)) => {
            // The kernel reads an int, whatever the command's declared size.
            let v = read_mem(tid, a[2], 4)?;
            let flags = u32::from_ne_bytes(v.try_into().expect("4 bytes"));
            (Object::Fd(int(a[0])), Change::Flags(flags))
        }
        _ => return Err(libc::ENOSYS),
    })
}

/// Two `i64` pairs at `addr` (`timespec[2]`, `timeval[2]`, or `utimbuf` read as one pair).
fn read_pairs(tid: u32, addr: u64, n: usize) -> Result<Vec<i64>, i32> {
    let bytes = read_mem(tid, addr, 8 * n)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn now() -> Change {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    Change::Times(Timestamps {
        last_access: now,
        last_modification: now,
    })
}

fn times(v: &[i64]) -> Change {
    let ts = |s: i64, ns: i64| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    Change::Times(Timestamps {
        last_access: ts(v[0], v[1]),
        last_modification: ts(v[2], v[3]),
    })
}

/// `utimensat`'s `timespec[2]` (NULL: now; the kernel checks the nanoseconds).
fn times_timespec(tid: u32, addr: u64) -> Result<Change, i32> {
    if addr == 0 {
        return Ok(now());
    }
    Ok(times(&read_pairs(tid, addr, 4)?))
}

/// `utimes`' and `futimesat`'s `timeval[2]` (NULL: now).
#[cfg(target_arch = "x86_64")]
fn times_timeval(tid: u32, addr: u64) -> Result<Change, i32> {
    if addr == 0 {
        return Ok(now());
    }
    let v = read_pairs(tid, addr, 4)?;
    if [v[1], v[3]].iter().any(|us| !(0..1_000_000).contains(us)) {
        return Err(libc::EINVAL);
    }
    Ok(times(&[v[0], v[1] * 1000, v[2], v[3] * 1000]))
}

/// `utime`'s `utimbuf` (NULL: now).
#[cfg(target_arch = "x86_64")]
fn times_utimbuf(tid: u32, addr: u64) -> Result<Change, i32> {
    if addr == 0 {
        return Ok(now());
    }
    let v = read_pairs(tid, addr, 2)?;
    Ok(times(&[v[0], 0, v[1], 0]))
}

fn xattr_name(tid: u32, addr: u64) -> Result<Vec<u8>, i32> {
    match read_cstr(tid, addr, XATTR_NAME_MAX) {
        Ok(n) if n.is_empty() => Err(libc::ERANGE),
        Err(libc::ENAMETOOLONG) => Err(libc::ERANGE),
        other => other,
    }
}

/// `setxattr(…, name, value, size, flags)`: arguments 1 to 4.
fn set_xattr(tid: u32, a: [u64; 6]) -> Result<Change, i32> {
    let name = xattr_name(tid, a[1])?;
    let size = a[3] as usize;
    if size > XATTR_SIZE_MAX {
        return Err(libc::E2BIG);
    }
    let value = if size == 0 {
        Vec::new()
    } else {
        read_mem(tid, a[2], size)?
    };
    Ok(Change::SetXattr {
        name,
        value,
        flags: int(a[4]) as u32,
    })
}

fn remove_xattr(tid: u32, addr: u64) -> Result<Change, i32> {
    Ok(Change::RemoveXattr(xattr_name(tid, addr)?))
}

/// The file a path call names, as an `O_PATH` descriptor of ours.
fn resolve(
    tid: u32,
    pidfd: &OwnedFd,
    dirfd: i32,
    path: &[u8],
    nofollow: bool,
    empty: bool,
) -> Result<OwnedFd, i32> {
    let dir = if dirfd != libc::AT_FDCWD && path.first() != Some(&b'/') {
        Some(crate::sys::pidfd_getfd(pidfd, dirfd).map_err(|e| errno(&e))?)
    } else {
        None
    };
    if path.is_empty() {
        if !empty {
            return Err(libc::ENOENT);
        }
        if let Some(d) = dir {
            return Ok(d);
        }
    }
    if let (Some(n), false) = (own_fd_link(tid, path), nofollow) {
        // glibc's fchmodat(AT_SYMLINK_NOFOLLOW) on kernels without fchmodat2, and others: the
        // caller's descriptor `n` (resolved here, the link would name our own).
        return crate::sys::pidfd_getfd(pidfd, n).map_err(|e| errno(&e));
    }
    let extra = if nofollow {
        OFlags::NOFOLLOW
    } else {
        OFlags::empty()
    };
    open_in_target_at(tid, dir.as_ref(), path, extra).map_err(|e| errno(&e))
}

/// The descriptor number of `/proc/self/fd/<n>`, `/proc/thread-self/fd/<n>`,
/// `/proc/<caller's pid or tid>/fd/<n>` and `/dev/fd/<n>`.
fn own_fd_link(tid: u32, path: &[u8]) -> Option<i32> {
    let s = std::str::from_utf8(path).ok()?;
    let n = match s.strip_prefix("/dev/fd/") {
        Some(n) => n,
        None => {
            let (who, rest) = s.strip_prefix("/proc/")?.split_once('/')?;
            let n = rest.strip_prefix("fd/")?;
            let own = who == "self"
                || who == "thread-self"
                || who == tid.to_string()
                || who.parse::<u32>().ok() == tgid(tid);
            own.then_some(n)?
        }
    };
    n.parse::<i32>().ok().filter(|n| *n >= 0)
}

fn tgid(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the file behind `fd` lies beneath a writable root (see the module documentation);
/// `EPERM` otherwise.
fn check(fd: &OwnedFd, roots: &WritableRoots, tid: u32) -> Result<(), i32> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let link = link.map_err(|_| libc::EPERM)?;
    let bytes = link.as_os_str().as_bytes();
    if bytes.starts_with(b"socket:[") || bytes.starts_with(b"pipe:[") {
        return Ok(());
    }
    let meta = rustix::fs::fstat(fd).map_err(|e| e.raw_os_error())?;
    let same = |p: &Path| {
        rustix::fs::statat(rustix::fs::CWD, p, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| (s.st_dev, s.st_ino) == (meta.st_dev, meta.st_ino))
    };
    let path = if link.is_absolute() && same(&link) {
        Some(link.clone())
    } else if meta.st_nlink == 0 {
        // Unlinked (or an O_TMPFILE): the kernel names the directory it was in.
        bytes
            .strip_suffix(b" (deleted)")
            .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
            .filter(|p| p.is_absolute())
    } else {
        None
    };
    match path {
        Some(p) if roots.covers(&p) => Ok(()),
        _ => {
            info!(
                path = %link.display(), tid,
                "landjail: refused a change of mode, owner, times or extended attributes outside \
                 the writable paths"
            );
            Err(libc::EPERM)
        }
    }
}

/// Makes the change on our descriptor: the caller's own (`via_fd`: the `f*` calls, with their
/// exact semantics) or the `O_PATH` one we resolved.
fn apply(fd: &OwnedFd, via_fd: bool, change: &Change) -> Result<(), i32> {
    use rustix::fs as f;
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let r = match change {
        Change::Mode(m)
            if m & crate::seccomp::SET_ID != 0 && !(m & libc::S_ISUID == 0 && is_dir(fd)) =>
        {
            warn!(
                mode = format!("{:o}", m & 0o7777),
                "landjail: refused a setuid or setgid bit: the file would run as its owner or \
                 group outside the jail"
            );
            Err(rustix::io::Errno::PERM)
        }
        Change::Mode(m) => {
            let mode = Mode::from_raw_mode(m & 0o7777);
            if via_fd {
                f::fchmod(fd, mode)
            } else if f::fstat(fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFLNK) {
                // What fchmodat2(AT_SYMLINK_NOFOLLOW) says of a symbolic link.
                Err(rustix::io::Errno::OPNOTSUPP)
            } else {
                f::chmod(&proc, mode)
            }
        }
        Change::Owner(u, g) if via_fd => f::fchown(fd, *u, *g),
        Change::Owner(u, g) => f::chownat(fd, "", *u, *g, AtFlags::EMPTY_PATH),
        Change::Times(t) if via_fd => f::futimens(fd, t),
        Change::Times(t) => f::utimensat(fd, "", t, AtFlags::EMPTY_PATH),
        Change::SetXattr { name, value, flags } => {
            let name = std::ffi::OsStr::from_bytes(name);
            let flags = XattrFlags::from_bits_retain(*flags);
            if via_fd {
                f::fsetxattr(fd, name, value, flags)
            } else {
                // Through the magic link: the file itself (a symbolic link is not followed).
                f::setxattr(&proc, name, value, flags)
            }
        }
        Change::RemoveXattr(name) => {
            let name = std::ffi::OsStr::from_bytes(name);
            if via_fd {
                f::fremovexattr(fd, name)
            } else {
                f::removexattr(&proc, name)
            }
        }
        Change::Flags(v) => f::ioctl_setflags(fd, f::IFlags::from_bits_retain(*v)),
    };
    r.map_err(|e| e.raw_os_error())
}

fn is_dir(fd: &OwnedFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{eval, AUDIT_ARCH};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_metadata_call_goes_to_the_supervisor() {
        // The set-id creation rules come with the rules both jails share.
        let mut f = Filter::common();
        add_rules(&mut f);
        let prog = f.program();
        for n in CALLS {
            assert_eq!(eval(prog.insns(), AUDIT_ARCH, *n, [0; 6]), 0x7fc0_0000);
            assert!(handles(*n));
        }
        for n in [SYS_SETXATTRAT, SYS_REMOVEXATTRAT, SYS_FILE_SETATTR] {
            let enosys = Action::Errno(libc::ENOSYS).ret();
            assert_eq!(eval(prog.insns(), AUDIT_ARCH, n, [0; 6]), enosys);
        }
        assert!(!handles(libc::SYS_read));
        let sys = |nr: c_long, args: [u64; 6]| eval(prog.insns(), AUDIT_ARCH, nr, args);
        let eperm = Action::Errno(libc::EPERM).ret();
        let creat = (libc::O_CREAT | libc::O_WRONLY) as u64;
        assert_eq!(sys(libc::SYS_openat, [3, 0, creat, 0o4755, 0, 0]), eperm);
        assert_eq!(sys(libc::SYS_openat, [3, 0, creat, 0o2755, 0, 0]), eperm);
        assert_eq!(
            sys(libc::SYS_openat, [3, 0, creat, 0o755, 0, 0]),
            0x7fff_0000
        );
        let tmpfile = (libc::O_TMPFILE | libc::O_RDWR) as u64;
        assert_eq!(sys(libc::SYS_openat, [3, 0, tmpfile, 0o4700, 0, 0]), eperm);
        // Without O_CREAT the mode register is whatever was there.
        let plain = libc::O_RDONLY as u64;
        assert_eq!(
            sys(libc::SYS_openat, [3, 0, plain, 0o7777, 0, 0]),
            0x7fff_0000
        );
        let dir = libc::O_DIRECTORY as u64;
        assert_eq!(
            sys(libc::SYS_openat, [3, 0, dir, 0o7777, 0, 0]),
            0x7fff_0000
        );
        let reg = (libc::S_IFREG | 0o4755) as u64;
        assert_eq!(sys(libc::SYS_mknodat, [3, 0, reg, 0, 0, 0]), eperm);
        let fifo = (libc::S_IFIFO | 0o644) as u64;
        assert_eq!(sys(libc::SYS_mknodat, [3, 0, fifo, 0, 0, 0]), 0x7fff_0000);
        let enosys = Action::Errno(libc::ENOSYS).ret();
        assert_eq!(sys(libc::SYS_openat2, [3, 0, 0, 24, 0, 0]), enosys);
        let ioctl = |cmd: u32| {
            eval(
                prog.insns(),
                AUDIT_ARCH,
                libc::SYS_ioctl,
                [3, cmd as u64, 0, 0, 0, 0],
            )
        };
        for cmd in SET_FLAGS {
            assert_eq!(ioctl(cmd), 0x7fc0_0000);
        }
        for cmd in REFUSED_IOCTLS {
            assert_eq!(ioctl(cmd), Action::Errno(libc::EPERM).ret());
        }
        assert_eq!(ioctl(libc::FIONREAD as u32), 0x7fff_0000);
        // FS_IOC_GETFLAGS reads.
        assert_eq!(ioctl(0x8008_6601), 0x7fff_0000);
    }

    #[test]
    fn roots_cover_whole_components() {
        let r = WritableRoots::new(vec![PathBuf::from("/tmp"), PathBuf::from("/home/me")]);
        assert!(r.covers(Path::new("/tmp")));
        assert!(r.covers(Path::new("/tmp/a/b")));
        assert!(r.covers(Path::new("/home/me/.bashrc")));
        assert!(!r.covers(Path::new("/tmpx/a")));
        assert!(!r.covers(Path::new("/home/meme")));
        assert!(!r.covers(Path::new("/etc/shadow")));
        assert!(!r.covers(Path::new("/")));
    }

    fn o_path(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn the_check_is_on_the_file_the_descriptor_names() {
        let inside = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = WritableRoots::new(vec![inside.path().canonicalize().unwrap()]);
        let a = inside.path().join("a");
        let b = outside.path().join("b");
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "x").unwrap();
        assert_eq!(check(&o_path(&a), &roots, 0), Ok(()));
        assert_eq!(check(&o_path(&b), &roots, 0), Err(libc::EPERM));
        // Moved out after it was opened: the file's place now counts.
        let fd = o_path(&a);
        std::fs::rename(&a, outside.path().join("a")).unwrap();
        assert_eq!(check(&fd, &roots, 0), Err(libc::EPERM));
        // Unlinked: where it was.
        let c = inside.path().join("c");
        std::fs::write(&c, "x").unwrap();
        let fd = o_path(&c);
        std::fs::remove_file(&c).unwrap();
        assert_eq!(check(&fd, &roots, 0), Ok(()));
        let fd = o_path(&b);
        std::fs::remove_file(&b).unwrap();
        assert_eq!(check(&fd, &roots, 0), Err(libc::EPERM));
        // A pipe is its own inode.
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(check(&r, &roots, 0), Ok(()));
    }

    #[test]
    fn changes_apply_to_the_descriptor() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "x").unwrap();
        let fd = o_path(&p);
        apply(&fd, false, &Change::Mode(0o100_751)).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o751);
        apply(&fd, false, &times(&[5, 0, 7, 0])).unwrap();
        let m = rustix::fs::stat(&p).unwrap();
        assert_eq!((m.st_atime, m.st_mtime), (5, 7));
        // An O_PATH descriptor given to fchmod fails as the kernel would fail the caller.
        assert_eq!(apply(&fd, true, &Change::Mode(0o644)), Err(libc::EBADF));
        // Setuid and setgid bits are refused, a setgid directory is not.
        for m in [0o4755, 0o2755, 0o6755] {
            assert_eq!(apply(&fd, false, &Change::Mode(m)), Err(libc::EPERM));
        }
        let dfd = o_path(d.path());
        apply(&dfd, false, &Change::Mode(0o2775)).unwrap();
        assert_eq!(apply(&dfd, false, &Change::Mode(0o4775)), Err(libc::EPERM));
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let lfd = rustix::fs::open(
            &link,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            apply(&lfd, false, &Change::Mode(0o600)),
            Err(libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn the_callers_own_descriptor_links_are_recognised() {
        let me = std::process::id();
        assert_eq!(own_fd_link(me, b"/proc/self/fd/3"), Some(3));
        assert_eq!(own_fd_link(me, b"/proc/thread-self/fd/12"), Some(12));
        assert_eq!(
            own_fd_link(me, format!("/proc/{me}/fd/4").as_bytes()),
            Some(4)
        );
        assert_eq!(own_fd_link(me, b"/dev/fd/0"), Some(0));
        assert_eq!(own_fd_link(me, b"/proc/1/fd/3"), None);
        assert_eq!(own_fd_link(me, b"/proc/self/fd/3/x"), None);
        assert_eq!(own_fd_link(me, b"/proc/self/fdinfo/3"), None);
        assert_eq!(own_fd_link(me, b"/etc/passwd"), None);
    }

    #[test]
    fn strings_are_read_up_to_their_nul() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        let s = b"/some/path\0rest";
        assert_eq!(
            read_cstr(tid, s.as_ptr() as u64, PATH_MAX),
            Ok(b"/some/path".to_vec())
        );
        assert_eq!(
            read_cstr(tid, s.as_ptr() as u64, 4),
            Err(libc::ENAMETOOLONG)
        );
        assert_eq!(read_cstr(tid, 0, PATH_MAX), Err(libc::EFAULT));
    }
}
