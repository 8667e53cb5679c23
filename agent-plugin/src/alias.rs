//! The names Coder and its modules start the firewall under, so that putting this binary in
//! place of theirs is all a template needs.
//!
//! Each of these means exactly `boundary ARGS`:
//! - `boundary ARGS`, `agent-firewall ARGS`, `boundary-run ARGS` (the wrapper name older
//!   claude-code modules call): the program name alone says it;
//! - `coder agent-firewall ARGS`, `coder boundary ARGS`, and any program whose name starts with
//!   `coder` (the modules' `coder-no-caps` copy of the coder binary) followed by one of those
//!   two words: the word is dropped.
//!
//! `cargo install` cannot create links, so the crate also builds `agent-firewall` and
//! `boundary-run` as small programs that run the `boundary` next to them ([`exec_sibling`]).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The words after a `coder...` program name that name the firewall (new name first).
pub const CODER_SUBCOMMANDS: [&str; 2] = ["agent-firewall", "boundary"];

/// The program names, besides `boundary`, that `cargo install` and the docs install.
pub const ALIASES: [&str; 2] = ["agent-firewall", "boundary-run"];

/// The command line as `boundary` would have received it: drops the subcommand word when the
/// program is a `coder` copy called as `coder agent-firewall` or `coder boundary`.
pub fn boundary_argv(mut args: Vec<OsString>) -> Vec<OsString> {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let word = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    if name.starts_with("coder") && CODER_SUBCOMMANDS.contains(&word) {
        args.remove(1);
    }
    args
}

/// The `boundary` binary next to this executable (where `cargo install` puts both).
pub fn sibling() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("boundary"))
}

/// Replaces this process with the `boundary` next to it, same arguments and program name.
/// Returns only on failure, with the error that says which file could not be run.
pub fn exec_sibling() -> std::io::Error {
    let target = match sibling() {
        Ok(t) => t,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("boundary"));
    let e = Command::new(&target).arg0(arg0).args(args).exec();
    std::io::Error::new(
        e.kind(),
        format!(
            "cannot run {}: {e}; install boundary in the same directory (cargo install \
             --path agent-plugin does), or make this name a link to it (ln -s boundary NAME)",
            target.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn every_form_means_the_boundary_command_line() {
        let rest = ["--config=/c.yaml", "--", "claude"];
        for prefix in [
            &["boundary"][..],
            &["/usr/local/bin/agent-firewall"],
            &["boundary-run"],
            &["coder", "agent-firewall"],
            &["coder", "boundary"],
            &["/m/scripts/coder-no-caps", "agent-firewall"],
            &["/usr/bin/coder-no-caps", "boundary"],
        ] {
            let mut words = prefix.to_vec();
            words.extend(rest);
            let got = boundary_argv(argv(&words));
            assert_eq!(got[1..], argv(&rest)[..], "{prefix:?}");
        }
    }

    #[test]
    fn the_word_is_dropped_only_after_a_coder_name_and_only_first() {
        // `boundary -- boundary` runs a program named boundary.
        let a = argv(&["boundary", "boundary", "--", "x"]);
        assert_eq!(boundary_argv(a.clone()), a);
        let a = argv(&["coder-no-caps", "--", "agent-firewall"]);
        assert_eq!(boundary_argv(a.clone()), a);
        let a = argv(&["agent-firewall", "agent-firewall"]);
        assert_eq!(boundary_argv(a.clone()), a);
    }
}
