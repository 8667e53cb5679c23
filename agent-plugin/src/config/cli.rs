//! Command-line flags. Flags only: environment variables and the YAML file are merged in
//! `resolve`, so each value's source can be reported by `boundary config`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser};

/// Flags shared by a run and by the subcommands that evaluate the same configuration.
#[derive(Debug, Clone, Default, Args)]
pub struct Flags {
    /// YAML config file [env: BOUNDARY_CONFIG] [default: ~/.config/coder_boundary/config.yaml, if present]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Allow rule, e.g. "method=GET domain=*.github.com path=/api/*"; repeat for more rules.
    /// One value is one rule, never split on commas [env: BOUNDARY_ALLOW] [yaml: allowlist]
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,

    /// error, warn, info or debug; warn logs denied requests, info every request
    /// [env: BOUNDARY_LOG_LEVEL] [yaml: log_level] [default: warn]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Directory for application logs [env: BOUNDARY_LOG_DIR] [yaml: log_dir] [default: stderr]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Proxy port (landjail: the one TCP port the child may connect to)
    /// [env: PROXY_PORT] [yaml: proxy_port] [default: 8080]
    #[arg(long, value_name = "PORT")]
    pub proxy_port: Option<String>,

    /// Serve a loopback-only diagnostics endpoint [env: BOUNDARY_PPROF] [yaml: pprof_enabled]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub pprof: Option<String>,

    /// Port of the diagnostics endpoint [env: BOUNDARY_PPROF_PORT] [yaml: pprof_port] [default: 6060]
    #[arg(long, value_name = "PORT")]
    pub pprof_port: Option<String>,

    /// nsjail (namespaces) or landjail (Landlock) [env: BOUNDARY_JAIL_TYPE] [yaml: jail_type] [default: nsjail]
    #[arg(long, value_name = "TYPE")]
    pub jail_type: Option<String>,

    /// Resolve DNS for real inside the jail (allows DNS exfiltration)
    /// [env: BOUNDARY_USE_REAL_DNS] [yaml: use_real_dns] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub use_real_dns: Option<String>,

    /// nsjail without a user namespace (hosts that forbid them; needs root)
    /// [env: BOUNDARY_NO_USER_NAMESPACE] [yaml: no_user_namespace] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub no_user_namespace: Option<String>,

    /// Do not forward audit records to the workspace agent (local logging stays)
    /// [env: DISABLE_AUDIT_LOGS] [yaml: disable_audit_logs] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_audit_logs: Option<String>,

    /// The workspace agent's audit socket [env: CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH]
    /// [default: $TMPDIR/boundary-audit.sock, /tmp/boundary-audit.sock without TMPDIR]
    #[arg(long, value_name = "PATH")]
    pub log_proxy_socket_path: Option<PathBuf>,

    /// Inject session correlation headers into requests matching the inject targets
    /// [env: BOUNDARY_SESSION_CORRELATION_ENABLED] [yaml: session_correlation_enabled] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_session_correlation: Option<String>,

    /// Rule-syntax target for correlation headers; repeatable
    /// [env: BOUNDARY_SESSION_ID_INJECT_TARGET] [yaml: session_id_inject_targets]
    /// [default: domain=<host of $CODER_AGENT_URL> path=/api/v2/aibridge/*,/api/v2/ai-gateway/*]
    #[arg(long = "session-id-inject-target", value_name = "RULE")]
    pub session_id_inject_target: Vec<String>,

    /// Corporate egress proxy for upstream connections (http:// or https:// URL)
    /// [env: BOUNDARY_UPSTREAM_PROXY] [yaml: upstream_proxy]
    #[arg(long, value_name = "URL")]
    pub upstream_proxy: Option<String>,

    /// Connect to ADDR for host NAME instead of resolving it; repeatable
    /// [env: BOUNDARY_RESOLVE, comma-separated] [yaml: resolve, a map NAME: ADDR]
    #[arg(long = "resolve", value_name = "NAME=ADDR")]
    pub resolve: Vec<String>,

