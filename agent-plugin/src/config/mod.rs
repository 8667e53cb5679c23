//! The effective configuration of a run: flags, environment, the YAML file and defaults merged
//! with precedence flag > env > file > default, each value remembering where it came from.
//!
//! Names, variables, keys and defaults are those of Coder's boundary (INTEROP section 1), so an
//! existing `config.yaml`, module or `--allow` list means the same here.

pub mod cli;
pub mod file;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boundary_audit::Identity;
pub use boundary_audit::{AuditProtocol, LogLevel};
use boundary_proxy::rules::{Policy, RuleError};

use cli::Flags;
use file::{FileConfig, FileError};

/// Where a value came from, for `boundary config` and for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(n) => write!(f, "flag --{n}"),
            Source::Env(n) => write!(f, "env {n}"),
            Source::File(p) => write!(f, "file {}", p.display()),
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
    #[error("BOUNDARY_ALLOW is set but empty; an empty rule would allow everything. Unset it, or give it one rule such as \"domain=github.com\"")]
    EmptyEnvRule,
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
    /// Rules in order: file, then BOUNDARY_ALLOW, then --allow.
    pub allow: Vec<String>,
    pub policy: Arc<Policy>,
    pub log_level: LogLevel,
    pub log_dir: Option<PathBuf>,
    pub proxy_port: u16,
    pub pprof: bool,
    pub pprof_port: u16,
    pub jail_type: JailType,
    pub use_real_dns: bool,
    pub no_user_namespace: bool,
    pub disable_audit_logs: bool,
    pub log_proxy_socket_path: PathBuf,
    pub session_correlation: bool,
    pub inject_targets: Vec<String>,
    pub upstream_proxy: Option<String>,
    pub resolve: BTreeMap<String, IpAddr>,
    pub upstream_ca_file: Option<PathBuf>,
    pub identity: Identity,
    pub audit_log: Option<PathBuf>,
    pub audit_protocol: AuditProtocol,
    pub audit_flush_interval: Duration,
    pub audit_queue_size: usize,
    pub audit_shutdown_timeout: Duration,
    pub landjail_deny_bind: bool,
    pub idle_timeout: Duration,
    /// Where boundary keeps its CA: `$XDG_CONFIG_HOME/coder_boundary` or `~/.config/coder_boundary`.
    pub config_dir: PathBuf,
    /// (key, value as text, source) for every setting, in `--help` order.
    pub sources: Vec<(&'static str, String, Source)>,
}

/// Reads the process environment; tests pass their own lookup instead.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

struct Resolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: FileConfig,
    file_path: Option<PathBuf>,
    sources: Vec<(&'static str, String, Source)>,
}

impl Resolver<'_> {
    /// Non-empty environment value; an empty variable counts as unset.
    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// flag > env (first set name) > file > none.
    fn pick(
        &self,
        flag_name: &'static str,
        flag: Option<String>,
        envs: &[&'static str],
        file: Option<String>,
    ) -> Option<(String, Source)> {
        if let Some(v) = flag {
            return Some((v, Source::Flag(flag_name)));
        }
        for &e in envs {
            if let Some(v) = self.env(e) {
                return Some((v, Source::Env(e)));
            }
        }
        file.map(|v| (v, Source::File(self.file_path.clone().unwrap_or_default())))
    }

    /// Picks a value and parses it, or takes the default; records the source either way.
    fn value<T: fmt::Display>(
        &mut self,
        key: &'static str,
        picked: Option<(String, Source)>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.value_with(key, picked, default, parse, |v| v.to_string())
    }

    /// [`Self::value`] for types shown by a function rather than `Display`.
    fn value_with<T>(
        &mut self,
        key: &'static str,
        picked: Option<(String, Source)>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
        show: impl Fn(&T) -> String,
    ) -> Result<T, ConfigError> {
        let (v, source) = match picked {
            Some((text, source)) => {
                let v = parse(&text).map_err(|message| ConfigError::Value {
                    key,
                    origin: source.clone(),
                    message,
                })?;
                (v, source)
            }
            None => (default, Source::Default),
        };
        self.sources.push((key, show(&v), source));
        Ok(v)
    }

    fn optional(&mut self, key: &'static str, picked: Option<(String, Source)>) -> Option<String> {
        match picked {
            Some((v, s)) => {
                self.sources.push((key, v.clone(), s));
                Some(v)
            }
            None => {
                self.sources.push((key, "(unset)".into(), Source::Default));
                None
            }
        }
    }
}

