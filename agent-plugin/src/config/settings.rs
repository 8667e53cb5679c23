//! The table of settings: every flag, variable and YAML key of `boundary`, declared once.
//!
//! Each [`Setting`] row says how the value is named in every source, what it defaults to, how
//! its help reads, and how its text becomes a field of [`Config`] (`apply`, which also returns
//! the text `boundary config` shows). The flags (`cli.rs`), the file keys (`file.rs`), the
//! precedence loop (`resolve` in `mod.rs`) and the tests all read this table.

use std::path::PathBuf;
use std::time::Duration;

use boundary_proxy::rules::{Rule, RuleError};

use super::values::*;
use super::{Config, ConfigError, Source};

/// How a setting takes values from its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value; the highest source wins (flag > env > file > default). YAML: a scalar.
    One,
    /// A boolean: `--flag` alone means true, `--flag=false` is allowed. YAML: a scalar.
    Switch,
    /// A repeatable flag. YAML: a list. With `merge` every source adds its values (file, then
    /// env, then flags); without it the highest source that has any replaces the others.
    /// `env_split` cuts the variable into several values (None: the whole variable is one).
    List {
        merge: bool,
        env_split: Option<char>,
    },
    /// Repeatable `NAME=VALUE`. YAML: a map `NAME: VALUE`. Sources merge; the environment is
    /// comma-separated; a later source overrides a name.
    Map,
}

