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
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/log",
    "/var/mail",
    "/var/opt",
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
    for (name, p) in [("HOME", home), ("TMPDIR", tmpdir)] {
        let Some(p) = p.filter(|p| p.is_absolute() && p != Path::new("/")) else {
            continue;
        };
        if let Some(c) = canonical(&p)? {
            if is_system(&c) {
                return Err(JailError::Setup(format!(
                    "${name} is {} (resolved: {}), a system directory, and boundary started by \
                     root lets the jail write ${name}: set {name} to a directory of your own, \
                     or give the jail every host file with root_filesystem: writable",
                    p.display(),
                    c.display()
                )));
            }
            out.push(c);
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
    // Named as it is, a system directory is the caller's explicit choice; reached through a
    // symbolic link (which an earlier jail may have put in a writable path), it is not.
    if is_system(&c) && c != p {
        return Err(JailError::Setup(format!(
            "the writable path {} leads through a symbolic link to the system directory {} (an \
             earlier jail could have replaced it with that link): remove the link, or name the \
             directory itself in writable_paths if the jail is meant to write it",
            p.display(),
            c.display()
        )));
    }
    Ok(c)
}

/// A directory whose writing changes the host's system (or is every user's).
fn is_system(p: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| p.starts_with(d)) || SHARED_DIRS.iter().any(|d| p == Path::new(d))
}

/// Refuses a working directory whose writing would let the target change the host's system.
fn check_workdir(cwd: &Path) -> Result<(), JailError> {
    match is_system(cwd) {
        false => Ok(()),
        true => Err(JailError::Setup(format!(
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
            "/var/log",
            "/var/cache/debconf",
            "/var/mail",
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

    /// A writable path that a jail replaced with a link into a system directory is refused at
    /// the next start (attack16 F17: /usr/local/bin became writable); the directory named
    /// as it is stays the caller's choice.
    #[test]
    fn a_writable_path_linked_into_a_system_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("cache");
        std::os::unix::fs::symlink("/usr/local/bin", &link).unwrap();
        let e = extra(&link).unwrap_err().to_string();
        assert!(
            e.contains("symbolic link") && e.contains("/usr/local/bin"),
            "{e}"
        );
        assert!(extra(Path::new("/usr/local/bin")).is_ok());
        let plain = d.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        assert!(extra(&plain).is_ok());
    }
}
