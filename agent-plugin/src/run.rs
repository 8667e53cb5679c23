//! A jailed run: CA → jail → audit pipeline → proxy on the jail's listeners → wait → flush.
//!
//! The jail is started before the tokio runtime exists, so a backend may fork safely; the
//! runtime then serves the proxy on the sockets the jail handed back until the target exits,
//! and the audit queue is flushed before boundary exits with the target's status.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use boundary_audit::forwarder::SpoolConfig;
use boundary_audit::{AuditOptions, AuditPipeline, RunContext};
use boundary_jail::ssh_agent::AgentFilter;
use boundary_jail::{JailKind, JailSpec, LandjailOptions, NsjailOptions, RunningJail};
use boundary_proxy::{rules::Policy, CertificateAuthority, Correlation, Proxy, ProxyConfig};

use boundary::config::{cli::Flags, Config, JailType, Source};

/// Variables naming a CA file, in the spellings clients and the agents read (docs/interop.md
/// §4). Codex reads `CODEX_CA_CERTIFICATE` before `SSL_CERT_FILE`, so a user's own value would
/// otherwise win inside the jail; Claude Code reads `NODE_EXTRA_CA_CERTS` only. npm, pnpm and
/// yarn 1 take `npm_config_cafile` over an npmrc's `cafile`, which replaces Node's trust store
/// (and so `NODE_EXTRA_CA_CERTS`): with one on the host, npm refused our certificate.
const CA_FILE_VARS: [&str; 11] = [
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "DENO_CERT",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "CARGO_HTTP_CAINFO",
    "CODEX_CA_CERTIFICATE",
    "npm_config_cafile",
];

/// Variables that make common clients and the agents trust our CA.
pub fn ca_env(cert: &Path) -> Vec<(OsString, OsString)> {
    let file = cert.as_os_str().to_os_string();
    let dir = cert
        .parent()
        .unwrap_or(Path::new("/"))
        .as_os_str()
        .to_os_string();
    let mut env: Vec<(OsString, OsString)> = CA_FILE_VARS
        .iter()
        .map(|k| (OsString::from(k), file.clone()))
        .collect();
    env.push(("SSL_CERT_DIR".into(), dir));
    env
}

/// Variables naming the proxy's URL, in the spellings curl, Python, Go, Node and npm read.
const PROXY_URL_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
];

/// Variables listing hosts that skip the proxy.
const NO_PROXY_VARS: [&str; 3] = ["NO_PROXY", "no_proxy", "npm_config_noproxy"];

/// The hosts that skip the proxy: loopback only, so a dev server or MCP server the jailed
/// command starts answers it directly. This is safe because landjail's connect supervisor lets
/// the jail reach only loopback listeners it owns (and the proxy); any other loopback listener
/// is refused. A `NO_PROXY` of the user's own is replaced, not merged: hosts outside loopback
/// cannot be reached around the proxy, so listing them would only break those requests.
pub const NO_PROXY_HOSTS: &str = "localhost,127.0.0.1,::1";

/// Variables that send clients to the proxy explicitly (landjail only: nsjail redirects every
/// connection, so its target needs none), loopback excepted.
pub fn proxy_env(port: u16) -> Vec<(OsString, OsString)> {
    let url = OsString::from(format!("http://localhost:{port}"));
    let mut env: Vec<(OsString, OsString)> = PROXY_URL_VARS
        .iter()
        .map(|k| (OsString::from(k), url.clone()))
        .collect();
    for k in NO_PROXY_VARS {
        env.push((k.into(), NO_PROXY_HOSTS.into()));
    }
    env
}

/// Everything boundary adds to the jailed command's environment: the proxy variables
/// (landjail) and the CA trust variables, in that order (a later entry wins).
pub fn jail_env(jail: JailType, proxy_port: u16, cert: &Path) -> Vec<(OsString, OsString)> {
    let mut env = match jail {
        JailType::Landjail => proxy_env(proxy_port),
        JailType::Nsjail => Vec::new(),
    };
    env.extend(ca_env(cert));
    env
}

/// Basename of argv[0], as Coder expects in `confined_process_name`.
pub fn process_name(program: &OsString) -> String {
    Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string_lossy().into_owned())
}

