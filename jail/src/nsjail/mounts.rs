//! The jail's view of the kernel's filesystems, built by init before it drops privileges.
//!
//! The jailed uid may be kuid 0 (boundary started by root) without any capability, and sysctl,
//! sysfs, cgroupfs and device files are checked against the file's mode and owner, not against
//! capabilities. So, like container runtimes (runc's default masked and read-only paths):
//! - a fresh `/proc` for the PID namespace, with `/proc/sys`, `/proc/sysrq-trigger`,
//!   `/proc/irq`, `/proc/bus`, `/proc/fs` bound read-only and the kernel's private files
//!   (`/proc/kcore`, `/proc/keys`, `/proc/timer_list`, …) masked;
//! - a fresh read-only sysfs for the jail's network namespace (no debugfs, tracefs, securityfs
//!   or cgroup submounts), or, where the kernel refuses one, the host's `/sys` made read-only
//!   recursively with those submounts masked; `/sys/firmware` and powercap masked; the cgroup
//!   hierarchy is read-only either way;
//! - a minimal `/dev` (null, zero, full, random, urandom, tty, a devpts instance of its own
//!   with `ptmx`, a private `/dev/shm`), so block devices, `/dev/kmsg`, virtual consoles,
//!   `/dev/loop*`, `/dev/kvm` and the like are not reachable;
//! - paths to hide (the CA key, the agent's socket) covered, and boundary's own files (config
//!   directory, logs) bound read-only.
//!
//! The target cannot undo any of this: it has no capabilities in the mount namespace, and a
//! nested user namespace it creates gets these mounts locked by the kernel (no unmount, no
//! remount read-write, no non-recursive bind that would reveal what a mask covers, no fresh
//! `/proc` or sysfs while a mask is present).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

/// Parts of `/proc` that change the host kernel when written (runc's read-only paths).
const READONLY_PROC: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// Files and directories that leak or touch kernel internals (runc's masked paths and more).
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/kmsg",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/config.gz",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/kernel/debug",
    "/sys/kernel/tracing",
    "/sys/kernel/security",
    "/sys/fs/bpf",
];

/// Device nodes the jail keeps (bound from the host's `/dev`).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Builds the whole view; `hide` paths are covered, `readonly` paths bound read-only.
pub fn build(hide: &[PathBuf], readonly: &[PathBuf]) -> Result<(), String> {
    // Paths to hide and protect are resolved now, while the host's /dev and /proc are intact.
    // A hidden path's parents are pinned too: the audit spool's parents sit in the jail's
    // writable `$HOME` (`~/.local/state`), and renamed away they would let the jail put a spool
    // of its own where boundary looks (forged records delivered as boundary's).
    let pinned: Vec<PathBuf> = readonly.iter().chain(hide).cloned().collect();
    pin_parents(&pinned)?;
    for path in readonly {
        bind_readonly(path)?;
    }
    for path in hide {
        self::hide(path)?;
    }
    kernel_files()?;
    minimal_dev()
}

fn kernel_files() -> Result<(), String> {
    for p in READONLY_PROC {
        bind_readonly(Path::new(p))?;
    }
    fresh_sysfs()?;
    for p in MASKED {
        mask(Path::new(p))?;
    }
    Ok(())
}

/// A fresh read-only sysfs (belongs to the jail's network namespace); if the kernel refuses
/// it, the host's `/sys` with every submount remounted read-only.
fn fresh_sysfs() -> Result<(), String> {
    let fresh = mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    );
    if fresh.is_ok() {
        return Ok(());
    }
    // Container runtimes mask parts of /sys, which makes the kernel refuse a fresh sysfs.
    bind_readonly(Path::new("/sys"))
}

/// The visible mount at `top` and every mount below it, from `/proc/self/mountinfo` (by mount
/// and parent ids, so mounts hidden under a later mount on the same path are left out).
fn mount_tree(top: &Path) -> Result<Vec<PathBuf>, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mounts: Vec<(&str, &str, PathBuf)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((
                f.next()?,
                f.next()?,
                PathBuf::from(unescape_mountinfo(f.nth(2)?)),
            ))
        })
        .collect();
    let Some(root) = mounts.iter().rev().find(|m| m.2 == top) else {
        return Err(format!("{} is not a mount point", top.display()));
    };
    let mut ids = vec![root.0];
    let mut out = vec![root.2.clone()];
    let mut i = 0;
    while i < ids.len() {
        let parent = ids[i];
        for m in mounts.iter().filter(|m| m.1 == parent) {
            ids.push(m.0);
            out.push(m.2.clone());
        }
        i += 1;
    }
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes every parent directory of `paths` (up to, not including, `/`) a mount point of its
/// own, so the jail cannot rename one away and put a forged tree in its place (rename and
/// rmdir of a mount point fail with EBUSY).
fn pin_parents(paths: &[PathBuf]) -> Result<(), String> {
    let mut parents: Vec<PathBuf> = Vec::new();
    for p in paths {
        let Ok(real) = fs::canonicalize(p) else {
            continue;
        };
        for a in real.ancestors().skip(1) {
            if a != Path::new("/") && !parents.iter().any(|x| x == a) {
                parents.push(a.to_path_buf());
            }
        }
    }
    // Outermost first, so an inner pin is not buried under a later bind of its parent.
    parents.sort_by_key(|p| p.components().count());
    for p in parents {
        mount(
            Some(&p),
            &p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("cannot pin {} in the jail: {e}", p.display()))?;
    }
    Ok(())
}

