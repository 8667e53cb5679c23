//! What sets a reload off: SIGHUP to boundary, or a change to the config file, seen with
//! inotify on the file's directory (editors and `kubectl` replace a file by renaming another
//! over it, which a watch on the file itself would miss).
//!
//! Changes come in bursts (an editor writes, renames, sets attributes): after the first event
//! the watch waits [`SETTLE`] for the burst to end, then compares the file's content with what
//! it was at the last reload, so a touch or a neighbour's change reloads nothing.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use super::Reloader;

/// How long a burst of changes may last before the file is read.
pub const SETTLE: Duration = Duration::from_millis(250);

/// A watch on the config file's directory, made before the jailed command starts so that no
/// change after that is missed.
pub struct Watch {
    ino: Inotify,
    /// A duplicate of `ino`'s descriptor (the same inotify instance), registered with tokio
    /// for readiness once the runtime runs.
    ready: Option<AsyncFd<OwnedFd>>,
    path: PathBuf,
    /// The file's content at the last reload (None: it could not be read).
    last: Option<Vec<u8>>,
}

impl Watch {
    /// Watches `path`'s directory (no runtime needed yet).
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(
            &dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB,
        )?;
        Ok(Self {
            ino,
            ready: None,
            path: path.to_path_buf(),
            last: std::fs::read(path).ok(),
        })
    }

    /// Events queued now (none if there are none).
    fn drain(&self) -> Vec<Option<OsString>> {
        let mut names = Vec::new();
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            names.extend(events.into_iter().map(|e| e.name));
        }
        names
    }

    /// Returns once the file's content differs from the last time.
    async fn changed(&mut self) -> std::io::Result<()> {
        if self.ready.is_none() {
            let fd = self.ino.as_fd().try_clone_to_owned()?;
            self.ready = Some(boundary_jail::async_readable(fd)?);
        }
        loop {
            let Some(ready) = self.ready.as_ref() else {
                return Ok(());
            };
            let mut ready = ready.readable().await?;
            let names = self.drain();
            ready.clear_ready();
            if names.is_empty() {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            self.drain();
            let now = std::fs::read(&self.path).ok();
            if now != self.last {
                self.last = now;
                return Ok(());
            }
        }
    }
}

/// The watch on the config file `reloader` follows, if any; a failure is logged (SIGHUP
/// still reloads).
pub fn watch(reloader: &Reloader) -> Option<Watch> {
    match reloader.config_file().map(Watch::new).transpose() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                file = ?reloader.config_file(), error = %e,
                "cannot watch the config file for changes; SIGHUP still reloads it"
            );
            None
        }
    }
}

/// Reloads on SIGHUP (unless it is the terminal closing, which goes to the jailed command)
/// and on every change `watch` sees, until the run ends. Needs the tokio runtime.
pub fn spawn(
    mut reloader: Reloader,
    mut watch: Option<Watch>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let file_changed = async {
                match watch.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    if boundary_jail::sighup_is_terminal_hangup() {
                        continue;
                    }
                    reloader.reload("SIGHUP");
                }
                res = file_changed => match res {
                    Ok(()) => {
                        reloader.reload("config file changed");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the config file failed; SIGHUP still reloads it");
                        watch = None;
                    }
                },
            }
        }
    }))
}