/// The jail's description of this run.
pub fn jail_spec(
    cfg: &Config,
    command: &[OsString],
    ca: &CertificateAuthority,
    agent: Option<&AgentFilter>,
) -> Result<JailSpec> {
    // A persistent CA key left by an earlier version stays hidden (nsjail) even though unused.
    let mut hide_paths = vec![cfg.config_dir.join(boundary_proxy::ca::CA_KEY_FILE)];
    hide_paths.push(cfg.log_proxy_socket_path.clone());
    hide_paths.push(cfg.audit_spool_dir.clone());
    hide_paths.extend(upstream_credentials_file(cfg)?);
    let mut env = jail_env(cfg.jail_type, cfg.proxy_port, ca.cert_path());
    let mut unix_sockets = cfg.unix_sockets.clone();
    // The jail's SSH agent is boundary's filter; the user's agent itself is refused unless a
    // unix_socket_allow entry names it (it loads PKCS#11 libraries on a client's request).
    if let Some(real) = user_ssh_agent() {
        unix_sockets.deny.push(real.into());
    }
    if let Some(f) = agent {
        env.push(("SSH_AUTH_SOCK".into(), f.path().into()));
        unix_sockets.ssh_agent = Some(f.path().to_path_buf());
    }
    let mut env_remove: Vec<OsString> = boundary::config::settings::SETTINGS
        .iter()
        .flat_map(|s| s.env.iter().map(OsString::from))
        .collect();
    if agent.is_none() {
        // No agent for the jail: ssh and git then do not try a socket they may not use.
        env_remove.push("SSH_AUTH_SOCK".into());
    }
    Ok(JailSpec {
        program: command[0].clone(),
        args: command[1..].to_vec(),
        env,
        // boundary's configuration is not the jailed program's: `BOUNDARY_UPSTREAM_PROXY` may
        // carry the corporate proxy's password, the others name boundary's own files.
        env_remove,
        proxy_port: cfg.proxy_port,
        hide_paths,
        readonly_paths: crate::tamper::protected_paths(cfg)?,
        unix_sockets,
        writable_paths: cfg.writable_paths.clone(),
        root_filesystem_writable: cfg.root_filesystem_writable,
    })
}

/// Where the upstream proxy's credentials sit, if the jail could read them there: the config
/// file (nsjail hides it from the jail; returned to be hidden). landjail cannot hide a file of
/// its own user, nor boundary's command line (`/proc/<pid>/cmdline` needs no ptrace access):
/// there a password in `--upstream-proxy` is refused, and one in the config file warned about.
/// `BOUNDARY_UPSTREAM_PROXY` is the place for it: boundary removes its settings' variables from
/// the jail's environment.
fn upstream_credentials_file(cfg: &Config) -> Result<Option<std::path::PathBuf>> {
    let Some(up) = cfg.upstream_proxy.as_ref().filter(|u| u.has_credentials()) else {
        return Ok(None);
    };
    match (cfg.source_of("upstream_proxy"), cfg.jail_type) {
        (Some(Source::Flag(_)), JailType::Landjail) => anyhow::bail!(
            "--upstream-proxy {} carries credentials on boundary's command line, which every \
             process in a landjail can read (/proc/<pid>/cmdline); pass the URL in the \
             BOUNDARY_UPSTREAM_PROXY environment variable instead (boundary keeps it out of \
             the jail's environment), or use --jail-type nsjail",
            boundary_proxy::hide_password(&up.url)
        ),
        (Some(Source::File(path)), JailType::Landjail) => {
            eprintln!(
                "boundary: WARNING: {} holds the upstream proxy's credentials and a landjail \
                 cannot hide it from the jailed command; move them to BOUNDARY_UPSTREAM_PROXY",
                path.display()
            );
            tracing::warn!(file = %path.display(), "upstream proxy credentials readable in the landjail");
            Ok(None)
        }
        (Some(Source::File(path)), JailType::Nsjail) => Ok(Some(path.clone())),
        _ => Ok(None),
    }
}

/// Warns about allow entries that hand the jail an agent able to run programs outside it:
/// gpg-agent (reloads `~/.gnupg`, which the jail writes, and starts what it names) and the
/// user's SSH agent itself (loads PKCS#11 libraries on request) instead of boundary's filter.
fn warn_about_agent_sockets(cfg: &Config) {
    let ssh = user_ssh_agent();
    for entry in &cfg.unix_sockets.allow {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        let gpg = name
            .as_deref()
            .is_some_and(|n| n.starts_with("S.gpg-agent"));
        let agent = ssh
            .as_ref()
            .is_some_and(|s| Path::new(s).starts_with(entry));
        if gpg || agent {
            let what = if gpg {
                "gpg-agent"
            } else {
                "the SSH agent itself"
            };
            eprintln!(
                "boundary: WARNING: unix_socket_allow {} gives the jail {what}, which can be made \
                 to run programs outside the jail (docs/unix-sockets.md, \"What agents usually \
                 need\")",
                entry.display()
            );
            tracing::warn!(entry = %entry.display(), "an allowed socket leads out of the jail");
        }
    }
}

