//! `--audit-log FILE`: every decision as one JSON object per line, whatever the log level, for
//! promtail/alloy. A dedicated thread does the writes (one `write` per line, no user-space
//! buffer, so each record is on disk's page cache when the write returns); the proxy only
//! queues. SIGHUP sets a flag that makes the thread reopen the path before its next write, so
//! logrotate's "move, then HUP" works.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

use crate::fields::{RequestFields, MESSAGE};

/// One line of the file: the §7 fields plus level, logger and message, so the same LogQL
/// (`| json` or `| logfmt` on the text) selects the same things.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    level: &'static str,
    logger: &'static str,
    msg: &'static str,
    #[serde(flatten)]
    fields: &'a RequestFields,
    confined_process_name: &'a str,
}

enum Msg {
    Line(Box<(String, RequestFields)>),
    Wake,
    Stop,
}

/// Handle to the writer thread.
pub(crate) struct JsonFile {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    open_append(path, 0o600)
}

/// Opens a log file of boundary's (created if missing, appended to) without following a
/// symbolic link in its last component: log files live where a jailed command of the same user
/// may write (its `$HOME`, `/tmp`), and a link it left there would make the next run, perhaps
/// started by root, create or append to any file the link names. Paths under `/dev/` and
/// `/proc/` are streams the caller chose (`--audit-log /dev/stdout`) and are opened as given.
/// `mode`: the permissions of a file it creates (before the umask).
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let stream = path.starts_with("/dev") || path.starts_with("/proc");
    let flags = if stream { 0 } else { nix::libc::O_NOFOLLOW };
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                std::io::Error::other(format!(
                    "{} is a symbolic link, which boundary does not follow for its log files (a \
                     jailed command may have left it to make boundary write elsewhere): remove \
                     it, or name the real file",
                    path.display()
                ))
            } else {
                e
            }
        })
}

impl JsonFile {
    /// Opens (creating, appending) `path` now, so a bad path is an error at start, not a
    /// silent loss later.
    pub(crate) fn start(
        path: PathBuf,
        queue: usize,
        confined_process_name: String,
    ) -> std::io::Result<Self> {
        let file = open(&path)?;
        let (tx, rx) = sync_channel(queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let r = reopen.clone();
        let thread = std::thread::Builder::new()
            .name("audit-log-file".into())
            .spawn(move || run(path, file, rx, r, confined_process_name))?;
        Ok(Self {
            tx,
            reopen,
            dropped,
            thread: Some(thread),
        })
    }

    /// Queues one record; never waits. A full queue counts a drop and logs it.
    pub(crate) fn push(&self, fields: &RequestFields) {
        let ts = crate::fields::rfc3339_nano(chrono::Utc::now());
        match self.tx.try_send(Msg::Line(Box::new((ts, fields.clone())))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        dropped = n,
                        "audit log file writer is behind; records were dropped from the file \
                         (the agent stream still gets them; the local log only at the level it shows)"
                    );
                }
            }
        }
    }

    /// Asks the thread to reopen the file before its next write (log rotation).
    pub(crate) fn request_reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Records that could not be queued.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything queued and stops the thread; blocking, so call it off the runtime.
    pub(crate) fn stop(mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    path: PathBuf,
    mut file: File,
    rx: Receiver<Msg>,
    reopen: Arc<AtomicBool>,
    confined_process_name: String,
) {
    let mut failed: u64 = 0;
    while let Ok(msg) = rx.recv() {
        if reopen.swap(false, Ordering::SeqCst) {
            match open(&path) {
                Ok(f) => file = f,
                Err(e) => tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "cannot reopen the audit log file after SIGHUP; still writing to the old one"
                ),
            }
        }
        let (ts, fields) = match msg {
            Msg::Line(b) => *b,
            Msg::Wake => continue,
            Msg::Stop => break,
        };
        let line = Line {
            ts,
            level: if fields.matched_rule.is_some() {
                "info"
            } else {
                "warn"
            },
            logger: "boundary.audit",
            msg: MESSAGE,
            fields: &fields,
            confined_process_name: &confined_process_name,
        };
        let mut text = match serde_json::to_string(&line) {
            // serde_json leaves U+2028, DEL, C1 and bidi controls raw: escape them.
            Ok(t) => crate::escape::escape_json(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise an audit record as JSON");
                continue;
            }
        };
        text.push('\n');
        if failed > 0 {
            // A failed write may have left half a line; start the next record on its own line.
            text.insert(0, '\n');
        }
        match file.write_all(text.as_bytes()) {
            Ok(()) if failed > 0 => {
                tracing::warn!(
                    path = %path.display(),
                    failed_records = failed,
                    "the audit log file is writable again"
                );
                failed = 0;
            }
            Ok(()) => {}
            Err(e) => {
                failed += 1;
                // A full disk fails every record: say so on the first and then every 1000th,
                // not once per request.
                if failed == 1 || failed.is_multiple_of(1000) {
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        failed_records = failed,
                        "cannot write audit records to the audit log file (they still reach the other sinks)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symbolic link where a log file goes (left by a jailed command of the same user) is not
    /// followed: the open fails naming the link, and the file it points at is not created.
    /// A stream under /dev is still opened as given.
    #[test]
    fn a_planted_link_is_not_followed_a_stream_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        let link = d.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open_append(&link, 0o600).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(!victim.exists(), "the link was followed");
        let plain = d.path().join("plain.jsonl");
        open_append(&plain, 0o600).unwrap();
        assert!(plain.is_file());
        // A link, but the caller's stream: `--audit-log /dev/stdout`.
        open_append(Path::new("/dev/stdout"), 0o600).unwrap();
    }
}
