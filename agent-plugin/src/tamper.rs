//! boundary's own files, which the jailed command must not change: the config directory (with
//! `config.yaml`, the next run's allowlist), an explicit `--config` file, the log file
//! (`--log-dir`, or the state directory's when stderr is a terminal: `main` puts that directory
//! in `log_dir`), the `--audit-log` file, boundary's own executable (the next run starts it)
//! and the `protect_paths` the caller names (the Coder module's wrapper script, which starts
//! the next session: rewritten from the jail, that session would run without a jail).
//!
//! nsjail binds them read-only inside the jail (and pins every parent directory with a mount,
//! so none of them can be renamed away). landjail cannot hide or protect what its own uid owns,
//! so boundary records each file's identity and content before the jail starts and compares at
//! exit: a change made while the jailed command ran is reported loudly on stderr and in the log.
//! Files boundary itself appends to (log and audit log) are checked for being replaced,
//! removed, or changed in the part that existed before the run; lines appended during the run
//! cannot be told apart from boundary's own appends, a limit the docs state.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use boundary::config::Config;

/// How a protected path is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Must not change at all (config directory, config file, `protect_paths`).
    Fixed,
    /// Must not change, judged by identity, size, mode and change time instead of content
    /// (boundary's own executable: tens of megabytes, and any write moves its change time).
    Identity,
    /// boundary appends to it: only its identity and the bytes present at start must stay.
    AppendOnly,
}

/// boundary's own paths, created if missing (config directory 0700, audit log), so that a jail
/// can protect them. The config file and the log file are only listed.
pub fn protected_paths(cfg: &Config) -> Result<Vec<PathBuf>> {
    Ok(listing(cfg)?.into_iter().map(|(p, _)| p).collect())
}

fn listing(cfg: &Config) -> Result<Vec<(PathBuf, Kind)>> {
    // The config directories (the default config file's too, which differs when
    // `XDG_CONFIG_HOME` is set), created so that a jail cannot create one (and a config.yaml in
    // it) for the next run, whether or not a file exists now. If boundary cannot create one,
    // neither can the jail (same uid), so there is nothing to guard.
    let mut out = Vec::new();
    for dir in cfg.config_dirs() {
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            tracing::debug!(dir = %dir.display(), error = %e, "config directory not created");
        }
        out.push((dir, Kind::Fixed));
    }
    // The executable the next run starts: where it sits in a path the jail may write (`$HOME`,
    // `/tmp`: an install_command's choice), the jail could swap it for a program that runs
    // unjailed next time.
    if let Ok(exe) = std::env::current_exe().and_then(fs::canonicalize) {
        out.push((exe, Kind::Identity));
    }
    out.extend(cfg.protect_paths.iter().map(|p| (p.clone(), Kind::Fixed)));
    // Extra upstream trust anchors: replaced, the next run would trust the jail's CA upstream.
    out.extend(
        cfg.upstream_ca_file
            .iter()
            .map(|p| (p.clone(), Kind::Fixed)),
    );
    if let Some(f) = cfg
        .config_file
        .as_ref()
        .filter(|f| !f.starts_with(&cfg.config_dir))
    {
        out.push((f.clone(), Kind::Fixed));
    }
    if let Some(dir) = &cfg.log_dir {
        out.push((dir.join("boundary.log"), Kind::AppendOnly));
    }
    if let Some(audit) = &cfg.audit_log {
        // Created now (as the audit writer would), so it exists when the jail protects it.
        boundary_audit::open_append(audit, 0o600)
            .with_context(|| format!("cannot open the audit log {}", audit.display()))?;
        out.push((audit.clone(), Kind::AppendOnly));
    }
    // Only files boundary owns on disk: `--audit-log /dev/stdout` (a pipe or a terminal) is the
    // caller's stream, not a file a later run trusts.
    out.retain(|(p, k)| *k == Kind::Fixed || fs::metadata(p).map(|m| m.is_file()).unwrap_or(true));
    Ok(out)
}

