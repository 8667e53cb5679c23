//! Application logs: stderr by default, or `<log_dir>/boundary.log`. The level also filters the
//! local audit lines (deny at WARN, allow at INFO), which is what `--log-level` promises.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{Context, Result};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::{fmt, EnvFilter};

use boundary::config::LogLevel;

/// Installs the global subscriber; the file (if any) stays open inside it for the whole run.
pub fn init(level: LogLevel, dir: Option<&Path>) -> Result<()> {
    let filter = EnvFilter::new(boundary::config::level_name(&level));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .fmt_fields(debug_fn(escaped_field).delimited(" "));
    match dir {
        None => {
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init()
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
            let path = dir.join("boundary.log");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| {
                    format!(
                        "cannot open the log file {}; check --log-dir",
                        path.display()
                    )
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init()
        }
    }
    Ok(())
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
