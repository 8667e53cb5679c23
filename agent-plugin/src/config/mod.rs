//! The effective configuration of a run: flags, environment, the YAML file and defaults merged
//! with precedence flag > env > file > default, each value remembering where it came from.
//!
//! Names, variables, keys and defaults are those of Coder's boundary (docs/interop.md, "Settings"),
//! so an existing `config.yaml`, module or `--allow` list means the same here.
//!
//! Every setting is one row of [`settings::SETTINGS`]. From that table come the clap flags and
//! their help suffixes (`cli.rs`), the YAML keys and the unknown-key error (`file.rs`), the
//! precedence loop ([`resolve`]), the rows of `boundary config`, and the table-driven tests.
//!
//! # Adding a setting
//!
//! 1. Add a field to [`Config`] (with a doc comment saying what it is for).
//! 2. Add one row to `SETTINGS` in `settings.rs`, where it should appear in `--help`: `key`
//!    (snake_case, shown by `boundary config`), `flag` (kebab-case), `env` (ours first, then any
//!    legacy names), `yaml` (None if the file may not set it), `shape` (`One`, `Switch` for a
//!    boolean, `List` for a repeatable flag, `Map` for `NAME=VALUE`), `value_name`, `help`
//!    (without the `[env: ...]` suffixes, which are generated), `default`, `examples` (three
//!    valid values, file/env/flag in that order, neighbours different) and `apply`: parse the text with a
//!    parser from `values.rs` (add one there if none fits; it must say what is accepted), store
//!    it in the field, return the text `boundary config` shows. Start from `..ROW` (or
//!    `..SWITCH` for booleans, which supplies the default false and the examples).
//! 3. Use the field where the run is wired (`run.rs`: the jail spec, proxy or audit options).
//! 4. Document it in the user docs (`docs/`) if users set it.
//!
//! Nothing else changes: the tests in `tests.rs` check every row (precedence across all
//! sources, presence in `--help`, in `boundary config` and in the file keys, a bad value
//! refused with the key and source named). A worked example, a list of Unix socket paths the
//! jail may connect to:
//!
//! ```text
//! // mod.rs, struct Config:
//!     /// Unix socket paths the jailed process may connect to.
//!     pub unix_socket_allow: Vec<PathBuf>,
//! // settings.rs, SETTINGS:
//!     Setting {
//!         key: "unix_socket_allow",
//!         flag: "allow-unix-socket",
//!         env: &["BOUNDARY_ALLOW_UNIX_SOCKET"],
//!         yaml: Some("unix_socket_allow"),
//!         shape: Shape::List { merge: true, env_split: Some(':') },
//!         value_name: "PATH",
//!         help: "Unix socket the jailed command may connect to; repeatable",
//!         apply: |c, v| {
//!             c.unix_socket_allow.push(parse_absolute_path(v)?);
//!             Ok(v.to_string())
//!         },
//!         examples: ["/run/y.sock", "/run/e.sock", "/run/f.sock"],
//!         ..ROW
//!     },
//! ```
//!
//! Every value is validated here, before a jail starts: a run that would fail on a value
//! fails at `resolve` with the key, the source and what is accepted.

pub mod cli;
pub mod file;
pub mod settings;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boundary_audit::Identity;
use boundary_proxy::rules::{Policy, Rule, RuleError};

use cli::Flags;
use file::{FileConfig, FileError};
use settings::{Fallback, Lookup, Problem, Setting, Shape, CONFIG_KEY, SETTINGS};
pub use values::{
    level_name, parse_bool, parse_duration, parse_resolve, AuditProtocol, Dur, LogLevel,
};

