//! Application logs: `<log_dir>/boundary.log` with `--log-dir`; otherwise stderr, unless stderr
//! is a terminal: then the target (an interactive agent) draws on it, and our lines go to
//! `boundary.log` in the state directory instead (a summary of denials is printed at exit).
//! The level also filters the local audit lines (deny at WARN, allow at INFO), which is what
//! `--log-level` promises.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::{fmt, EnvFilter};

use boundary::config::LogLevel;

/// Where the log lines of this run go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (non-interactive runs, or the state directory could not be used).
    Stderr,
    /// `boundary.log` in `--log-dir`.
    LogDir(PathBuf),
    /// `boundary.log` in the state directory, because stderr is the target's terminal.
    StateFile(PathBuf),
}

/// Chooses the target: `--log-dir` wins; else the state directory when stderr is a terminal.
pub fn choose(log_dir: Option<&Path>, state_dir: &Path) -> LogTarget {
    match log_dir {
        Some(d) => LogTarget::LogDir(d.join("boundary.log")),
        None if std::io::stderr().is_terminal() => {
            LogTarget::StateFile(state_dir.join("boundary.log"))
        }
        None => LogTarget::Stderr,
    }
}

/// Installs the global subscriber; the file (if any) stays open inside it for the whole run.
/// Returns the target used: a state directory that cannot be made or written falls back to
/// stderr (said there once), while a `--log-dir` that cannot be used is an error.
pub fn init(level: LogLevel, target: LogTarget) -> Result<LogTarget> {
    let filter = EnvFilter::new(boundary::config::level_name(&level));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .fmt_fields(debug_fn(escaped_field).delimited(" "));
    let file = match &target {
        LogTarget::Stderr => None,
        LogTarget::LogDir(path) => Some(open(path, false).with_context(|| {
            format!(
                "cannot open the log file {}; check --log-dir",
                path.display()
            )
        })?),
        LogTarget::StateFile(path) => match open(path, true) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "boundary: cannot write the log file {}: {e}; logging to this terminal \
                     (set XDG_STATE_HOME or --log-dir to a writable directory)",
                    path.display()
                );
                None
            }
        },
    };
    match file {
        None => {
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            Ok(LogTarget::Stderr)
        }
        Some(file) => {
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
            Ok(target)
        }
    }
}

/// Opens `path` for appending, making its directory first (private when `private`: the log
/// holds the URLs the jailed command asked for).
fn open(path: &Path, private: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    if private {
        b.mode(0o700);
    }
    b.create(dir)?;
    boundary_audit::open_append(path, 0o666)
}

/// Writes one field as the default formatter does (`name=value`, the message bare), with every
/// value passed through the audit crate's one escaping rule: a URL from the jail cannot end a
/// line or reorder it with control, separator or bidi characters, in any event.
fn escaped_field(
    w: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let text = format!("{value:?}");
    let text = boundary_audit::escape::escape_text(&text);
    if field.name() == "message" {
        write!(w, "{text}")
    } else {
        write!(w, "{}={text}", field.name())
    }
}
