//! `boundary learn` and `boundary suggest`: from denied requests to a proposed config.
//!
//! `learn` runs the command exactly as a plain run does (same jail, same policy: nothing extra
//! is let through) with the run's deny tally keeping every distinct denied request; `suggest`
//! reads them from an audit file. Both then propose rules (`propose`), add them to the config
//! file's text (`edit`), print the diff, and write the result beside the file as
//! `FILE.proposed`, or with `--apply` over the file itself.

mod edit;
mod from_log;
mod propose;

use std::path::PathBuf;
use std::sync::Arc;

use boundary::config::{self, cli::Flags, cli::LearnCli, cli::ProposeArgs, cli::SuggestCli};

use propose::{Denied, Shape};

/// `boundary learn`: exits with the command's status, 2 when no proposal could be made.
pub fn learn(cli: LearnCli) -> u8 {
    if cli.command.is_empty() {
        eprintln!(
            "boundary learn: no command specified; usage: boundary learn [--group] [--narrow] \
             [--apply] [flags] -- command [args...]"
        );
        return 2;
    }
    let tally = Arc::new(crate::denials::DenyTally::collecting());
    // The config file as it was before the command ran: in landjail the command runs as the
    // user and can write it, and a proposal must never build on (or apply) its edits.
    let before = config::resolve(&cli.flags, &config::process_env)
        .ok()
        .and_then(|cfg| target_file(cfg.config_file).ok())
        .map(|path| read_config(&path));
    let code = match crate::run_jailed(&cli.flags, cli.command, &tally) {
        Ok(code) => code,
        Err(code) => return code,
    };
    let (requests, more) = tally.requests();
    if more {
        eprintln!(
            "boundary learn: the command was denied more distinct requests than are kept; the \
             proposal covers the first {}: run learn again after applying it",
            requests.len()
        );
    }
    let denied: Vec<Denied> = requests
        .into_iter()
        .map(|(method, url)| Denied { method, url })
        .collect();
    match finish(&cli.flags, &denied, &cli.propose, before) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("boundary learn: {e}");
            2
        }
    }
}

/// `boundary suggest --from FILE`: exit 0 done, 2 bad input.
pub fn suggest(cli: SuggestCli) -> u8 {
    let result = from_log::read(&cli.from).and_then(|d| finish(&cli.flags, &d, &cli.propose, None));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("boundary suggest: {e}");
            2
        }
    }
}

/// Proposes rules for `denied` on top of the effective policy, shows the diff of the config
/// file, and writes the proposal (beside the file, or over it with `--apply`). `before` is the
/// file's text read before the command ran, which must still be its text.
fn finish(
    flags: &Flags,
    denied: &[Denied],
    args: &ProposeArgs,
    before: Option<Result<String, String>>,
) -> Result<(), String> {
    let cfg = config::resolve(flags, &config::process_env).map_err(|e| e.to_string())?;
    let shape = Shape {
        group: args.group,
        narrow: args.narrow,
    };
    let proposal = propose::propose(&cfg.policy, denied, shape);
    for why in &proposal.skipped {
        eprintln!("boundary: no rule proposed for {why}");
    }
    for line in preset_hints(&cfg, denied) {
        eprintln!("boundary: {line}");
    }
    if proposal.rules.is_empty() {
        let line = if proposal.skipped.is_empty() {
            "no new denied requests: the policy allows everything that was asked for\n"
        } else {
            "no rule proposed: no rule is proposed for the denied requests listed on stderr\n"
        };
        return if crate::emit(line) {
            Ok(())
        } else {
            Err("cannot write the output".into())
        };
    }
    let path = target_file(cfg.config_file)?;
    let old = read_config(&path)?;
    if before.is_some_and(|b| b.as_ref() != Ok(&old)) {
        return Err(format!(
            "the config file {} changed while the command ran (the jailed command can write it \
             in landjail); nothing was proposed or applied: check the file, then run learn again",
            path.display()
        ));
    }
    let new = edit::add_rules(&old, &proposal.rules)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let mut out = edit::diff(&old, &new, &name);
    let written = if args.apply {
        path.clone()
    } else {
        PathBuf::from(format!("{name}.proposed"))
    };
    edit::write_atomic(&written, &new)
        .map_err(|e| format!("cannot write {}: {e}", written.display()))?;
    let n = proposal.rules.len();
    let noun = if n == 1 { "rule" } else { "rules" };
    if args.apply {
        out.push_str(&format!("applied: {n} {noun} added to {name}\n"));
    } else {
        out.push_str(&format!(
            "proposed: {n} {noun} in {}; review it, then use it with: mv '{0}' '{name}' (or run \
             again with --apply)\n",
            written.display()
        ));
    }
    if crate::emit(&out) {
        Ok(())
    } else {
        Err("cannot write the output".into())
    }
}

/// For each built-in preset not in use that would allow some of the denied requests, a line
/// naming it and those hosts: a preset may fit better than one rule per host.
fn preset_hints(cfg: &config::Config, denied: &[Denied]) -> Vec<String> {
    let mut covered: Vec<(&boundary::presets::Preset, Vec<String>)> = Vec::new();
    for d in denied {
        let Ok((host, path)) = crate::check::split_url(&d.url) else {
            continue;
        };
        let host = boundary_proxy::host::normal_form(&host);
        // The host comes from the jail: shown escaped, as every proposal shows it.
        let shown = boundary_audit::escape::escape_text(&host).into_owned();
        for p in crate::check::presets_allowing(cfg, &d.method, &host, &path) {
            let at = match covered.iter().position(|(q, _)| *q == p) {
                Some(i) => i,
                None => {
                    covered.push((p, Vec::new()));
                    covered.len() - 1
                }
            };
            if !covered[at].1.contains(&shown) {
                covered[at].1.push(shown.clone());
            }
        }
    }
    covered
        .into_iter()
        .map(|(p, hosts)| {
            format!(
                "preset {} ({}) allows {}: instead of the rules for them you can use \
                 --preset {} or `presets: [{}]` in the config file (`boundary presets {}` \
                 lists its rules)",
                p.label(),
                p.description,
                hosts.join(", "),
                p.name,
                p.name,
                p.name
            )
        })
        .collect()
}

/// The config file's text; a file that does not exist yet is empty.
fn read_config(path: &std::path::Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!(
            "cannot read the config file {}: {e}",
            path.display()
        )),
    }
}

/// The config file the proposal belongs to: the one in effect, else the default location.
fn target_file(in_effect: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = in_effect {
        return Ok(p);
    }
    match config::process_env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(config::default_config_file(&home)),
        None => Err("no config file is in use and HOME is not set: give --config FILE".into()),
    }
}