/// Where a value came from, for `boundary config` and for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    /// A rule of this built-in preset (named by a `presets` row of its own).
    Preset(&'static crate::presets::Preset),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(n) => write!(f, "flag --{n}"),
            Source::Env(n) => write!(f, "env {n}"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Preset(p) => f.write_str(&p.origin()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A configuration mistake; every message says which value, from where, and what is accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{source_name}: {error}")]
    Rule {
        source_name: String,
        error: RuleError,
    },
    #[error("{key} from {origin}: {message}")]
    Value {
        key: &'static str,
        origin: Source,
        message: String,
    },
    #[error("{name} is set but empty, and for {key} an empty value is refused (an empty rule would allow everything). Unset it, or give it a value such as {example:?}")]
    EmptyEnv {
        name: &'static str,
        key: &'static str,
        example: &'static str,
    },
    #[error("session correlation is enabled but there is no inject target: set CODER_AGENT_URL (inside a Coder workspace it is set for you) or give --session-id-inject-target")]
    NoInjectTarget,
}

/// Which jail backend runs the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailType {
    Nsjail,
    Landjail,
}

impl fmt::Display for JailType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JailType::Nsjail => "nsjail",
            JailType::Landjail => "landjail",
        })
    }
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_file: Option<PathBuf>,
    /// Rules in order: file, then BOUNDARY_ALLOW, then --allow, then the presets' rules.
    pub allow: Vec<String>,
    /// The presets named (`--preset`, `BOUNDARY_PRESETS`, `presets:`), each once, in order.
    pub presets: Vec<&'static crate::presets::Preset>,
    pub policy: Arc<Policy>,
    pub log_level: LogLevel,
    pub log_dir: Option<PathBuf>,
    pub proxy_port: u16,
    /// `--pprof`: serve plain-text statistics on loopback (Coder's flag name; no Go profiles).
    pub stats: bool,
    /// `--pprof-port`: the statistics endpoint's port.
    pub stats_port: u16,
    pub jail_type: JailType,
    pub use_real_dns: bool,
    pub no_user_namespace: bool,
    /// `--nested-sandboxes`: nsjail lets the target build sandboxes of its own (bubblewrap).
    pub nested_sandboxes: bool,
    pub disable_audit_logs: bool,
    pub log_proxy_socket_path: PathBuf,
    pub session_correlation: bool,
    pub inject_targets: Vec<String>,
    /// `--upstream-proxy`, checked; its `Debug` hides the password.
    pub upstream_proxy: Option<values::UpstreamProxy>,
    pub resolve: BTreeMap<String, IpAddr>,
    pub upstream_ca_file: Option<PathBuf>,
    /// Connect upstream to loopback, link-local and metadata addresses too.
    pub upstream_allow_local: bool,
    pub identity: Identity,
    pub audit_log: Option<PathBuf>,
    pub audit_protocol: AuditProtocol,
    pub audit_flush_interval: Duration,
    pub audit_queue_size: usize,
    pub audit_shutdown_timeout: Duration,
    /// Where records the agent has not taken wait, also for the next run.
    pub audit_spool_dir: PathBuf,
    pub audit_spool_size_mb: usize,
    pub landjail_deny_bind: bool,
    /// Jailed programs get boundary's filtered SSH agent (`ssh_agent: filtered`); otherwise none.
    pub ssh_agent_filtered: bool,
    /// Which Unix sockets outside the jail jailed programs may connect to.
    pub unix_sockets: boundary_jail::UnixSocketRules,
    /// Started by root: paths the target may change besides the built-in writable list.
    pub writable_paths: Vec<PathBuf>,
    /// Files and directories the target must not change (the script that starts boundary):
    /// read-only in nsjail, checked at exit in landjail (`tamper`).
    pub protect_paths: Vec<PathBuf>,
    /// Started by root: leave every host file writable to the target (warns at start).
    pub root_filesystem_writable: bool,
    pub idle_timeout: Duration,
    /// A response its client reads nothing of for this long is ended.
    pub client_stall_timeout: Duration,
    /// Where boundary keeps its CA: `$XDG_CONFIG_HOME/coder_boundary` or `~/.config/coder_boundary`.
    pub config_dir: PathBuf,
    /// (key, value as text, source) for every setting, in `--help` order.
    pub sources: Vec<(&'static str, String, Source)>,
}