/// Binds `path` onto itself (recursively) and makes every mount there read-only. A path that
/// does not exist needs nothing.
pub fn bind_readonly(path: &Path) -> Result<(), String> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let real = fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {} to protect it: {e}", path.display()))?;
    mount(
        Some(&real),
        &real,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot bind {} read-only in the jail: {e}", real.display()))?;
    // One call for the whole tree (mount_setattr, Linux 5.12). Where the kernel or a seccomp
    // profile refuses it, each mount in turn, which fails loudly if it cannot.
    if crate::sys::mount_tree_readonly(&real).is_err() {
        for p in mount_tree(&real)? {
            remount_readonly(&p)?;
        }
    }
    Ok(())
}

/// Remounts one mount read-only, keeping the flags the kernel locks (nosuid, nodev, …).
fn remount_readonly(path: &Path) -> Result<(), String> {
    let have = statvfs(path)
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
        .flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("cannot make {} read-only in the jail: {e}", path.display()))
}

/// Covers `path` so that nothing of it can be read or written: an empty read-only tmpfs over a
/// directory, `/dev/null` over anything else. A path that does not exist needs nothing.
fn mask(path: &Path) -> Result<(), String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {} to mask it: {e}", path.display())),
    };
    let r = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
            Some("size=4k,mode=000"),
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.map_err(|e| format!("cannot mask {} in the jail: {e}", path.display()))
}

/// Hides `path` (resolved through symlinks, so the real file is covered).
pub fn hide(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {} to hide it: {e}", path.display())),
    }
    let real = fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {} to hide it: {e}", path.display()))?;
    mask(&real).map_err(|e| format!("cannot hide {} from the jail: {e}", real.display()))
}

/// Replaces `/dev` with a tmpfs holding only the harmless devices and the terminal.
fn minimal_dev() -> Result<(), String> {
    let keep = |name: &str| -> Result<Option<OwnedFd>, String> {
        match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(Path::new("/dev").join(name))
        {
            Ok(f) => Ok(Some(OwnedFd::from(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("opening /dev/{name} for the jail's /dev: {e}")),
        }
    };
    let nodes: Vec<(&str, Option<OwnedFd>)> = DEVICES
        .iter()
        .map(|n| keep(n).map(|fd| (*n, fd)))
        .collect::<Result<_, _>>()?;
    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=755"),
    )
    .map_err(|e| format!("mounting the jail's /dev: {e}"))?;
    let dev = Path::new("/dev");
    for (name, fd) in &nodes {
        let Some(fd) = fd else { continue };
        let target = dev.join(name);
        fs::write(&target, b"").map_err(|e| format!("creating {}: {e}", target.display()))?;
        bind_fd(fd, &target)?;
    }
    let mkdir = |p: &Path| {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(p)
            .map_err(|e| format!("creating {}: {e}", p.display()))
    };
    // A devpts instance of the jail's own (as container runtimes do): new ptys work (the
    // host's /dev/ptmx bound here cannot find its devpts), and the host's other terminals
    // (/dev/pts/N of the same user: their input could be read) are not reachable. The
    // terminal boundary runs on stays usable through the inherited descriptors and /dev/tty.
    mkdir(&dev.join("pts"))?;
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| format!("mounting the jail's /dev/pts: {e}"))?;
    symlink("pts/ptmx", dev.join("ptmx")).map_err(|e| format!("creating /dev/ptmx: {e}"))?;
    mkdir(&dev.join("shm"))?;
    mount(
        Some("tmpfs"),
        "/dev/shm",
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777"),
    )
    .map_err(|e| format!("mounting the jail's /dev/shm: {e}"))?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(|e| format!("creating /dev/{link}: {e}"))?;
    }
    mount(
        None::<&str>,
        "/dev",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("making the jail's /dev read-only: {e}"))
}

/// Binds what `fd` (an O_PATH descriptor) refers to onto `target`.
fn bind_fd(fd: &OwnedFd, target: &Path) -> Result<(), String> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding the host's device onto {}: {e}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trail\\04"), "/trail\\04");
    }
}