/// The caller's SSH agent socket (`$SSH_AUTH_SOCK`), if set.
fn user_ssh_agent() -> Option<OsString> {
    std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty())
}

/// The jail's SSH agent: a filter in front of the caller's `$SSH_AUTH_SOCK` that passes only
/// listing keys and signing (`boundary_jail::ssh_agent`); `None` without an agent.
fn start_agent_filter() -> Option<AgentFilter> {
    let real = user_ssh_agent()?;
    match AgentFilter::start(Path::new(&real), &std::env::temp_dir()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(agent = ?real, error = %e,
                "cannot start the jail's SSH agent filter; the jail gets no SSH agent");
            None
        }
    }
}

/// The jail backend of this run with its own options.
fn jail_kind(cfg: &Config) -> JailKind {
    match cfg.jail_type {
        JailType::Nsjail => JailKind::Nsjail(NsjailOptions {
            use_real_dns: cfg.use_real_dns,
            no_user_namespace: cfg.no_user_namespace,
            nested_sandboxes: cfg.nested_sandboxes,
        }),
        JailType::Landjail => JailKind::Landjail(LandjailOptions {
            deny_bind: cfg.landjail_deny_bind,
        }),
    }
}

fn start_jail(cfg: &Config, spec: &JailSpec) -> Result<RunningJail> {
    if cfg.nested_sandboxes && cfg.jail_type == JailType::Landjail {
        anyhow::bail!(
            "nested_sandboxes needs --jail-type nsjail: Landlock forbids a sandboxed process \
             every mount and pivot_root, also in namespaces it creates, so bubblewrap can never \
             run in a landjail (docs/jail-types.md, \"Agents' own sandboxes\"). Use nsjail, or \
             run the agent without its own sandbox"
        );
    }
    if cfg.root_filesystem_writable && boundary::config::values::running_as_root() {
        eprintln!(
            "boundary: WARNING: root_filesystem: writable: the jailed command runs as root with \
             every host file writable, so it can change what runs outside the jail \
             (/etc/cron.d, systemd units, ~/.bashrc)"
        );
        tracing::warn!("root_filesystem: writable: every host file is writable to the jail");
    }
    boundary_jail::start(spec, &jail_kind(cfg))
        .with_context(|| format!("cannot start the {} jail", cfg.jail_type))
}

/// Connects to the agent before the jail exists, so a jailed process cannot have replaced the
/// socket path yet; the connection is kept for the run (its listener is still checked).
fn connect_agent_early(cfg: &Config) -> Option<std::os::unix::net::UnixStream> {
    if cfg.disable_audit_logs {
        return None;
    }
    match std::os::unix::net::UnixStream::connect(&cfg.log_proxy_socket_path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %cfg.log_proxy_socket_path.display(), error = %e,
                "cannot connect to the Coder agent audit socket before starting the jail");
            None
        }
    }
}

/// The spool, whenever there is an agent to deliver to: the socket path was given (flag,
/// environment as Coder sets it, or config file), so an agent not up yet or gone for a while
/// gets every record when it comes; or the default path has a socket now. Outside Coder (the
/// default path, nothing listening) nothing would ever collect the records. The directory is
/// made before the jail starts so nsjail can hide it.
fn prepare_spool(cfg: &Config, early: bool) -> Option<SpoolConfig> {
    use std::os::unix::fs::DirBuilderExt;
    let configured = cfg
        .sources
        .iter()
        .any(|(key, _, source)| *key == "log_proxy_socket_path" && *source != Source::Default);
    if cfg.disable_audit_logs || !(configured || early || cfg.log_proxy_socket_path.exists()) {
        return None;
    }
    let dir = cfg.audit_spool_dir.clone();
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        tracing::error!(dir = %dir.display(), error = %e,
            "cannot create the audit spool directory; records the agent has not taken are \
             kept in memory only; set XDG_STATE_HOME to a writable directory");
        return None;
    }
    Some(SpoolConfig {
        dir,
        // The default 256 MiB holds about a million records: hours of heavy use.
        max_bytes: (cfg.audit_spool_size_mb as u64) << 20,
    })
}