/// What a path looked like: identity, size, and a digest of its content (for a directory, of
/// its entries' names and identities).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    digest: u64,
}

/// The protected paths as they were before the jail started, and boundary's own live files
/// (skipped when a protected directory holds them).
#[derive(Debug)]
pub struct Snapshot(Vec<(PathBuf, Kind, Option<State>)>, Vec<PathBuf>);

/// Records the protected paths' state now (call before the jail starts).
pub fn snapshot(cfg: &Config) -> Result<Snapshot> {
    let live = live_files(cfg);
    Ok(Snapshot(
        listing(cfg)?
            .into_iter()
            .map(|(p, k)| {
                let s = state_of(&p, k, None, &live);
                (p, k, s)
            })
            .collect(),
        live,
    ))
}

/// Files boundary itself writes during a run: its log file (checked on its own, as
/// append-only) and the audit spool. When the state directory is the config directory
/// (`XDG_STATE_HOME` = `XDG_CONFIG_HOME`), they sit in a protected directory, and boundary's
/// own writes must not read as the jail's.
fn live_files(cfg: &Config) -> Vec<PathBuf> {
    let mut out = vec![cfg.audit_spool_dir.clone()];
    if let Some(dir) = &cfg.log_dir {
        out.push(dir.join("boundary.log"));
    }
    out
}

impl Snapshot {
    /// The changes made since the snapshot, one sentence each.
    pub fn changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, kind, before) in &self.0 {
            let limit = match (kind, before) {
                (Kind::AppendOnly, Some(b)) => Some(b.size),
                _ => None,
            };
            let after = state_of(path, *kind, limit, &self.1);
            let shown = path.display();
            match (before, after) {
                (None, None) => {}
                (None, Some(_)) => out.push(format!("{shown} was created")),
                (Some(_), None) => out.push(format!("{shown} was removed or renamed")),
                (Some(b), Some(a)) if (b.dev, b.ino) != (a.dev, a.ino) => {
                    out.push(format!("{shown} was replaced by another file"))
                }
                (Some(b), Some(a)) if *kind == Kind::AppendOnly && a.size < b.size => {
                    out.push(format!("{shown} was truncated"))
                }
                (Some(b), Some(a)) if b.mode != a.mode => {
                    out.push(format!("{shown} changed permissions"))
                }
                (Some(b), Some(a))
                    if b.digest != a.digest || (*kind == Kind::Fixed && b.size != a.size) =>
                {
                    out.push(format!("{shown} was modified"))
                }
                _ => {}
            }
        }
        out
    }

    /// Reports every change loudly (stderr and the log); true if there was one.
    pub fn report(&self) -> bool {
        let changes = self.changes();
        for c in &changes {
            tracing::error!(change = %c, "boundary's own files changed while the jailed command ran");
            eprintln!(
                "boundary: WARNING: {c} while the jailed command ran (landjail cannot protect files \
                 its user owns); check it before the next run"
            );
        }
        !changes.is_empty()
    }
}

/// How much of an append-only file's end (before the run) is digested: enough to catch an
/// edit of recent records without reading a long audit log at every start.
const TAIL: u64 = 256 * 1024;

/// The state of `path` as `kind` judges it: [`Kind::Identity`] digests the change time (which
/// every write, `chmod` or `utime` moves, and which no call sets back) instead of the content.
fn state_of(path: &Path, kind: Kind, limit: Option<u64>, skip: &[PathBuf]) -> Option<State> {
    if kind != Kind::Identity {
        return state(path, limit, skip);
    }
    let m = fs::symlink_metadata(path).ok()?;
    Some(State {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mode: m.mode(),
        digest: hash(format!("{}.{}", m.ctime(), m.ctime_nsec()).as_bytes()),
    })
}