fn text(s: &Option<file::Scalar>) -> Option<String> {
    s.as_ref().map(file::Scalar::to_text)
}

fn path_text(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

/// `true/false/1/0` in any case, as Coder's boundary accepts.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true, false, 1 or 0")),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not a TCP port; use a number from 1 to 65535"
        )),
        Ok(p) => Ok(p),
    }
}

/// `250ms`, `1s`, `5m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 500ms, 1s, 5m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {unit:?}; use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Dur(Duration);
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a log level; use error, warn, info or debug"))
}

/// Lowercase name, as written in flags and files.
pub fn level_name(l: &LogLevel) -> String {
    format!("{l:?}").to_ascii_lowercase()
}

fn parse_jail(s: &str) -> Result<JailType, String> {
    match s {
        "nsjail" => Ok(JailType::Nsjail),
        "landjail" => Ok(JailType::Landjail),
        _ => Err(format!(
            "{s:?} is not a jail type; use nsjail (namespaces) or landjail (Landlock)"
        )),
    }
}

fn parse_protocol(s: &str) -> Result<AuditProtocol, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an audit protocol; use auto, v1 or v2"))
}

fn protocol_name(p: &AuditProtocol) -> String {
    format!("{p:?}").to_ascii_lowercase()
}

fn parse_uuid(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a UUID; pass the id from data.coder_workspace.me (e.g. f2bd4e9f-7e27-49fc-961e-be4d1c2aa987)"))
}

fn parse_upstream_proxy(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// proxy URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!(
            "{s:?} has no host; write e.g. http://proxy.corp:3128"
        ));
    }
    Ok(s.to_string())
}

/// One `NAME=ADDR` pair of `--resolve`.
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=ADDR; write e.g. api.example.com=127.0.0.1"))?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(format!("{s:?} has an empty name"));
    }
    let addr_t = addr.trim().trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr_t
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address; --resolve takes NAME=IP"))?;
    Ok((name, ip))
}

/// The agent's audit socket: `$TMPDIR/boundary-audit.sock`, or `/tmp/...` without TMPDIR.
fn default_socket(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let dir = env("TMPDIR")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    Path::new(&dir).join("boundary-audit.sock")
}

/// Host of `CODER_AGENT_URL`, for the derived correlation target.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let auth = auth.rsplit_once('@').map(|x| x.1).unwrap_or(auth);
    let host = match auth.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|x| x.0)?,
        None => auth.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Merges every source into the effective configuration.
