//! The directory that holds this run's CA certificate (never its key, which stays in memory):
//! `boundary-ca-*` in the temporary directory, named by the jail's trust variables.
//!
//! It is removed when the run ends, also after SIGINT/SIGTERM (boundary forwards those to the
//! jail and returns normally once it exits). A SIGKILLed boundary cannot remove anything, so
//! each run holds an exclusive `flock` on `lock` in its directory while it lives, and every run
//! first removes the directories of runs that are gone: the same user's directories whose lock
//! is free. The lock is taken on a temporary name and renamed to `lock` only once held, so a
//! directory that is being created is never taken for a dead one. Directories without `lock`
//! (boundary versions before the lock) are left alone, and so are those whose `lock` is not a
//! plain file of this user (a jailed command can write the directory: a FIFO there would make
//! every later run wait, a symbolic link would point the lock elsewhere).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

const PREFIX: &str = "boundary-ca-";
const LOCK: &str = "lock";

/// This run's CA directory; removed when dropped (its lock is released with it).
pub struct CaDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl CaDir {
    /// Creates the directory (after removing those of runs that are gone) and locks it.
    pub fn create() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir().context(
            "cannot create a private directory for this run's CA certificate (check TMPDIR)",
        )?;
        let lock = lock(dir.path())
            .with_context(|| format!("cannot lock the CA directory {}", dir.path().display()))?;
        let uid = std::fs::metadata(dir.path())?.uid();
        if let Some(parent) = dir.path().parent() {
            sweep(parent, uid, dir.path());
        }
        Ok(Self { dir, _lock: lock })
    }

    /// Where the run's CA certificate goes.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Locks `dir/lock`: created under another name, locked, then renamed.
fn lock(dir: &Path) -> io::Result<File> {
    let fresh = dir.join(".lock.new");
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&fresh)?;
    f.try_lock().map_err(|e| io::Error::other(e.to_string()))?;
    std::fs::rename(&fresh, dir.join(LOCK))?;
    Ok(f)
}

/// Removes `uid`'s CA directories in `tmp` (other than `own`) whose lock is free.
fn sweep(tmp: &Path, uid: u32, own: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && path != own
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours {
            continue;
        }
        // Not followed and never waited on: the directory is writable to a jailed command of
        // this user, which could leave a FIFO there (the open would wait forever, and so every
        // later run) or a symbolic link (to any file this user may write and lock).
        let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path.join(LOCK))
        else {
            continue; // no lock: an older version's, or not ours to judge
        };
        if !f.metadata().is_ok_and(|m| m.is_file() && m.uid() == uid) {
            tracing::warn!(
                path = %path.join(LOCK).display(),
                "a stale CA directory's lock is not a plain file of this user: left alone \
                 (remove the directory by hand if no boundary run is using it)"
            );
            continue;
        }
        if f.try_lock().is_ok() {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed the CA directory of a run that was killed")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "could not remove a stale CA directory")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_runs_directory_is_removed_a_live_ones_and_unlocked_ones_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("ca-cert.pem"), "cert").unwrap();
            d
        };
        let live = make("boundary-ca-live");
        let _held = lock(&live).unwrap();
        let dead = make("boundary-ca-dead");
        drop(lock(&dead).unwrap());
        let legacy = make("boundary-ca-legacy");
        let other = make("something-else");
        std::fs::write(other.join(LOCK), "").unwrap();
        let uid = std::fs::metadata(tmp.path()).unwrap().uid();
        sweep(tmp.path(), uid, Path::new("/nonexistent"));
        assert!(live.exists() && legacy.exists() && other.exists());
        assert!(!dead.exists(), "the dead run's directory is removed");
        // Another user's directory is not touched.
        let dead2 = make("boundary-ca-dead2");
        drop(lock(&dead2).unwrap());
        sweep(tmp.path(), uid + 1, Path::new("/nonexistent"));
        assert!(dead2.exists());
    }

    /// A lock that is a FIFO or a symbolic link (planted by a jailed command of the same user)
    /// neither makes the sweep wait nor is followed: the directory is left alone and the sweep
    /// returns. Before, the FIFO made every later run hang in `open`.
    #[test]
    fn a_planted_fifo_or_link_as_lock_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo_dir = tmp.path().join("boundary-ca-fifo");
        std::fs::create_dir(&fifo_dir).unwrap();
        nix::unistd::mkfifo(&fifo_dir.join(LOCK), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let link_dir = tmp.path().join("boundary-ca-link");
        std::fs::create_dir(&link_dir).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::os::unix::fs::symlink(&victim, link_dir.join(LOCK)).unwrap();
        let uid = std::fs::metadata(tmp.path()).unwrap().uid();
        let (done, wait) = std::sync::mpsc::channel();
        let dir = tmp.path().to_path_buf();
        std::thread::spawn(move || {
            sweep(&dir, uid, Path::new("/nonexistent"));
            let _ = done.send(());
        });
        wait.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the sweep waits on a planted FIFO");
        assert!(
            fifo_dir.exists() && link_dir.exists(),
            "planted directories are left alone"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x");
    }
}
