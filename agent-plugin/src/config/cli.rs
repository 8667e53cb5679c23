//! Command-line flags, one per row of the settings table. Flags only: environment variables
//! and the YAML file are merged in `resolve`, so each value's source can be reported by
//! `boundary config`.

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, Parser};

use super::settings::{setting, Fallback, Setting, Shape, SETTINGS};
use super::values::Dur;

/// Flags shared by a run and by the subcommands that evaluate the same configuration: one
/// per row of [`SETTINGS`], holding the text given on the command line (parsed in `resolve`).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// The values given for the setting `key`, in command-line order (empty if not given).
    pub fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// Sets the values of the setting `key` as if given on the command line (fuzzing, tests,
    /// the selftest's own runs). An unknown key is a programming error and is ignored.
    pub fn set(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        if let Some(row) = setting(key) {
            self.values.insert(row.key, values);
        }
        self
    }
}

/// The clap argument of one row: long flag, placeholder, and the help with its suffixes.
fn arg(s: &'static Setting) -> Arg {
    let a = Arg::new(s.key)
        .long(s.flag)
        .value_name(s.value_name)
        .help(help_text(s));
    match s.shape {
        Shape::One => a.action(ArgAction::Set),
        Shape::Switch => a
            .action(ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true"),
        Shape::List { .. } | Shape::Map => a.action(ArgAction::Append),
    }
}

/// `help [env: A, then B] [yaml: key] [default: x]`, from the row.
pub fn help_text(s: &Setting) -> String {
    let mut h = s.help.to_string();
    if !s.env.is_empty() {
        let split = match s.shape {
            Shape::List {
                env_split: Some(c), ..
            } => format!(", {c:?}-separated"),
            Shape::Map => ", comma-separated".into(),
            _ => String::new(),
        };
        h += &format!(" [env: {}{split}]", s.env.join(", then "));
    }
    if let Some(y) = s.yaml {
        let form = match s.shape {
            Shape::List { .. } => ", a list",
            Shape::Map => ", a map NAME: VALUE",
            _ => "",
        };
        h += &format!(" [yaml: {y}{form}]");
    }
    let default = match s.default {
        Fallback::Text(t) => Some(t.to_string()),
        Fallback::Duration(d) => Some(Dur(d).to_string()),
        Fallback::Unset(note) => note.map(str::to_string),
        Fallback::Derived(_, note) => Some(note.to_string()),
    };
    if let Some(d) = default {
        h += &format!(" [default: {d}]");
    }
    h
}

impl FromArgMatches for Flags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for s in SETTINGS {
            if let Some(v) = m.get_many::<String>(s.key) {
                self.values.insert(s.key, v.cloned().collect());
            }
        }
        Ok(())
    }
}

impl Args for Flags {
    fn augment_args(cmd: Command) -> Command {
        SETTINGS.iter().fold(cmd, |cmd, s| cmd.arg(arg(s)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

const ABOUT: &str = "Run a command in a jail whose only way to the network is a proxy that \
allows what the rules allow, answers 403 to the rest, and audits every request.";

const AFTER: &str = "Subcommands (only as the first argument):
  boundary check [--method M] [flags] URL   decide one request against the effective policy
  boundary config [flags]                   print the effective configuration and its sources
  boundary presets [--json] [NAME]          list the built-in presets (--preset) and their rules
  boundary selftest [--jail-type T]         prove the jail holds on this host (works offline)
  boundary learn [--group] [--narrow] [--apply] [flags] -- command
                                            run jailed, then propose rules for what was denied
  boundary suggest --from FILE [--group] [--narrow] [--apply] [flags]
                                            the same from an --audit-log file or a local log

Precedence: flag > environment > config file > default. Rules from the file come first, then
BOUNDARY_ALLOW, then --allow; the first matching rule is the one reported.";

/// `boundary [flags] -- command [args...]`
#[derive(Debug, Parser)]
#[command(name = "boundary", version, about = ABOUT, after_help = AFTER)]
pub struct RunCli {
    #[command(flatten)]
    pub flags: Flags,
    /// The command to jail, after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// `boundary check [--method M] URL`
#[derive(Debug, Parser)]
#[command(
    name = "boundary check",
    about = "Decide one request against the effective policy. Exit 0 allowed, 1 denied, 2 bad input."
)]
pub struct CheckCli {
    /// HTTP method of the request to decide, exactly as a client sends it (methods are
    /// case-sensitive: `get` is not `GET`)
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    #[command(flatten)]
    pub flags: Flags,
    /// The fully qualified URL, e.g. https://api.github.com/repos
    pub url: String,
}

/// `boundary config`
#[derive(Debug, Parser)]
#[command(
    name = "boundary config",
    about = "Print the effective configuration with where each value came from."
)]
pub struct ConfigCli {
    /// Print JSON (an array of {key, value, source}) for scripts
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub flags: Flags,
    /// Optional `-- command...`, accepted so a full run command line can be inspected unchanged.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// `boundary presets [--json] [NAME]`
#[derive(Debug, Parser)]
#[command(
    name = "boundary presets",
    about = "List the built-in presets (named allowlists for --preset, BOUNDARY_PRESETS and \
             presets:) with their versions, descriptions and rules."
)]
pub struct PresetsCli {
    /// Print JSON (an array of {name, version, description, rules}) for scripts
    #[arg(long)]
    pub json: bool,
    /// Only this preset (NAME or NAME@VERSION)
    pub name: Option<String>,
}

/// How `boundary learn` and `boundary suggest` shape and use their proposal.
#[derive(Debug, Clone, Args)]
pub struct ProposeArgs {
    /// Propose `domain=*.example.com` where several subdomains of one registrable domain were
    /// denied (never a public suffix such as `*.co.uk`)
    #[arg(long)]
    pub group: bool,
    /// Propose the methods and paths that were seen, not only the host
    #[arg(long)]
    pub narrow: bool,
    /// Merge the proposal into the config file after showing it (else it is written beside
    /// the file, as FILE.proposed)
    #[arg(long)]
    pub apply: bool,
}

/// `boundary learn [--group] [--narrow] [--apply] [flags] -- command`
#[derive(Debug, Parser)]
#[command(
    name = "boundary learn",
    about = "Run the command jailed and enforced as usual, then propose the rules that would \
             have allowed what was denied: the config file with them added, shown as a diff."
)]
pub struct LearnCli {
    #[command(flatten)]
    pub propose: ProposeArgs,
    #[command(flatten)]
    pub flags: Flags,
    /// The command to jail, after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

/// `boundary suggest --from FILE [--group] [--narrow] [--apply] [flags]`
#[derive(Debug, Parser)]
#[command(
    name = "boundary suggest",
    about = "Propose the rules that would have allowed the denied requests recorded in a file \
             (an --audit-log file or a local log), as `boundary learn` does after a run."
)]
pub struct SuggestCli {
    /// The file: written by --audit-log (JSON lines) or a local log (--log-dir, boundary.log)
    #[arg(long, value_name = "FILE")]
    pub from: std::path::PathBuf,
    #[command(flatten)]
    pub propose: ProposeArgs,
    #[command(flatten)]
    pub flags: Flags,
}