fn audit_options(
    cfg: &Config,
    run: RunContext,
    early: Option<std::os::unix::net::UnixStream>,
    spool: Option<SpoolConfig>,
) -> AuditOptions {
    let mut o = AuditOptions::new(run);
    o.spool = spool;
    o.verify_agent_peer = true;
    o.early_connection = early;
    o.audit_log = cfg.audit_log.clone();
    o.socket_path = (!cfg.disable_audit_logs).then(|| cfg.log_proxy_socket_path.clone());
    o.protocol = cfg.audit_protocol;
    o.flush_interval = cfg.audit_flush_interval;
    o.queue_size = cfg.audit_queue_size;
    o.shutdown_timeout = cfg.audit_shutdown_timeout;
    o
}

fn proxy_config(cfg: &Config, run: &RunContext) -> Result<ProxyConfig> {
    let mut pc = ProxyConfig::new(cfg.policy.clone());
    pc.resolve = cfg
        .resolve
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect::<HashMap<_, _>>();
    pc.upstream_ca_file = cfg.upstream_ca_file.clone();
    pc.upstream_proxy = cfg.upstream_proxy.as_ref().map(|u| u.url.clone());
    pc.upstream_allow_local = cfg.upstream_allow_local;
    pc.idle_timeout = cfg.idle_timeout;
    pc.client_stall_timeout = cfg.client_stall_timeout;
    // After a burst of idle connections parks, their freed buffers go back to the system.
    pc.release_memory = Some(boundary_jail::release_free_memory);
    if cfg.session_correlation {
        let targets = Policy::parse(&cfg.inject_targets).context("session id inject targets")?;
        pc.correlation = Some(Correlation {
            session_id: run.session_id,
            targets,
        });
    }
    Ok(pc)
}

/// The CA for this run, in both jails: a fresh CA whose key exists only in boundary's memory
/// (never on disk, so no jail of this or any other run can read it); its certificate lives in
/// a private temporary directory removed at exit (see `ca_dir`), named by the trust variables.
fn prepare_ca(cfg: &Config) -> Result<(Arc<CertificateAuthority>, crate::ca_dir::CaDir)> {
    let dir = crate::ca_dir::CaDir::create()?;
    let ca = CertificateAuthority::ephemeral(dir.path())
        .context("cannot prepare the CA that intercepts TLS")?;
    let legacy = cfg.config_dir.join(boundary_proxy::ca::CA_KEY_FILE);
    if legacy.exists() {
        tracing::warn!(
            path = %legacy.display(),
            "a CA key from an earlier boundary version is still on disk; boundary no longer uses \
             it (each run has its own CA): delete it and remove its certificate from any trust store"
        );
    }
    Ok((Arc::new(ca), dir))
}

