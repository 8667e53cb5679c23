//! Which host files the target may change when it would be uid 0 for them.
//!
//! Started by root, the target of either jail is uid 0 for the host's files (nsjail maps the
//! caller's uid to itself; landjail keeps it): without a capability it still passes every
//! owner check, so it could write `/etc/cron.d`, `/etc/ld.so.preload` or a systemd unit and
//! have code run as root outside the jail. So the host's filesystem is read-only to such a
//! target except a short list (the same shape as Codex's `workspace-write` sandbox): the
//! working directory, `$HOME` (unless it is `/`), `$TMPDIR`, `/tmp`, `/var/tmp`, `/dev/shm`
//! and the caller's `writable_paths`. nsjail enforces the list with read-only mounts
//! (`nsjail::mounts`), landjail with Landlock (`landjail::landlock_rules`).
//!
//! An unprivileged caller's target is limited by its own uid, so nothing changes for it;
//! `root_filesystem_writable` turns the limit off for root too (boundary warns).

use std::path::{Path, PathBuf};

use crate::{JailError, JailSpec};

/// Directories a working directory may not be, nor lie beneath: writing there changes what
/// the host runs as root (programs, libraries, configuration, cron and systemd, boot files).
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/run",
    "/var/spool",
];

/// Directories a working directory may not be (beneath them is fine): they hold every user's
/// or every service's files.
const SHARED_DIRS: &[&str] = &["/", "/home", "/var", "/opt", "/srv", "/mnt", "/media"];

/// The paths that stay writable to the target, or `None` when the whole host filesystem does
/// (unprivileged caller, or the caller turned the limit off). Paths are canonical and exist.
pub(crate) fn plan(spec: &JailSpec) -> Result<Option<Vec<PathBuf>>, JailError> {
    if !nix::unistd::geteuid().is_root() || spec.root_filesystem_writable {
        return Ok(None);
    }
    let cwd = std::env::current_dir().map_err(|e| {
        JailError::io(
            "reading the working directory for the jail's writable paths",
            e,
        )
    })?;
    let cwd = canonical(&cwd)?.ok_or_else(|| {
        JailError::Setup(format!(
            "the working directory {} no longer exists",
            cwd.display()
        ))
    })?;
    check_workdir(&cwd)?;
    let mut out = vec![cwd];
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let tmpdir = std::env::var_os("TMPDIR").map(PathBuf::from);
    for p in home.into_iter().chain(tmpdir) {
        if p.is_absolute() && p != Path::new("/") {
            out.extend(canonical(&p)?);
        }
    }
    for p in ["/tmp", "/var/tmp", "/dev/shm"] {
        out.extend(canonical(Path::new(p))?);
    }
    for p in &spec.writable_paths {
        out.push(extra(p)?);
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

/// A path resolved through symlinks; `None` when it does not exist.
fn canonical(p: &Path) -> Result<Option<PathBuf>, JailError> {
    match std::fs::canonicalize(p) {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JailError::io(format!("resolving {}", p.display()), e)),
    }
}

/// A `writable_paths` entry: it must exist and must not be `/` (that is the opt-out).
fn extra(p: &Path) -> Result<PathBuf, JailError> {
    let c = canonical(p)?.ok_or_else(|| {
        JailError::Setup(format!(
            "the writable path {} does not exist: create it, or remove it from writable_paths \
             (--writable-path)",
            p.display()
        ))
    })?;
    if c == Path::new("/") {
        return Err(JailError::Setup(format!(
            "the writable path {} is the root directory: to give the jail every host file set \
             root_filesystem: writable (--root-filesystem writable) instead",
            p.display()
        )));
    }
    Ok(c)
}

/// Refuses a working directory whose writing would let the target change the host's system.
fn check_workdir(cwd: &Path) -> Result<(), JailError> {
    let system = SYSTEM_DIRS.iter().find(|d| cwd.starts_with(d));
    let shared = SHARED_DIRS.iter().find(|d| cwd == Path::new(d));
    match system.or(shared) {
        None => Ok(()),
        Some(_) => Err(JailError::Setup(format!(
            "the working directory {} is a system directory, and boundary started by root keeps \
             the jail's writes to the working directory, $HOME and /tmp: run boundary from a \
             project directory, or give the jail every host file with root_filesystem: \
             writable (--root-filesystem writable), or run boundary as an unprivileged user",
            cwd.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_are_refused_as_working_directory() {
        for d in [
            "/",
            "/etc",
            "/etc/cron.d",
            "/usr/local/bin",
            "/var/lib/x",
            "/home",
            "/run",
        ] {
            let e = check_workdir(Path::new(d)).unwrap_err().to_string();
            assert!(e.contains("root_filesystem: writable"), "{d}: {e}");
        }
        for d in [
            "/home/me/src",
            "/root",
            "/tmp/x",
            "/opt/app",
            "/var/tmp/y",
            "/srv/git",
        ] {
            assert!(check_workdir(Path::new(d)).is_ok(), "{d}");
        }
    }

    #[test]
    fn a_root_writable_path_points_to_the_opt_out() {
        let e = extra(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("root_filesystem: writable"), "{e}");
        let e = extra(Path::new("/does/not/exist")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