/// The state of `path` (not following a final symlink); `limit` digests only the bytes up to
/// there (the last [`TAIL`] of them); a directory's entries in `skip` are left out.
fn state(path: &Path, limit: Option<u64>, skip: &[PathBuf]) -> Option<State> {
    let m = fs::symlink_metadata(path).ok()?;
    let digest = if m.is_dir() {
        dir_digest(path, skip)
    } else if m.is_file() {
        file_digest(path, limit.unwrap_or(u64::MAX))
    } else {
        fs::read_link(path)
            .map(|t| hash(t.as_os_str().as_encoded_bytes()))
            .unwrap_or(0)
    };
    Some(State {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mode: m.mode(),
        digest,
    })
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Files (or the part of an append-only file) larger than this are judged by size and change
/// time instead of read: in landjail a protected directory is writable to the jail, and a
/// sparse 20 GB file left there must not make every later start read it (into memory, before
/// this bound). The change time moves with every write and no call sets it back.
const MAX_DIGESTED: u64 = 16 << 20;

fn file_digest(path: &Path, limit: u64) -> u64 {
    use std::hash::Hasher;
    use std::os::unix::fs::OpenOptionsExt;
    let start = if limit == u64::MAX {
        0
    } else {
        limit.saturating_sub(TAIL)
    };
    let digest = fs::OpenOptions::new()
        .read(true)
        // Never wait on a FIFO put in place of a file, nor follow a link put there.
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| {
            let m = f.metadata()?;
            if limit.min(m.len()).saturating_sub(start) > MAX_DIGESTED {
                let id = format!("large {} {}.{}", m.len(), m.ctime(), m.ctime_nsec());
                return Ok(hash(id.as_bytes()));
            }
            f.seek(SeekFrom::Start(start))?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut part = f.take(limit - start);
            loop {
                let n = part.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.write(&buf[..n]);
            }
            Ok(h.finish())
        });
    match digest {
        Ok(d) => d,
        Err(e) => hash(format!("unreadable: {}", e.kind()).as_bytes()),
    }
}

/// Names, identities and content of a directory's entries (one level; files fully), but for
/// those in `skip`.
fn dir_digest(path: &Path, skip: &[PathBuf]) -> u64 {
    let mut entries = BTreeMap::new();
    let list = match fs::read_dir(path) {
        Ok(l) => l,
        Err(e) => return hash(format!("unreadable: {}", e.kind()).as_bytes()),
    };
    for e in list.flatten() {
        let p = e.path();
        if skip.contains(&p) {
            continue;
        }
        let s = state_shallow(&p);
        entries.insert(e.file_name(), s);
    }
    hash(format!("{entries:?}").as_bytes())
}

