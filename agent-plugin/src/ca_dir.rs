//! The directory that holds this run's CA certificate (never its key, which stays in memory):
//! `boundary-ca-*` in the temporary directory, named by the jail's trust variables.
//!
//! It is removed when the run ends, also after SIGINT/SIGTERM (boundary forwards those to the
//! jail and returns normally once it exits). A SIGKILLed boundary cannot remove anything, so
//! each run holds an exclusive `flock` on `lock` in its directory while it lives, and every run
//! first removes the directories of runs that are gone: the same user's directories whose lock
//! is free. The lock is taken on a temporary name and renamed to `lock` only once held, so a
//! directory that is being created is never taken for a dead one. Directories without `lock`
//! (boundary versions before the lock) are left alone.

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
        let Ok(f) = OpenOptions::new().write(true).open(path.join(LOCK)) else {
            continue; // no lock: an older version's, or not ours to judge
        };
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
}