    /// Extra trust anchors (PEM) for upstream TLS [env: BOUNDARY_UPSTREAM_CA_FILE] [yaml: upstream_ca_file]
    #[arg(long, value_name = "PATH")]
    pub upstream_ca_file: Option<PathBuf>,

    /// Workspace UUID for audit records [env: BOUNDARY_WORKSPACE_ID] [yaml: workspace_id]
    #[arg(long, value_name = "UUID")]
    pub workspace_id: Option<String>,

    /// Workspace name [env: BOUNDARY_WORKSPACE_NAME, then CODER_WORKSPACE_NAME] [yaml: workspace_name]
    #[arg(long, value_name = "NAME")]
    pub workspace_name: Option<String>,

    /// Workspace owner's username [env: BOUNDARY_WORKSPACE_OWNER, then CODER_WORKSPACE_OWNER_NAME]
    /// [yaml: workspace_owner]
    #[arg(long, value_name = "NAME")]
    pub workspace_owner: Option<String>,

    /// Template UUID [env: BOUNDARY_TEMPLATE_ID] [yaml: template_id]
    #[arg(long, value_name = "UUID")]
    pub template_id: Option<String>,

    /// Template version UUID [env: BOUNDARY_TEMPLATE_VERSION_ID] [yaml: template_version_id]
    #[arg(long, value_name = "UUID")]
    pub template_version_id: Option<String>,

    /// Workspace agent name [env: BOUNDARY_AGENT_NAME, then CODER_WORKSPACE_AGENT_NAME] [yaml: agent_name]
    #[arg(long, value_name = "NAME")]
    pub agent_name: Option<String>,

    /// Also write every decision as one JSON object per line to FILE (reopened on SIGHUP)
    /// [env: BOUNDARY_AUDIT_LOG] [yaml: audit_log]
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// auto, v1 or v2: frame format for the agent socket; auto falls back to v1 for older agents
    /// [env: BOUNDARY_AUDIT_PROTOCOL] [yaml: audit_protocol] [default: auto]
    #[arg(long, value_name = "PROTO")]
    pub audit_protocol: Option<String>,

    /// Longest wait before a partial batch of audit records is sent, e.g. 500ms, 1s
    /// [env: BOUNDARY_AUDIT_FLUSH_INTERVAL] [yaml: audit_flush_interval] [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub audit_flush_interval: Option<String>,

    /// Audit records held while the agent is slow or away; beyond it records are dropped and counted
    /// [env: BOUNDARY_AUDIT_QUEUE_SIZE] [yaml: audit_queue_size] [default: 10000]
    #[arg(long, value_name = "N")]
    pub audit_queue_size: Option<String>,

    /// Longest wait at exit for queued audit records to reach the agent
    /// [env: BOUNDARY_AUDIT_SHUTDOWN_TIMEOUT] [yaml: audit_shutdown_timeout] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub audit_shutdown_timeout: Option<String>,

    /// landjail: also forbid binding TCP ports (default: local servers may listen)
    /// [env: BOUNDARY_LANDJAIL_DENY_BIND] [yaml: landjail_deny_bind] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub landjail_deny_bind: Option<String>,

    /// Close client connections idle this long [env: BOUNDARY_IDLE_TIMEOUT] [yaml: idle_timeout] [default: 5m]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
}

const ABOUT: &str = "Run a command in a jail whose only way to the network is a proxy that \
allows what the rules allow, answers 403 to the rest, and audits every request.";

const AFTER: &str = "Subcommands (only as the first argument):
  boundary check [--method M] [flags] URL   decide one request against the effective policy
  boundary config [flags]                   print the effective configuration and its sources
  boundary selftest [--jail-type T]         prove the jail holds on this host (works offline)

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
    /// HTTP method of the request to decide
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