impl Config {
    /// Where the value of setting `key` came from (its first row).
    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.sources.iter().find(|r| r.0 == key).map(|r| &r.2)
    }

    /// The directories boundary's configuration is read from: the config directory and the
    /// default config file's (`~/.config/coder_boundary`, another one when `XDG_CONFIG_HOME`
    /// is set). A jail must not create or change a file in either.
    pub fn config_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config_dir.clone()];
        let home = std::env::var_os("HOME").map(|h| h.to_string_lossy().into_owned());
        if let Some(dir) =
            home.and_then(|h| default_config_file(&h).parent().map(Path::to_path_buf))
        {
            if dir != self.config_dir {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// The starting point of [`resolve`]: every row then writes its value or its default.
    fn blank(config_dir: PathBuf) -> Self {
        Config {
            config_file: None,
            allow: Vec::new(),
            presets: Vec::new(),
            policy: Arc::new(Policy::from_rules(Vec::new())),
            log_level: LogLevel::default(),
            log_dir: None,
            proxy_port: 0,
            stats: false,
            stats_port: 0,
            jail_type: JailType::Nsjail,
            use_real_dns: false,
            no_user_namespace: false,
            nested_sandboxes: false,
            disable_audit_logs: false,
            log_proxy_socket_path: PathBuf::new(),
            session_correlation: false,
            inject_targets: Vec::new(),
            upstream_proxy: None,
            resolve: BTreeMap::new(),
            upstream_ca_file: None,
            upstream_allow_local: false,
            identity: Identity::default(),
            audit_log: None,
            audit_protocol: AuditProtocol::default(),
            audit_flush_interval: Duration::ZERO,
            audit_queue_size: 0,
            audit_shutdown_timeout: Duration::ZERO,
            audit_spool_dir: PathBuf::new(),
            audit_spool_size_mb: 0,
            landjail_deny_bind: false,
            ssh_agent_filtered: false,
            unix_sockets: boundary_jail::UnixSocketRules::default(),
            writable_paths: Vec::new(),
            protect_paths: Vec::new(),
            root_filesystem_writable: false,
            idle_timeout: Duration::ZERO,
            client_stall_timeout: Duration::ZERO,
            config_dir,
            sources: Vec::new(),
        }
    }
}

/// Reads the process environment; tests pass their own lookup instead.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Merges every source into the effective configuration: one pass over [`SETTINGS`].
pub fn resolve(flags: &Flags, env: &Lookup) -> Result<Config, ConfigError> {
    let nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
    let home = nonempty("HOME");
    let config_dir = match nonempty("XDG_CONFIG_HOME") {
        Some(x) => Path::new(&x).join("coder_boundary"),
        None => Path::new(home.as_deref().unwrap_or("/root")).join(".config/coder_boundary"),
    };
    let mut c = Config::blank(config_dir);
    let file = load_file(&mut c, flags, env, home.as_deref())?;
    let file_source = Source::File(c.config_file.clone().unwrap_or_default());
    for s in SETTINGS.iter().filter(|s| s.key != CONFIG_KEY) {
        let mut picked = pick(s, flags, env, &file, &file_source)?;
        if picked.is_empty() {
            match s.default {
                Fallback::Text(t) => picked.push((t.to_string(), Source::Default)),
                Fallback::Duration(d) => picked.push((Dur(d).to_string(), Source::Default)),
                Fallback::Derived(derive, _) => picked.extend(derive(env, &c)?),
                Fallback::Unset(_) => {}
            }
        }
        if picked.is_empty() && matches!(s.shape, Shape::One | Shape::Switch) {
            c.sources.push((s.key, "(unset)".into(), Source::Default));
        }
        for (text, source) in picked {
            let shown = (s.apply)(&mut c, &text).map_err(|p| refused(s, &source, p, &text))?;
            c.sources.push((s.key, shown, source));
        }
    }
    check_upstream_proxy_is_not_boundary(&c)?;
    add_preset_rules(&mut c);
    // Every rule parsed once already (in its row's `apply`, or the preset's unit test); this
    // builds the policy in order, each rule carrying where it came from.
    let rules = c
        .sources
        .iter()
        .filter(|r| r.0 == settings::ALLOW_KEY)
        .map(|(_, text, source)| Rule::parse(text).map(|r| r.with_origin(source.to_string())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::Rule {
            source_name: "allow rule".into(),
            error,
        })?;
    c.policy = Arc::new(Policy::from_rules(rules));
    Ok(c)
}

/// The rules of the presets named, after the user's own: one `allow` row each (source: the
/// preset), right after the `presets` rows, so `boundary config` shows them together.
fn add_preset_rules(c: &mut Config) {
    let at = c
        .sources
        .iter()
        .rposition(|r| r.0 == settings::PRESETS_KEY)
        .map_or(c.sources.len(), |i| i + 1);
    let rows: Vec<_> = c
        .presets
        .iter()
        .flat_map(|&p| {
            p.rules
                .iter()
                .map(move |r| (settings::ALLOW_KEY, r.clone(), Source::Preset(p)))
        })
        .collect();
    c.allow.extend(rows.iter().map(|r| r.1.clone()));
    c.sources.splice(at..at, rows);
}

/// An upstream proxy on boundary's own listener would send every request back to boundary.
fn check_upstream_proxy_is_not_boundary(c: &Config) -> Result<(), ConfigError> {
    let Some(up) = c.upstream_proxy.as_ref() else {
        return Ok(());
    };
    if !up.is_own_listener(c.proxy_port) {
        return Ok(());
    }
    let origin = c
        .source_of("upstream_proxy")
        .cloned()
        .unwrap_or(Source::Default);
    Err(ConfigError::Value {
        key: "upstream_proxy",
        origin,
        message: format!(
            "{:?} is boundary's own proxy listener (port {} on this machine), so every request \
             would loop back into boundary; give the corporate proxy's address, or move \
             boundary with --proxy-port",
            values::hide_password(&up.url),
            c.proxy_port
        ),
    })
}

/// The config file read when none is given, whether it exists or not (`boundary learn
/// --apply` creates it).
pub fn default_config_file(home: &str) -> PathBuf {
    Path::new(home).join(".config/coder_boundary/config.yaml")
}

/// The config file: explicit (flag or env, must exist) or the default one (only if present).
/// Records the `config` row and returns the file's values.
fn load_file(
    c: &mut Config,
    flags: &Flags,
    env: &Lookup,
    home: Option<&str>,
) -> Result<FileConfig, ConfigError> {
    let row = settings::setting(CONFIG_KEY).expect("the table has the config row");
    let explicit = pick(row, flags, env, &FileConfig::new(), &Source::Default)?.pop();
    let (path, source) = match explicit {
        Some((p, s)) => (Some(PathBuf::from(p)), s),
        None => {
            let default = home.map(default_config_file);
            (default.filter(|p| p.exists()), Source::Default)
        }
    };
    let Some(path) = path else {
        c.sources.push((row.key, "(none)".into(), source));
        return Ok(FileConfig::new());
    };
    let file = file::load(&path)?;
    let text = path.display().to_string();
    let shown = (row.apply)(c, &text).map_err(|p| refused(row, &source, p, &text))?;
    c.sources.push((row.key, shown, source));
    Ok(file)
}

/// The values of one setting from the highest source that has it (or, for merged lists, from
/// every source: file, then env, then flags), each with its source.
fn pick(
    s: &Setting,
    flags: &Flags,
    env: &Lookup,
    file: &FileConfig,
    file_source: &Source,
) -> Result<Vec<(String, Source)>, ConfigError> {
    let from_flags: Vec<_> = flags
        .get(s.key)
        .iter()
        .map(|v| (v.clone(), Source::Flag(s.flag)))
        .collect();
    let from_env = env_values(s, env)?;
    let from_file: Vec<_> = file
        .get(s.key)
        .into_iter()
        .flatten()
        .map(|v| (v.clone(), file_source.clone()))
        .collect();
    let first_of = |sources: [Vec<(String, Source)>; 3]| {
        sources
            .into_iter()
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    };
    Ok(match s.shape {
        Shape::One | Shape::Switch => {
            let last_flag = from_flags.last().cloned().into_iter().collect();
            let first_file = from_file.first().cloned().into_iter().collect();
            first_of([last_flag, from_env, first_file])
        }
        Shape::List { merge: false, .. } => first_of([from_flags, from_env, from_file]),
        Shape::List { merge: true, .. } | Shape::Map => [from_file, from_env, from_flags]
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// The first of the row's variables that is set and not empty, split as the row says.
fn env_values(s: &Setting, env: &Lookup) -> Result<Vec<(String, Source)>, ConfigError> {
    for &name in s.env {
        let Some(v) = env(name) else { continue };
        if v.trim().is_empty() {
            if s.empty_env_is_error {
                return Err(ConfigError::EmptyEnv {
                    name,
                    key: s.key,
                    example: s.examples[0],
                });
            }
            continue;
        }
        let split = match s.shape {
            Shape::List { env_split, .. } => env_split,
            Shape::Map => Some(','),
            Shape::One | Shape::Switch => None,
        };
        let items: Vec<String> = match split {
            Some(c) => v
                .split(c)
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
            None => vec![v],
        };
        return Ok(items.into_iter().map(|x| (x, Source::Env(name))).collect());
    }
    Ok(Vec::new())
}

/// The error for a value `apply` refused (`text`): which setting, from where (a file's line
/// too), and why.
fn refused(s: &Setting, source: &Source, problem: Problem, text: &str) -> ConfigError {
    let line = match source {
        Source::File(p) => file::line_of(p, text),
        _ => None,
    };
    match problem {
        Problem::Value(message) => ConfigError::Value {
            key: s.key,
            origin: source.clone(),
            message: match line {
                Some(n) => format!("{message} (line {n})"),
                None => message,
            },
        },
        Problem::Rule(what, error) => {
            let place = match source {
                Source::Flag(n) => format!("--{n}"),
                Source::Env(n) => n.to_string(),
                Source::File(p) => match line {
                    Some(n) => format!("config file {} line {n}", p.display()),
                    None => format!("config file {}", p.display()),
                },
                Source::Preset(p) => p.origin(),
                Source::Default => "the default".into(),
            };
            ConfigError::Rule {
                source_name: format!("{what} from {place}"),
                error,
            }
        }
    }
}

#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;