/// What a setting is when no source gives it.
#[derive(Debug, Clone, Copy)]
pub enum Fallback {
    /// This text, parsed by `apply` like any other source (so it is checked too).
    Text(&'static str),
    /// A duration, written where another crate keeps its default.
    Duration(Duration),
    /// No value. `boundary config` shows `(unset)`; the note, if any, goes into the help.
    Unset(Option<&'static str>),
    /// Computed from the environment and the settings resolved before it; the note is for help.
    Derived(Derive, &'static str),
}

/// Computes a default: the values and where they came from (none for no default), or a
/// configuration error.
pub type Derive = fn(&Lookup, &Config) -> Result<Vec<(String, Source)>, ConfigError>;

/// Reads an environment variable (the process environment, or a test's map).
pub type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Why a value was refused by `apply`.
#[derive(Debug)]
pub enum Problem {
    /// The value is malformed; the message says what is accepted.
    Value(String),
    /// The value is an allow rule that does not parse; the text names what the rule is for.
    Rule(&'static str, RuleError),
}

impl From<String> for Problem {
    fn from(s: String) -> Self {
        Problem::Value(s)
    }
}

/// Parses one value into the configuration and returns it as `boundary config` shows it.
pub type Apply = fn(&mut Config, &str) -> Result<String, Problem>;

/// One setting, in every source it can come from.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The name `boundary config` shows and errors use.
    pub key: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// Variables in the order they are consulted (ours first, then Coder's legacy names).
    pub env: &'static [&'static str],
    /// The key in the YAML file, or None for settings the file cannot set.
    pub yaml: Option<&'static str>,
    pub shape: Shape,
    /// Placeholder in `--help`, e.g. `PORT`.
    pub value_name: &'static str,
    /// One or two sentences for `--help`; the env/yaml/default suffixes are added from the row.
    pub help: &'static str,
    pub default: Fallback,
    pub apply: Apply,
    /// A set but empty variable is an error (instead of counting as unset).
    pub empty_env_is_error: bool,
    /// Three valid values (file, env, flag; neighbours differ) for the table-driven tests.
    pub examples: [&'static str; 3],
    /// A live reload (SIGHUP, a change to the config file) applies a new value while the run
    /// goes on. Only what the policy is built from can; a change to any other setting is
    /// reported as needing a restart, and the running value stays.
    pub live: bool,
}

/// Field values every row starts from; rows override what they need with `..ROW`.
const ROW: Setting = Setting {
    key: "",
    flag: "",
    env: &[],
    yaml: None,
    shape: Shape::One,
    value_name: "VALUE",
    help: "",
    default: Fallback::Unset(None),
    apply: |_, v| Ok(v.to_string()),
    empty_env_is_error: false,
    examples: ["", "", ""],
    live: false,
};

/// A switch row (boolean, default false).
const SWITCH: Setting = Setting {
    shape: Shape::Switch,
    value_name: "BOOL",
    default: Fallback::Text("false"),
    examples: ["true", "false", "1"],
    ..ROW
};

/// The key of the config-file setting, which `resolve` reads before all the others.
pub const CONFIG_KEY: &str = "config";
/// The key of the allow rules: `resolve` builds the policy from these rows.
pub const ALLOW_KEY: &str = "allow";
/// The key of the presets: `resolve` adds their rules after these rows.
pub const PRESETS_KEY: &str = "presets";

/// Every setting, in `--help` and `boundary config` order.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: CONFIG_KEY,
        flag: "config",
        env: &["BOUNDARY_CONFIG"],
        value_name: "PATH",
        help: "YAML config file; a running boundary loads its allowlist and presets again when it \
               changes or on SIGHUP",
        default: Fallback::Unset(Some("~/.config/coder_boundary/config.yaml, if present")),
        apply: |c, v| {
            c.config_file = Some(PathBuf::from(v));
            Ok(v.to_string())
        },
        examples: ["/f.yaml", "/e.yaml", "/y.yaml"],
        ..ROW
    },
    Setting {
        key: ALLOW_KEY,
        flag: "allow",
        env: &["BOUNDARY_ALLOW"],
        yaml: Some("allowlist"),
        shape: Shape::List {
            merge: true,
            env_split: None,
        },
        value_name: "RULE",
        help: "Allow rule, e.g. \"method=GET domain=*.github.com path=/api/*\"; repeat for more \
               rules. One value is one rule, never split on commas",
        apply: |c, v| {
            Rule::parse(v).map_err(|e| Problem::Rule("allow rule", e))?;
            c.allow.push(v.to_string());
            Ok(v.to_string())
        },
        empty_env_is_error: true,
        examples: ["domain=y.test", "domain=e.test", "domain=f.test"],
        live: true,
        ..ROW
    },
    Setting {
        key: PRESETS_KEY,
        flag: "preset",
        env: &["BOUNDARY_PRESETS"],
        yaml: Some("presets"),
        shape: Shape::List {
            merge: true,
            env_split: Some(','),
        },
        value_name: "NAME",
        help: "A built-in allowlist, e.g. npm, pypi, github or claude-code (`boundary presets` \
               lists them with their rules); NAME@VERSION insists on that version. Its rules \
               come after your own. Repeatable",
        apply: |c, v| {
            let p = crate::presets::find(v)?;
            if !c.presets.contains(&p) {
                c.presets.push(p);
            }
            Ok(p.label())
        },
        examples: ["npm", "pypi@1", "crates"],
        live: true,
        ..ROW
    },
    Setting {
        key: "log_level",
        flag: "log-level",
        env: &["BOUNDARY_LOG_LEVEL"],
        yaml: Some("log_level"),
        value_name: "LEVEL",
        help: "error, warn, info or debug; warn logs denied requests, info every request",
        default: Fallback::Text("warn"),
        apply: |c, v| {
            c.log_level = parse_level(v)?;
            Ok(level_name(&c.log_level))
        },
        examples: ["error", "INFO", "debug"],
        ..ROW
    },
    Setting {
        key: "log_dir",
        flag: "log-dir",
        env: &["BOUNDARY_LOG_DIR"],
        yaml: Some("log_dir"),
        value_name: "DIR",
        help: "Directory for application logs",
        default: Fallback::Unset(Some("stderr")),
        apply: |c, v| {
            c.log_dir = Some(PathBuf::from(v));
            Ok(v.to_string())
        },
        examples: ["/y", "/e", "/f"],
        ..ROW
    },
    Setting {
        key: "proxy_port",
        flag: "proxy-port",
        env: &["PROXY_PORT"],
        yaml: Some("proxy_port"),
        value_name: "PORT",
        help: "Proxy port (landjail: the one TCP port the child may connect to)",
        default: Fallback::Text("8080"),
        apply: |c, v| {
            c.proxy_port = parse_port(v)?;
            Ok(c.proxy_port.to_string())
        },
        examples: ["1003", "1002", "1001"],
        ..ROW
    },
    Setting {
        key: "pprof_enabled",
        flag: "pprof",
        env: &["BOUNDARY_PPROF"],
        yaml: Some("pprof_enabled"),
        help: "Serve Prometheus metrics at http://127.0.0.1:PORT/metrics and plain-text \
               statistics (open descriptors, memory) at /debug/stats, on loopback only; \
               Coder's flag name, but no Go pprof profiles",
        apply: |c, v| {
            c.stats = parse_bool(v)?;
            Ok(c.stats.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "pprof_port",
        flag: "pprof-port",
        env: &["BOUNDARY_PPROF_PORT"],
        yaml: Some("pprof_port"),
        value_name: "PORT",
        help: "Port of the statistics endpoint (--pprof)",
        default: Fallback::Text("6060"),
        apply: |c, v| {
            c.stats_port = parse_port(v)?;
            Ok(c.stats_port.to_string())
        },
        examples: ["2003", "2002", "2001"],
        ..ROW
    },
    Setting {
        key: "jail_type",
        flag: "jail-type",
        env: &["BOUNDARY_JAIL_TYPE"],
        yaml: Some("jail_type"),
        value_name: "TYPE",
        help: "nsjail (namespaces) or landjail (Landlock)",
        default: Fallback::Text("nsjail"),
        apply: |c, v| {
            c.jail_type = parse_jail(v)?;
            Ok(c.jail_type.to_string())
        },
        examples: ["landjail", "nsjail", "landjail"],
        ..ROW
    },
    Setting {
        key: "use_real_dns",
        flag: "use-real-dns",
        env: &["BOUNDARY_USE_REAL_DNS"],
        yaml: Some("use_real_dns"),
        help: "Resolve DNS for real inside the jail (allows DNS exfiltration)",
        apply: |c, v| {
            c.use_real_dns = parse_bool(v)?;
            Ok(c.use_real_dns.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "no_user_namespace",
        flag: "no-user-namespace",
        env: &["BOUNDARY_NO_USER_NAMESPACE"],
        yaml: Some("no_user_namespace"),
        help: "nsjail without a user namespace (hosts that forbid them; needs root, passwordless sudo or file capabilities)",
        apply: |c, v| {
            c.no_user_namespace = parse_bool(v)?;
            Ok(c.no_user_namespace.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "nested_sandboxes",
        flag: "nested-sandboxes",
        env: &["BOUNDARY_NESTED_SANDBOXES"],
        yaml: Some("nested_sandboxes"),
        help: "nsjail: let the jailed command create its own user, mount, PID and network namespaces, so an agent's bubblewrap sandbox works (more kernel attack surface; started by root, boundary makes the mounts and only of memory file systems; never in landjail)",
        apply: |c, v| {
            c.nested_sandboxes = parse_bool(v)?;
            Ok(c.nested_sandboxes.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "disable_audit_logs",
        flag: "disable-audit-logs",
        env: &["DISABLE_AUDIT_LOGS"],
        yaml: Some("disable_audit_logs"),
        help: "Do not forward audit records to the workspace agent (local logging stays)",
        apply: |c, v| {
            c.disable_audit_logs = parse_bool(v)?;
            Ok(c.disable_audit_logs.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "log_proxy_socket_path",
        flag: "log-proxy-socket-path",
        env: &[
            "CODER_AGENT_FIREWALL_LOG_PROXY_SOCKET_PATH",
            "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
        ],
        value_name: "PATH",
        help: "The workspace agent's audit socket",
        default: Fallback::Derived(
            |env, _| Ok(vec![(default_socket(env), Source::Default)]),
            "$TMPDIR/boundary-audit.sock, /tmp/boundary-audit.sock without TMPDIR",
        ),
        apply: |c, v| {
            c.log_proxy_socket_path = PathBuf::from(v);
            Ok(v.to_string())
        },
        examples: ["/y.sock", "/e.sock", "/f.sock"],
        ..ROW
    },
    Setting {
        key: "session_correlation_enabled",
        flag: "enable-session-correlation",
        env: &["BOUNDARY_SESSION_CORRELATION_ENABLED"],
        yaml: Some("session_correlation_enabled"),
        help: "Inject session correlation headers into requests matching the inject targets",
        apply: |c, v| {
            c.session_correlation = parse_bool(v)?;
            Ok(c.session_correlation.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "session_id_inject_targets",
        flag: "session-id-inject-target",
        env: &["BOUNDARY_SESSION_ID_INJECT_TARGET"],
        yaml: Some("session_id_inject_targets"),
        shape: Shape::List {
            merge: true,
            env_split: None,
        },
        value_name: "RULE",
        help: "Rule-syntax target for correlation headers, with a domain=; repeatable, and \
               file, environment and flags add up",
        default: Fallback::Derived(
            derive_inject_targets,
            "domain=<host of $CODER_AGENT_URL> path=/api/v2/ai-gateway/*, and the same with \
             path=/api/v2/aibridge/*",
        ),
        apply: |c, v| {
            let rule = Rule::parse(v).map_err(|e| Problem::Rule("session id inject target", e))?;
            if rule.domain.is_none() {
                return Err(Problem::Value(format!(
                    "inject target {v:?} has no domain=; headers go only to hosts a target \
                     names, e.g. \"domain=dev.coder.com path=/api/v2/ai-gateway/*\""
                )));
            }
            c.inject_targets.push(v.to_string());
            Ok(v.to_string())
        },
        examples: ["domain=y.test", "domain=e.test", "domain=f.test"],
        ..ROW
    },
    Setting {
        key: "upstream_proxy",
        flag: "upstream-proxy",
        env: &["BOUNDARY_UPSTREAM_PROXY"],
        yaml: Some("upstream_proxy"),
        value_name: "URL",
        help: "Corporate egress proxy for upstream connections (http:// or https:// URL)",
        apply: |c, v| {
            c.upstream_proxy = Some(parse_upstream_proxy(v)?);
            Ok(hide_password(v))
        },
        examples: ["https://y:3", "http://e:2", "http://f:1"],
        ..ROW
    },
    Setting {
        key: "resolve",
        flag: "resolve",
        env: &["BOUNDARY_RESOLVE"],
        yaml: Some("resolve"),
        shape: Shape::Map,
        value_name: "NAME=ADDR",
        help: "Connect to ADDR for host NAME instead of resolving it; repeatable",
        apply: |c, v| {
            let (name, ip) = parse_resolve(v)?;
            c.resolve.insert(name.clone(), ip);
            Ok(format!("{name}={ip}"))
        },
        examples: ["y.test=127.0.0.3", "e.test=127.0.0.2", "f.test=127.0.0.1"],
        ..ROW
    },
    Setting {
        key: "upstream_allow_local",
        flag: "upstream-allow-local",
        env: &["BOUNDARY_UPSTREAM_ALLOW_LOCAL"],
        yaml: Some("upstream_allow_local"),
        help: "Let allowed hosts connect to loopback, link-local and cloud metadata addresses \
               (refused by default unless --resolve or a rule names the address)",
        apply: |c, v| {
            c.upstream_allow_local = parse_bool(v)?;
            Ok(c.upstream_allow_local.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "upstream_ca_file",
        flag: "upstream-ca-file",
        env: &["BOUNDARY_UPSTREAM_CA_FILE"],
        yaml: Some("upstream_ca_file"),
        value_name: "PATH",
        help: "Extra trust anchors (PEM) for upstream TLS",
        apply: |c, v| {
            c.upstream_ca_file = Some(PathBuf::from(v));
            Ok(v.to_string())
        },
        examples: ["/y.pem", "/e.pem", "/f.pem"],
        ..ROW
    },
    Setting {
        key: "workspace_id",
        flag: "workspace-id",
        env: &["BOUNDARY_WORKSPACE_ID"],
        yaml: Some("workspace_id"),
        value_name: "UUID",
        help: "Workspace UUID for audit records",
        apply: |c, v| Ok(c.identity.workspace_id.insert(parse_uuid(v)?).clone()),
        examples: UUIDS,
        ..ROW
    },
    Setting {
        key: "workspace_name",
        flag: "workspace-name",
        env: &["BOUNDARY_WORKSPACE_NAME", "CODER_WORKSPACE_NAME"],
        yaml: Some("workspace_name"),
        value_name: "NAME",
        help: "Workspace name",
        apply: |c, v| Ok(c.identity.workspace_name.insert(v.to_string()).clone()),
        examples: ["wy", "we", "wf"],
        ..ROW
    },
    Setting {
        key: "workspace_owner",
        flag: "workspace-owner",
        env: &["BOUNDARY_WORKSPACE_OWNER", "CODER_WORKSPACE_OWNER_NAME"],
        yaml: Some("workspace_owner"),
        value_name: "NAME",
        help: "Workspace owner's username",
        apply: |c, v| Ok(c.identity.owner.insert(v.to_string()).clone()),
        examples: ["oy", "oe", "of"],
        ..ROW
    },
    Setting {
        key: "template_id",
        flag: "template-id",
        env: &["BOUNDARY_TEMPLATE_ID"],
        yaml: Some("template_id"),
        value_name: "UUID",
        help: "Template UUID",
        apply: |c, v| Ok(c.identity.template_id.insert(parse_uuid(v)?).clone()),
        examples: UUIDS,
        ..ROW
    },
    Setting {
        key: "template_version_id",
        flag: "template-version-id",
        env: &["BOUNDARY_TEMPLATE_VERSION_ID"],
        yaml: Some("template_version_id"),
        value_name: "UUID",
        help: "Template version UUID",
        apply: |c, v| {
            Ok(c.identity
                .template_version_id
                .insert(parse_uuid(v)?)
                .clone())
        },
        examples: UUIDS,
        ..ROW
    },
    Setting {
        key: "agent_name",
        flag: "agent-name",
        env: &["BOUNDARY_AGENT_NAME", "CODER_WORKSPACE_AGENT_NAME"],
        yaml: Some("agent_name"),
        value_name: "NAME",
        help: "Workspace agent name",
        apply: |c, v| Ok(c.identity.agent_name.insert(v.to_string()).clone()),
        examples: ["ay", "ae", "af"],
        ..ROW
    },
    Setting {
        key: "audit_log",
        flag: "audit-log",
        env: &["BOUNDARY_AUDIT_LOG"],
        yaml: Some("audit_log"),
        value_name: "FILE",
        help: "Also write every decision as one JSON object per line to FILE (reopened on SIGHUP)",
        apply: |c, v| {
            c.audit_log = Some(PathBuf::from(v));
            Ok(v.to_string())
        },
        examples: ["/y.jsonl", "/e.jsonl", "/f.jsonl"],
        ..ROW
    },
    Setting {
        key: "audit_protocol",
        flag: "audit-protocol",
        env: &["BOUNDARY_AUDIT_PROTOCOL"],
        yaml: Some("audit_protocol"),
        value_name: "PROTO",
        help: "auto, v1 or v2: frame format for the agent socket; auto falls back to v1 for \
               older agents",
        default: Fallback::Text("auto"),
        apply: |c, v| {
            c.audit_protocol = parse_protocol(v)?;
            Ok(protocol_name(&c.audit_protocol))
        },
        examples: ["auto", "v2", "v1"],
        ..ROW
    },
    Setting {
        key: "audit_flush_interval",
        flag: "audit-flush-interval",
        env: &["BOUNDARY_AUDIT_FLUSH_INTERVAL"],
        yaml: Some("audit_flush_interval"),
        value_name: "DURATION",
        help: "Longest wait before a partial batch of audit records is sent, e.g. 500ms, 1s",
        default: Fallback::Text("1s"),
        apply: |c, v| {
            c.audit_flush_interval = parse_flush_interval(v)?;
            Ok(Dur(c.audit_flush_interval).to_string())
        },
        examples: ["300ms", "200ms", "100ms"],
        ..ROW
    },
    Setting {
        key: "audit_queue_size",
        flag: "audit-queue-size",
        env: &["BOUNDARY_AUDIT_QUEUE_SIZE"],
        yaml: Some("audit_queue_size"),
        value_name: "N",
        help: "Audit records held in memory while the agent is slow or away; with the spool \
               they then go to disk, without it (no agent socket) beyond it they are dropped \
               and counted",
        default: Fallback::Text("10000"),
        apply: |c, v| {
            c.audit_queue_size = parse_positive(v, "records")?;
            Ok(c.audit_queue_size.to_string())
        },
        examples: ["13", "12", "11"],
        ..ROW
    },
    Setting {
        key: "audit_shutdown_timeout",
        flag: "audit-shutdown-timeout",
        env: &["BOUNDARY_AUDIT_SHUTDOWN_TIMEOUT"],
        yaml: Some("audit_shutdown_timeout"),
        value_name: "DURATION",
        help: "Longest wait at exit for queued audit records to reach the agent",
        default: Fallback::Text("5s"),
        apply: |c, v| {
            c.audit_shutdown_timeout = parse_duration(v)?;
            Ok(Dur(c.audit_shutdown_timeout).to_string())
        },
        examples: ["3s", "2s", "1s"],
        ..ROW
    },
    Setting {
        key: "audit_spool_dir",
        flag: "audit-spool-dir",
        env: &["BOUNDARY_AUDIT_SPOOL_DIR"],
        yaml: Some("audit_spool_dir"),
        value_name: "DIR",
        help: "Where audit records the Coder agent has not taken wait on disk, also for the \
               next run",
        default: Fallback::Derived(
            |env, _| Ok(vec![(default_spool_dir(env), Source::Default)]),
            "$XDG_STATE_HOME/coder_boundary/spool, as root /var/lib/coder_boundary/spool, else \
             ~/.local/state/coder_boundary/spool",
        ),
        apply: |c, v| {
            c.audit_spool_dir = PathBuf::from(v);
            Ok(v.to_string())
        },
        examples: ["/s1", "/s2", "/s3"],
        ..ROW
    },
    Setting {
        key: "audit_spool_size_mb",
        flag: "audit-spool-size-mb",
        env: &["BOUNDARY_AUDIT_SPOOL_SIZE_MB"],
        yaml: Some("audit_spool_size_mb"),
        value_name: "MIB",
        help: "Largest size of the audit spool in MiB; beyond it records are dropped, counted \
               and logged with their sequence numbers",
        default: Fallback::Text("256"),
        apply: |c, v| {
            c.audit_spool_size_mb = parse_positive(v, "MiB")?;
            Ok(c.audit_spool_size_mb.to_string())
        },
        examples: ["300", "200", "100"],
        ..ROW
    },
    Setting {
        key: "landjail_deny_bind",
        flag: "landjail-deny-bind",
        env: &["BOUNDARY_LANDJAIL_DENY_BIND"],
        yaml: Some("landjail_deny_bind"),
        help: "landjail: also forbid binding TCP ports (default: local servers may listen)",
        apply: |c, v| {
            c.landjail_deny_bind = parse_bool(v)?;
            Ok(c.landjail_deny_bind.to_string())
        },
        ..SWITCH
    },
    Setting {
        key: "unix_socket_allow",
        flag: "unix-socket-allow",
        env: &["BOUNDARY_UNIX_SOCKET_ALLOW"],
        yaml: Some("unix_socket_allow"),
        shape: Shape::List {
            merge: true,
            env_split: Some(','),
        },
        value_name: "PATH",
        help: "A Unix socket outside the jail that jailed programs may connect to (a trailing / \
               allows every socket under that directory), also over the built-in deny list; \
               never the agent's audit socket. Repeatable",
        apply: |c, v| {
            c.unix_sockets.allow.push(parse_socket_rule(v)?);
            Ok(v.to_string())
        },
        examples: ["/run/a.sock", "/run/b/", "/tmp/c.sock"],
        ..ROW
    },
    Setting {
        key: "unix_socket_deny",
        flag: "unix-socket-deny",
        env: &["BOUNDARY_UNIX_SOCKET_DENY"],
        yaml: Some("unix_socket_deny"),
        shape: Shape::List {
            merge: true,
            env_split: Some(','),
        },
        value_name: "PATH",
        help: "A Unix socket (or, with a trailing /, a directory of them) jailed programs must \
               not connect to, added to the built-in list of container runtimes and system \
               managers. Repeatable",
        apply: |c, v| {
            c.unix_sockets.deny.push(parse_socket_rule(v)?);
            Ok(v.to_string())
        },
        examples: ["/run/d.sock", "/run/e/", "/tmp/f.sock"],
        ..ROW
    },
    Setting {
        key: "unix_socket_default",
        flag: "unix-socket-default",
        env: &["BOUNDARY_UNIX_SOCKET_DEFAULT"],
        yaml: Some("unix_socket_default"),
        value_name: "deny|allow",
        help: "What jailed programs get for Unix sockets of services outside the jail that no \
               rule names: deny, or allow (the built-in deny list and the agent's socket stay \
               refused)",
        default: Fallback::Text("deny"),
        apply: |c, v| {
            c.unix_sockets.default_allow = match v.trim().to_ascii_lowercase().as_str() {
                "deny" => false,
                "allow" => true,
                _ => return Err(Problem::Value(format!("{v:?} is neither deny nor allow"))),
            };
            Ok(if c.unix_sockets.default_allow {
                "allow"
            } else {
                "deny"
            }
            .to_string())
        },
        examples: ["allow", "deny", "allow"],
        ..ROW
    },
    Setting {
        key: "ssh_agent",
        flag: "ssh-agent",
        env: &["BOUNDARY_SSH_AGENT"],
        yaml: Some("ssh_agent"),
        value_name: "none|filtered",
        help: "Whether jailed programs get the SSH agent ($SSH_AUTH_SOCK): none, or filtered \
               (listing keys and signing only, through boundary; a jailed program can then \
               sign with the user's keys, also for a session someone else opened)",
        default: Fallback::Text("none"),
        apply: |c, v| {
            c.ssh_agent_filtered = match v.trim().to_ascii_lowercase().as_str() {
                "none" => false,
                "filtered" => true,
                _ => return Err(Problem::Value(format!("{v:?} is neither none nor filtered"))),
            };
            Ok(if c.ssh_agent_filtered { "filtered" } else { "none" }.to_string())
        },
        examples: ["filtered", "none", "filtered"],
        ..ROW
    },
    Setting {
        key: "writable_paths",
        flag: "writable-path",
        env: &["BOUNDARY_WRITABLE_PATHS"],
        yaml: Some("writable_paths"),
        shape: Shape::List {
            merge: true,
            env_split: Some(','),
        },
        value_name: "PATH",
        help: "Started by root: a path the jailed command may change besides the working \
               directory, $HOME and /tmp (every other host file is read-only to it). Repeatable",
        apply: |c, v| {
            c.writable_paths.push(parse_abs_path(v, "writable paths")?);
            Ok(v.trim().to_string())
        },
        examples: ["/srv/a", "/srv/b", "/srv/c"],
        ..ROW
    },
    Setting {
        key: "protect_paths",
        flag: "protect-path",
        env: &["BOUNDARY_PROTECT_PATHS"],
        yaml: Some("protect_paths"),
        shape: Shape::List {
            merge: true,
            env_split: Some(','),
        },
        value_name: "PATH",
        help: "A file or directory the jailed command must not change, such as the script that \
               starts boundary (the Coder module's wrapper): nsjail makes it read-only, landjail \
               reports a change at exit. boundary's own executable, config and logs are \
               protected without it. Repeatable",
        apply: |c, v| {
            c.protect_paths.push(parse_abs_path(v, "protect paths")?);
            Ok(v.trim().to_string())
        },
        examples: ["/srv/start.sh", "/srv/bin", "/srv/hooks"],
        ..ROW
    },
    Setting {
        key: "root_filesystem",
        flag: "root-filesystem",
        env: &["BOUNDARY_ROOT_FILESYSTEM"],
        yaml: Some("root_filesystem"),
        value_name: "read-only|writable",
        help: "Started by root: read-only (the jailed command changes only the writable paths) \
               or writable (every host file, so it can run code as root outside the jail; \
               warns at start)",
        default: Fallback::Text("read-only"),
        apply: |c, v| {
            c.root_filesystem_writable = match v.trim().to_ascii_lowercase().as_str() {
                "read-only" | "readonly" => false,
                "writable" => true,
                _ => {
                    return Err(Problem::Value(format!(
                        "{v:?} is neither read-only nor writable"
                    )))
                }
            };
            Ok(if c.root_filesystem_writable {
                "writable"
            } else {
                "read-only"
            }
            .to_string())
        },
        examples: ["writable", "read-only", "writable"],
        ..ROW
    },
    Setting {
        key: "idle_timeout",
        flag: "idle-timeout",
        env: &["BOUNDARY_IDLE_TIMEOUT"],
        yaml: Some("idle_timeout"),
        value_name: "DURATION",
        help: "Close client connections idle this long",
        default: Fallback::Duration(boundary_proxy::DEFAULT_IDLE_TIMEOUT),
        apply: |c, v| {
            c.idle_timeout = parse_nonzero_duration(v, "the idle timeout")?;
            Ok(Dur(c.idle_timeout).to_string())
        },
        examples: ["3m", "2m", "1m"],
        ..ROW
    },
    Setting {
        key: "client_stall_timeout",
        flag: "client-stall-timeout",
        env: &["BOUNDARY_CLIENT_STALL_TIMEOUT"],
        yaml: Some("client_stall_timeout"),
        value_name: "DURATION",
        help: "End a response its client reads nothing of for this long, freeing its place \
               under the upstream caps",
        default: Fallback::Duration(boundary_proxy::DEFAULT_CLIENT_STALL_TIMEOUT),
        apply: |c, v| {
            c.client_stall_timeout = parse_nonzero_duration(v, "the client stall timeout")?;
            Ok(Dur(c.client_stall_timeout).to_string())
        },
        examples: ["90s", "45s", "30s"],
        ..ROW
    },
];

const UUIDS: [&str; 3] = [
    "33333333-3333-4333-8333-333333333333",
    "22222222-2222-4222-8222-222222222222",
    "11111111-1111-4111-8111-111111111111",
];

/// The row for `key`; every key used in code exists (the tests check each row's use).
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// With correlation on and no target given, the two rules Go derives: Coder's AI Gateway
/// routes and their older `aibridge` alias on the host of `CODER_AGENT_URL`.
fn derive_inject_targets(env: &Lookup, c: &Config) -> Result<Vec<(String, Source)>, ConfigError> {
    if !c.session_correlation {
        return Ok(Vec::new());
    }
    let host = env("CODER_AGENT_URL")
        .filter(|u| !u.is_empty())
        .and_then(|u| url_host(&u))
        .ok_or(ConfigError::NoInjectTarget)?;
    Ok(["/api/v2/ai-gateway/*", "/api/v2/aibridge/*"]
        .iter()
        .map(|path| {
            (
                format!("domain={host} path={path}"),
                Source::Env("CODER_AGENT_URL"),
            )
        })
        .collect())
}