/// Files the proxy and the audit log open after the jail has started, checked before it does,
/// so a bad path fails with nothing started (the values themselves were checked by `resolve`).
fn check_files(cfg: &Config) -> Result<()> {
    if let Some(path) = &cfg.upstream_ca_file {
        boundary_proxy::check_upstream_ca_file(path)
            .map_err(|e| anyhow::anyhow!("{e}; fix --upstream-ca-file (see `boundary config`)"))?;
    }
    if let Some(path) = &cfg.audit_log {
        boundary_audit::open_append(path, 0o600).with_context(|| {
            format!(
                "cannot open the audit log {}; fix --audit-log (see `boundary config`)",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Runs `command` jailed and returns the exit code boundary should exit with.
/// Every audit record also passes `denials`, which counts the denied ones for the exit summary.
/// `flags` are kept for live reloads, which resolve the configuration again from them.
pub fn run(
    cfg: Config,
    flags: &Flags,
    command: Vec<OsString>,
    denials: &Arc<crate::denials::DenyTally>,
) -> Result<i32> {
    // Before anything slow: a SIGHUP from a terminal that closes during start-up must still be
    // told from a reload request.
    boundary_jail::remember_terminal();
    check_files(&cfg)?;
    // Before the CA key exists in memory: no core dump can carry it out, and landjail's
    // target (same uid) cannot read boundary's memory through /proc.
    boundary_jail::make_undumpable()
        .context("cannot mark boundary non-dumpable (prctl PR_SET_DUMPABLE)")?;
    let (ca, _ca_dir) = prepare_ca(&cfg)?;
    if cfg.allow.is_empty() {
        tracing::warn!("no allow rules: every request will be denied (add --allow or an allowlist in config.yaml)");
    }
    tracing::info!(rules = cfg.allow.len(), config = ?cfg.config_file, "policy generation 1 loaded");
    let run = RunContext::new(process_name(&command[0]), cfg.identity.clone());
    warn_about_agent_sockets(&cfg);
    let agent = cfg.ssh_agent_filtered.then(start_agent_filter).flatten();
    let spec = jail_spec(&cfg, &command, &ca, agent.as_ref())?;
    let mut pconf = proxy_config(&cfg, &run)?;
    let reloader = crate::reload::Reloader::new(
        flags.clone(),
        boundary::config::process_env,
        cfg.clone(),
        pconf.policy.clone(),
        crate::reload::jail_writes(&spec)?,
    );
    let watch = crate::reload::watch::watch(&reloader);
    let early = connect_agent_early(&cfg);
    let spool = prepare_spool(&cfg, early.is_some());
    let files = match cfg.jail_type {
        JailType::Landjail => Some(crate::tamper::snapshot(&cfg)?),
        JailType::Nsjail => None, // read-only inside the jail
    };
    let mut jail = start_jail(&cfg, &spec)?;
    // Each audit record names the jailed process that made its connection.
    pconf.requesters = jail
        .attributor()
        .map(|a| -> boundary_proxy::RequesterLookup {
            Arc::new(move |peer, dest| a.requester(peer, dest))
        });
    if cfg.jail_type == JailType::Landjail {
        // landjail's proxy listens on the host's loopback; the supervisor notes every connect a
        // jailed process makes, so one it did not note came from outside the jail.
        pconf.stranger =
            Some(|r| r.pid.is_none() && r.name == boundary_jail::attribution::NOT_SEEN);
    }
    tracing::info!(session_id = %run.session_id, jail = %cfg.jail_type, "jail started");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let audit = match AuditPipeline::start(audit_options(&cfg, run, early, spool)) {
            Ok(a) => a,
            Err(e) => {
                jail.kill();
                return Err(anyhow::Error::new(e).context("cannot start audit logging"));
            }
        };
        let proxy = match Proxy::new(pconf, ca, denials.wrap(audit.sink())) {
            Ok(p) => p,
            Err(e) => {
                jail.kill();
                return Err(anyhow::Error::new(e).context("cannot start the proxy"));
            }
        };
        let mut tasks = Vec::new();
        match crate::reload::watch::spawn(reloader, watch) {
            Ok(t) => tasks.push(t),
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: live reload is off"),
        }
        if cfg.stats {
            let forwarder = audit.forwarder_stats();
            match crate::stats::serve(cfg.stats_port, proxy.clone(), forwarder).await {
                Ok(t) => tasks.push(t),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        for l in std::mem::take(&mut jail.listeners) {
            l.set_nonblocking(true).context("proxy listener")?;
            let l = tokio::net::TcpListener::from_std(l).context("proxy listener")?;
            let p = proxy.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = p.serve(l).await {
                    tracing::error!("proxy listener failed: {e}");
                }
            }));
        }
        let code = jail.wait().await;
        for t in &tasks {
            t.abort();
        }
        let report = audit.shutdown().await;
        tracing::debug!(?report, "audit flushed");
        if let Some(files) = files {
            files.report();
        }
        Ok(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsString> {
        env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn landjail_gets_the_proxy_variables_and_nsjail_none() {
        let cert = Path::new("/tmp/boundary-ca-x/ca-cert.pem");
        let land = jail_env(JailType::Landjail, 8087, cert);
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
        ] {
            assert!(PROXY_URL_VARS.contains(&k), "{k} is not set");
        }
        for k in PROXY_URL_VARS {
            assert_eq!(
                value(&land, k).map(|v| v.to_str().unwrap()),
                Some("http://localhost:8087"),
                "{k}"
            );
        }
        for k in NO_PROXY_VARS {
            assert_eq!(
                value(&land, k).map(|v| v.to_str().unwrap()),
                Some("localhost,127.0.0.1,::1"),
                "{k}"
            );
        }
        let ns = jail_env(JailType::Nsjail, 8087, cert);
        assert!(
            !ns.iter().any(|(k, _)| k.to_string_lossy().contains("proxy")
                || k.to_string_lossy().contains("PROXY")),
            "{ns:?}"
        );
        for env in [&land, &ns] {
            assert_eq!(value(env, "SSL_CERT_FILE"), Some(&cert.as_os_str().into()));
            assert_eq!(
                value(env, "SSL_CERT_DIR"),
                Some(&OsString::from("/tmp/boundary-ca-x"))
            );
        }
    }
}