pub fn resolve(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let home = env("HOME").filter(|h| !h.is_empty());
    let config_dir = match env("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        Some(x) => Path::new(&x).join("coder_boundary"),
        None => Path::new(home.as_deref().unwrap_or("/root")).join(".config/coder_boundary"),
    };
    // The file: explicit (must exist) or the default one (only if present).
    let explicit = flags
        .config
        .clone()
        .map(|p| (p, Source::Flag("config")))
        .or_else(|| {
            env("BOUNDARY_CONFIG")
                .filter(|v| !v.is_empty())
                .map(|p| (PathBuf::from(p), Source::Env("BOUNDARY_CONFIG")))
        });
    let (file, file_path, file_source) = match explicit {
        Some((p, s)) => (file::load(&p)?, Some(p), s),
        None => {
            let default = home
                .as_ref()
                .map(|h| Path::new(h).join(".config/coder_boundary/config.yaml"));
            match default {
                Some(p) if p.exists() => (file::load(&p)?, Some(p), Source::Default),
                _ => (FileConfig::default(), None, Source::Default),
            }
        }
    };
    let mut r = Resolver {
        env,
        file,
        file_path: file_path.clone(),
        sources: Vec::new(),
    };
    r.sources.push((
        "config",
        file_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(none)".into()),
        file_source,
    ));

    // Rules: file, env, flags — merged, not overridden.
    let mut allow: Vec<(String, String)> = Vec::new();
    if let Some(list) = &r.file.allowlist {
        let src = format!("config file {}", file_path.as_ref().unwrap().display());
        allow.extend(list.iter().map(|x| (x.clone(), src.clone())));
    }
    if let Some(v) = (r.env)("BOUNDARY_ALLOW") {
        if v.trim().is_empty() {
            return Err(ConfigError::EmptyEnvRule);
        }
        allow.push((v, "BOUNDARY_ALLOW".into()));
    }
    allow.extend(
        flags
            .allow
            .iter()
            .map(|x| (x.clone(), "--allow".to_string())),
    );
    let mut parsed = Vec::with_capacity(allow.len());
    for (text, src) in &allow {
        let rule = boundary_proxy::rules::Rule::parse(text).map_err(|error| ConfigError::Rule {
            source_name: src.clone(),
            error,
        })?;
        parsed.push(rule);
    }
    for (text, src) in &allow {
        r.sources
            .push(("allow", text.clone(), source_of(src, &file_path)));
    }
    let policy = Arc::new(Policy::from_rules(parsed));
    let allow: Vec<String> = allow.into_iter().map(|x| x.0).collect();

    let f = r.file.clone();
    let p = r.pick(
        "log-level",
        flags.log_level.clone(),
        &["BOUNDARY_LOG_LEVEL"],
        text(&f.log_level),
    );
    let log_level = r.value_with("log_level", p, LogLevel::Warn, parse_level, level_name)?;
    let p = r.pick(
        "log-dir",
        path_text(&flags.log_dir),
        &["BOUNDARY_LOG_DIR"],
        path_text(&f.log_dir),
    );
    let log_dir = r.optional("log_dir", p).map(PathBuf::from);
    let p = r.pick(
        "proxy-port",
        flags.proxy_port.clone(),
        &["PROXY_PORT"],
        text(&f.proxy_port),
    );
    let proxy_port = r.value("proxy_port", p, 8080, parse_port)?;
    let p = r.pick(
        "pprof",
        flags.pprof.clone(),
        &["BOUNDARY_PPROF"],
        text(&f.pprof_enabled),
    );
    let pprof = r.value("pprof_enabled", p, false, parse_bool)?;
    let p = r.pick(
        "pprof-port",
        flags.pprof_port.clone(),
        &["BOUNDARY_PPROF_PORT"],
        text(&f.pprof_port),
    );
    let pprof_port = r.value("pprof_port", p, 6060, parse_port)?;
    let p = r.pick(
        "jail-type",
        flags.jail_type.clone(),
        &["BOUNDARY_JAIL_TYPE"],
        text(&f.jail_type),
    );
    let jail_type = r.value("jail_type", p, JailType::Nsjail, parse_jail)?;
    let p = r.pick(
        "use-real-dns",
        flags.use_real_dns.clone(),
        &["BOUNDARY_USE_REAL_DNS"],
        text(&f.use_real_dns),
    );
    let use_real_dns = r.value("use_real_dns", p, false, parse_bool)?;
    let p = r.pick(
        "no-user-namespace",
        flags.no_user_namespace.clone(),
        &["BOUNDARY_NO_USER_NAMESPACE"],
        text(&f.no_user_namespace),
    );
    let no_user_namespace = r.value("no_user_namespace", p, false, parse_bool)?;
    let p = r.pick(
        "disable-audit-logs",
        flags.disable_audit_logs.clone(),
        &["DISABLE_AUDIT_LOGS"],
        text(&f.disable_audit_logs),
    );
    let disable_audit_logs = r.value("disable_audit_logs", p, false, parse_bool)?;
    let p = r.pick(
        "log-proxy-socket-path",
        path_text(&flags.log_proxy_socket_path),
        &["CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH"],
        None,
    );
    let default_sock = default_socket(env).display().to_string();
    let log_proxy_socket_path =
        PathBuf::from(r.value("log_proxy_socket_path", p, default_sock, |s| {
            Ok(s.to_string())
        })?);
    let p = r.pick(
        "enable-session-correlation",
        flags.enable_session_correlation.clone(),
        &["BOUNDARY_SESSION_CORRELATION_ENABLED"],
        text(&f.session_correlation_enabled),
    );
    let session_correlation = r.value("session_correlation_enabled", p, false, parse_bool)?;

    // Inject targets: flags, else env, else file, else derived from CODER_AGENT_URL.
    let mut inject_targets: Vec<(String, Source)> = if !flags.session_id_inject_target.is_empty() {
        flags
            .session_id_inject_target
            .iter()
            .map(|t| (t.clone(), Source::Flag("session-id-inject-target")))
            .collect()
    } else if let Some(v) = r.env("BOUNDARY_SESSION_ID_INJECT_TARGET") {
        vec![(v, Source::Env("BOUNDARY_SESSION_ID_INJECT_TARGET"))]
    } else if let Some(list) = &f.session_id_inject_targets {
        list.iter()
            .map(|t| {
                (
                    t.clone(),
                    Source::File(file_path.clone().unwrap_or_default()),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    if session_correlation && inject_targets.is_empty() {
        let host = r
            .env("CODER_AGENT_URL")
            .and_then(|u| url_host(&u))
            .ok_or(ConfigError::NoInjectTarget)?;
        inject_targets.push((
            format!("domain={host} path=/api/v2/aibridge/*,/api/v2/ai-gateway/*"),
            Source::Env("CODER_AGENT_URL"),
        ));
    }
    for (t, s) in &inject_targets {
        boundary_proxy::rules::Rule::parse(t).map_err(|error| ConfigError::Rule {
            source_name: format!("session id inject target from {s}"),
            error,
        })?;
        r.sources
            .push(("session_id_inject_targets", t.clone(), s.clone()));
    }
    let inject_targets = inject_targets.into_iter().map(|x| x.0).collect();

    let p = r.pick(
        "upstream-proxy",
        flags.upstream_proxy.clone(),
        &["BOUNDARY_UPSTREAM_PROXY"],
        text(&f.upstream_proxy),
    );
    let upstream_proxy = match p {
        Some((v, s)) => Some(r.value(
            "upstream_proxy",
            Some((v, s)),
            String::new(),
            parse_upstream_proxy,
        )?),
        None => r.optional("upstream_proxy", None),
    };

    // --resolve: file map, then env list, then flags; a later source overrides a name.
    let mut resolve = BTreeMap::new();
    let mut add_resolve =
        |r: &mut Resolver, item: String, src: Source| -> Result<(), ConfigError> {
            let (name, ip) = parse_resolve(&item).map_err(|message| ConfigError::Value {
                key: "resolve",
                origin: src.clone(),
                message,
            })?;
            r.sources.push(("resolve", format!("{name}={ip}"), src));
            resolve.insert(name, ip);
            Ok(())
        };
    for (name, addr) in f.resolve.clone().unwrap_or_default() {
        add_resolve(
            &mut r,
            format!("{name}={addr}"),
            Source::File(file_path.clone().unwrap_or_default()),
        )?;
    }
    if let Some(v) = r.env("BOUNDARY_RESOLVE") {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            add_resolve(&mut r, item.to_string(), Source::Env("BOUNDARY_RESOLVE"))?;
        }
    }
    for item in &flags.resolve {
        add_resolve(&mut r, item.clone(), Source::Flag("resolve"))?;
    }

    let p = r.pick(
        "upstream-ca-file",
        path_text(&flags.upstream_ca_file),
        &["BOUNDARY_UPSTREAM_CA_FILE"],
        path_text(&f.upstream_ca_file),
    );
    let upstream_ca_file = r.optional("upstream_ca_file", p).map(PathBuf::from);

    let id = |r: &mut Resolver,
              key: &'static str,
              flag_name: &'static str,
              flag: &Option<String>,
              envs: &[&'static str],
              file: &Option<file::Scalar>,
              uuid: bool|
     -> Result<Option<String>, ConfigError> {
        let p = r.pick(flag_name, flag.clone(), envs, text(file));
        match p {
            Some((v, s)) if uuid => Ok(Some(r.value(
                key,
                Some((v, s)),
                String::new(),
                parse_uuid,
            )?)),
            p => Ok(r.optional(key, p)),
        }
    };
    let identity = Identity {
        workspace_id: id(
            &mut r,
            "workspace_id",
            "workspace-id",
            &flags.workspace_id,
            &["BOUNDARY_WORKSPACE_ID"],
            &f.workspace_id,
            true,
        )?,
        workspace_name: id(
            &mut r,
            "workspace_name",
            "workspace-name",
            &flags.workspace_name,
            &["BOUNDARY_WORKSPACE_NAME", "CODER_WORKSPACE_NAME"],
            &f.workspace_name,
            false,
        )?,
        owner: id(
            &mut r,
            "workspace_owner",
            "workspace-owner",
            &flags.workspace_owner,
            &["BOUNDARY_WORKSPACE_OWNER", "CODER_WORKSPACE_OWNER_NAME"],
            &f.workspace_owner,
            false,
        )?,
        template_id: id(
            &mut r,
            "template_id",
            "template-id",
            &flags.template_id,
            &["BOUNDARY_TEMPLATE_ID"],
            &f.template_id,
            true,
        )?,
        template_version_id: id(
            &mut r,
            "template_version_id",
            "template-version-id",
            &flags.template_version_id,
            &["BOUNDARY_TEMPLATE_VERSION_ID"],
            &f.template_version_id,
            true,
        )?,
        agent_name: id(
            &mut r,
            "agent_name",
            "agent-name",
            &flags.agent_name,
            &["BOUNDARY_AGENT_NAME", "CODER_WORKSPACE_AGENT_NAME"],
            &f.agent_name,
            false,
        )?,
    };
    // CODER_* variables are environment too, so they outrank the file like BOUNDARY_* ones.

    let p = r.pick(
        "audit-log",
        path_text(&flags.audit_log),
        &["BOUNDARY_AUDIT_LOG"],
        path_text(&f.audit_log),
    );
    let audit_log = r.optional("audit_log", p).map(PathBuf::from);
    let p = r.pick(
        "audit-protocol",
        flags.audit_protocol.clone(),
        &["BOUNDARY_AUDIT_PROTOCOL"],
        text(&f.audit_protocol),
    );
    let audit_protocol = r.value_with(
        "audit_protocol",
        p,
        AuditProtocol::Auto,
        parse_protocol,
        protocol_name,
    )?;
    let p = r.pick(
        "audit-flush-interval",
        flags.audit_flush_interval.clone(),
        &["BOUNDARY_AUDIT_FLUSH_INTERVAL"],
        text(&f.audit_flush_interval),
    );
    let audit_flush_interval = r.value("audit_flush_interval", p, Dur(Duration::from_secs(1)), |s| {
        let d = parse_duration(s)?;
        if d.is_zero() || d > Duration::from_secs(1) {
            return Err(format!("{s:?}: the flush interval must be more than 0 and at most 1s, so records reach the agent promptly"));
        }
        Ok(Dur(d))
    })?.0;
    let p = r.pick(
        "audit-queue-size",
        flags.audit_queue_size.clone(),
        &["BOUNDARY_AUDIT_QUEUE_SIZE"],
        text(&f.audit_queue_size),
    );
    let audit_queue_size = r.value("audit_queue_size", p, 10_000usize, |s| {
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{s:?} is not a positive number of records")),
        }
    })?;
    let p = r.pick(
        "audit-shutdown-timeout",
        flags.audit_shutdown_timeout.clone(),
        &["BOUNDARY_AUDIT_SHUTDOWN_TIMEOUT"],
        text(&f.audit_shutdown_timeout),
    );
    let audit_shutdown_timeout = r
        .value(
            "audit_shutdown_timeout",
            p,
            Dur(Duration::from_secs(5)),
            |s| parse_duration(s).map(Dur),
        )?
        .0;
    let p = r.pick(
        "landjail-deny-bind",
        flags.landjail_deny_bind.clone(),
        &["BOUNDARY_LANDJAIL_DENY_BIND"],
        text(&f.landjail_deny_bind),
    );
    let landjail_deny_bind = r.value("landjail_deny_bind", p, false, parse_bool)?;
    let p = r.pick(
        "idle-timeout",
        flags.idle_timeout.clone(),
        &["BOUNDARY_IDLE_TIMEOUT"],
        text(&f.idle_timeout),
    );
    let idle_timeout = r
        .value(
            "idle_timeout",
            p,
            Dur(Duration::from_secs(300)),
            |s| match parse_duration(s)? {
                d if d.is_zero() => Err(format!("{s:?}: the idle timeout must be more than 0")),
                d => Ok(Dur(d)),
            },
        )?
        .0;

    Ok(Config {
        config_file: file_path,
        allow,
        policy,
        log_level,
        log_dir,
        proxy_port,
        pprof,
        pprof_port,
        jail_type,
        use_real_dns,
        no_user_namespace,
        disable_audit_logs,
        log_proxy_socket_path,
        session_correlation,
        inject_targets,
        upstream_proxy,
        resolve,
        upstream_ca_file,
        identity,
        audit_log,
        audit_protocol,
        audit_flush_interval,
        audit_queue_size,
        audit_shutdown_timeout,
        landjail_deny_bind,
        idle_timeout,
        config_dir,
        sources: r.sources,
    })
}

fn source_of(src: &str, file: &Option<PathBuf>) -> Source {
    match src {
        "BOUNDARY_ALLOW" => Source::Env("BOUNDARY_ALLOW"),
        "--allow" => Source::Flag("allow"),
        _ => Source::File(file.clone().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests;