fn state_shallow(path: &Path) -> Option<(u64, u64, u64, u32, i64, u64)> {
    let m = fs::symlink_metadata(path).ok()?;
    let content = if m.is_file() {
        file_digest(path, u64::MAX)
    } else {
        0
    };
    Some((m.dev(), m.ino(), m.size(), m.mode(), m.mtime(), content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(paths: Vec<(PathBuf, Kind)>) -> Snapshot {
        snap_live(paths, Vec::new())
    }

    fn snap_live(paths: Vec<(PathBuf, Kind)>, live: Vec<PathBuf>) -> Snapshot {
        Snapshot(
            paths
                .into_iter()
                .map(|(p, k)| {
                    let s = state(&p, None, &live);
                    (p, k, s)
                })
                .collect(),
            live,
        )
    }

    #[test]
    fn boundarys_own_log_and_spool_in_the_config_directory_are_not_changes() {
        // XDG_STATE_HOME = XDG_CONFIG_HOME: the state directory is the config directory.
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("coder_boundary");
        fs::create_dir(&conf).unwrap();
        fs::write(conf.join("config.yaml"), "allowlist: []\n").unwrap();
        let log = conf.join("boundary.log");
        // The log file is opened before the snapshot (logging starts first).
        fs::write(&log, "").unwrap();
        let spool = conf.join("spool");
        let s = snap_live(
            vec![(conf.clone(), Kind::Fixed), (log.clone(), Kind::AppendOnly)],
            vec![spool.clone(), log.clone()],
        );
        fs::write(&log, "a line boundary wrote\n").unwrap();
        fs::create_dir(&spool).unwrap();
        fs::write(spool.join("seg-1"), "records").unwrap();
        assert!(s.changes().is_empty(), "{:?}", s.changes());
        // Anything else in the directory still counts.
        fs::write(conf.join("config.yaml"), "allowlist: [\"domain=*\"]\n").unwrap();
        assert!(s
            .changes()
            .iter()
            .any(|c| c.contains("coder_boundary was modified")));
    }

    #[test]
    fn a_rewritten_config_and_a_forged_audit_line_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("conf");
        fs::create_dir(&conf).unwrap();
        fs::write(conf.join("config.yaml"), "allowlist: []\n").unwrap();
        let audit = d.path().join("audit.log");
        fs::write(&audit, "{\"a\":1}\n").unwrap();
        let s = snap(vec![
            (conf.clone(), Kind::Fixed),
            (audit.clone(), Kind::AppendOnly),
        ]);
        assert!(s.changes().is_empty(), "{:?}", s.changes());
        // boundary appending is not a change.
        fs::OpenOptions::new()
            .append(true)
            .open(&audit)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"b\":2}\n"))
            .unwrap();
        assert!(s.changes().is_empty(), "{:?}", s.changes());
        fs::write(conf.join("config.yaml"), "allowlist: [\"domain=*\"]\n").unwrap();
        fs::write(&audit, "{\"a\":9}\n{\"b\":2}\n").unwrap();
        let c = s.changes();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[0].contains("conf") && c[0].contains("modified"), "{c:?}");
        assert!(
            c[1].contains("audit.log") && c[1].contains("modified"),
            "{c:?}"
        );
    }

    #[test]
    fn renamed_truncated_and_created_paths_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("conf");
        fs::create_dir(&conf).unwrap();
        let audit = d.path().join("audit.log");
        fs::write(&audit, "0123456789\n").unwrap();
        let extra = d.path().join("config.yaml");
        let s = snap(vec![
            (conf.clone(), Kind::Fixed),
            (audit.clone(), Kind::AppendOnly),
            (extra.clone(), Kind::Fixed),
        ]);
        fs::rename(&conf, d.path().join("moved")).unwrap();
        fs::create_dir(&conf).unwrap();
        fs::write(&audit, "x").unwrap();
        fs::write(&extra, "allowlist: []").unwrap();
        let c = s.changes();
        assert!(c[0].contains("replaced"), "{c:?}");
        assert!(c[1].contains("truncated"), "{c:?}");
        assert!(c[2].contains("created"), "{c:?}");
    }

    /// Peak resident memory of this process, in KiB.
    fn peak_kib() -> u64 {
        fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// A sparse 2 GiB file left in a protected directory (landjail's jail can write there) is
    /// not read into memory at the snapshot; a change to it is still seen (size, or the change
    /// time of a same-size rewrite).
    #[test]
    fn a_giant_sparse_file_is_judged_by_its_identity_not_read() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("protected");
        fs::create_dir(&dir).unwrap();
        let big = dir.join("sparse");
        fs::File::create(&big).unwrap().set_len(2 << 30).unwrap();
        let before = peak_kib();
        let s = snap(vec![(dir.clone(), Kind::Fixed), (big.clone(), Kind::Fixed)]);
        let grown = peak_kib().saturating_sub(before);
        assert!(
            grown < 64 << 10,
            "the snapshot grew the process by {grown} KiB"
        );
        assert!(s.changes().is_empty(), "{:?}", s.changes());
        // A same-size rewrite of one byte: only the change time tells.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"x", 1 << 30).unwrap();
        let c = s.changes();
        assert_eq!(c.len(), 2, "{c:?}");
    }
}
