//! `boundary`: run a command in a jail whose only way to the network is the policy proxy.
//!
//! This crate is the edge: the command line, the config file, identity, and the wiring of
//! jail, proxy and audit sinks. The work itself lives in the other crates.

#![forbid(unsafe_code)]

mod ca_dir;
mod check;
mod denials;
mod learn;
mod logging;
mod reload;
mod run;
mod selftest;
mod stats;
mod tamper;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use boundary::config::{
    self,
    cli::{CheckCli, ConfigCli, LearnCli, PresetsCli, RunCli, SuggestCli},
};

fn main() -> ExitCode {
    // Before anything else: this may be the jail's own helper process.
    boundary_jail::init_hook();
    // Every name Coder starts the firewall under (`coder-no-caps agent-firewall -- cmd`, ...)
    // means exactly `boundary -- cmd`.
    let args: Vec<OsString> = boundary::alias::boundary_argv(std::env::args_os().collect());
    // A subcommand is recognised only as the very first argument, so that
    // `boundary -- check` runs a program named check.
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let code = match first {
        "check" => check::main(CheckCli::parse_from(skip_sub(&args))),
        "config" => show_config(ConfigCli::parse_from(skip_sub(&args))),
        "presets" => show_presets(PresetsCli::parse_from(skip_sub(&args))),
        "selftest" => selftest::main(&args[2..]),
        "learn" => learn::learn(LearnCli::parse_from(skip_sub(&args))),
        "suggest" => learn::suggest(SuggestCli::parse_from(skip_sub(&args))),
        _ => run(RunCli::parse_from(&args)),
    };
    ExitCode::from(code)
}

/// The error and its causes, each cause once: our library errors already quote their cause
/// (with what to do about it), so anyhow's `{:#}` would print it twice.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// argv without the subcommand word, so clap sees `boundary check <flags>` as its own program.
fn skip_sub(args: &[OsString]) -> Vec<OsString> {
    let mut v = vec![args[0].clone()];
    v.extend_from_slice(&args[2..]);
    v
}

/// Writes command output to stdout. A reader that went away (`boundary config | head`) is not
/// a failure: everything anyone reads was written. Any other write error is reported and makes
/// the return false.
pub(crate) fn emit(text: &str) -> bool {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("boundary: cannot write the output: {e}");
            false
        }
        _ => true,
    }
}

fn show_config(cli: ConfigCli) -> u8 {
    use std::fmt::Write;
    let command: Vec<String> = cli
        .command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let mut out = String::new();
    match config::resolve(&cli.flags, &config::process_env) {
        Ok(cfg) if cli.json => {
            let rows: Vec<serde_json::Value> = cfg
                .sources
                .iter()
                .map(|(k, v, s)| serde_json::json!({"key": k, "value": v, "source": s.to_string()}))
                .collect();
            let doc = serde_json::json!({"settings": rows, "command": command});
            let _ = writeln!(out, "{doc}");
            u8::from(!emit(&out))
        }
        Ok(cfg) => {
            for (key, value, source) in &cfg.sources {
                let _ = writeln!(out, "{key:<28} {value:<48} ({source})");
            }
            if !command.is_empty() {
                let _ = writeln!(out, "{:<28} {}", "command", command.join(" "));
            }
            u8::from(!emit(&out))
        }
        Err(e) => {
            eprintln!("boundary: {e}");
            2
        }
    }
}

/// `boundary presets`: every built-in preset, or the one named; exit 2 for an unknown name.
fn show_presets(cli: PresetsCli) -> u8 {
    let chosen: Vec<&boundary::presets::Preset> = match &cli.name {
        Some(name) => match boundary::presets::find(name) {
            Ok(p) => vec![p],
            Err(e) => {
                eprintln!("boundary presets: {e}");
                return 2;
            }
        },
        None => boundary::presets::all().iter().collect(),
    };
    let out = if cli.json {
        let list: Vec<serde_json::Value> = chosen
            .iter()
            .map(|p| {
                serde_json::json!({"name": p.name, "version": p.version,
                    "description": p.description, "rules": p.rules})
            })
            .collect();
        format!("{}\n", serde_json::Value::from(list))
    } else {
        let blocks: Vec<String> = chosen.iter().map(|p| p.to_string()).collect();
        blocks.join("\n")
    };
    u8::from(!emit(&out))
}

fn run(cli: RunCli) -> u8 {
    let denials = std::sync::Arc::new(denials::DenyTally::default());
    run_jailed(&cli.flags, cli.command, &denials).unwrap_or_else(|code| code)
}

/// A jailed run of `command` with every denied record counted in `denials`. `Ok` holds the
/// exit code the command's status maps to; `Err` the code when boundary itself could not run
/// it (2 bad usage or configuration, 125 a failure to start), with the reason already printed.
pub(crate) fn run_jailed(
    flags: &config::cli::Flags,
    command: Vec<OsString>,
    denials: &std::sync::Arc<denials::DenyTally>,
) -> Result<u8, u8> {
    if command.is_empty() {
        eprintln!("boundary: no command specified; usage: boundary [flags] -- command [args...]");
        return Err(2);
    }
    let mut cfg = match config::resolve(flags, &config::process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("boundary: {e}");
            return Err(2);
        }
    };
    let state_dir = config::values::state_dir(&config::process_env);
    let target = logging::choose(cfg.log_dir.as_deref(), &state_dir);
    let target = match logging::init(cfg.log_level, target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("boundary: {e:#}");
            return Err(2);
        }
    };
    let logs_to_file = target != logging::LogTarget::Stderr;
    // The state directory's log is protected like a `--log-dir` log (read-only in nsjail,
    // checked at exit in landjail): the jailed command must not edit what it is told about.
    if let logging::LogTarget::StateFile(path) = &target {
        cfg.log_dir = path.parent().map(std::path::Path::to_path_buf);
    }
    // The proxy holds two descriptors per proxied connection: use all the system allows.
    match boundary_proxy::upstream::raise_descriptor_limit() {
        Ok((before, now)) => tracing::debug!(before, now, "descriptor limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the descriptor limit"),
    }
    let result = run::run(cfg, flags, command, denials);
    // The log lines went to a file the user is not watching: say once what was denied.
    if let logging::LogTarget::StateFile(path) = &target {
        if let Some(line) = denials.summary(path) {
            eprintln!("{line}");
        }
    }
    match result {
        // Exit codes are 0..=255 at the OS level; 128+N for signals is already in range.
        Ok(code) => Ok(code.clamp(0, 255) as u8),
        Err(e) => {
            let text = describe(&e);
            // With logs on stderr the line below is the log; with --log-dir record it there too.
            if logs_to_file {
                tracing::error!("{text}");
            }
            eprintln!("boundary: {text}");
            // 125 like env(1)/docker: boundary itself failed, the command never ran.
            Err(125)
        }
    }
}
