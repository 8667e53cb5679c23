//! Precedence and merging: each key from each source, the default file, bad values.

use std::collections::HashMap;
use std::path::Path;

use clap::Parser;

use super::cli::RunCli;
use super::*;

/// A HOME of its own and an environment map, so a test controls every source.
pub(super) struct World {
    pub(super) home: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl World {
    pub(super) fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut env = HashMap::new();
        env.insert("HOME".to_string(), home.path().display().to_string());
        World { home, env }
    }
    pub(super) fn set(&mut self, k: &str, v: &str) -> &mut Self {
        self.env.insert(k.into(), v.into());
        self
    }
    pub(super) fn default_file(&self, yaml: &str) {
        let dir = self.home.path().join(".config/coder_boundary");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    }
    pub(super) fn file(&self, name: &str, yaml: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p.display().to_string()
    }
    pub(super) fn resolve(&self, args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["boundary"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--", "true"]);
        let cli = RunCli::try_parse_from(argv).expect("flags parse");
        let env = self.env.clone();
        resolve(&cli.flags, &move |k| env.get(k).cloned())
    }
}

pub(super) fn source(cfg: &Config, key: &str) -> Source {
    cfg.sources
        .iter()
        .find(|s| s.0 == key)
        .unwrap_or_else(|| panic!("no source for {key}"))
        .2
        .clone()
}

#[test]
fn defaults_without_any_source() {
    let w = World::new();
    let c = w.resolve(&[]).unwrap();
    assert!(c.allow.is_empty());
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.proxy_port, 8080);
    assert_eq!(c.stats_port, 6060);
    assert!(!c.stats);
    assert_eq!(c.jail_type, JailType::Nsjail);
    assert!(
        !c.use_real_dns
            && !c.no_user_namespace
            && !c.nested_sandboxes
            && !c.disable_audit_logs
            && !c.session_correlation
    );
    assert_eq!(
        c.log_proxy_socket_path,
        Path::new("/tmp/boundary-audit.sock")
    );
    assert_eq!(c.audit_protocol, AuditProtocol::Auto);
    assert_eq!(c.audit_flush_interval, Duration::from_secs(1));
    assert_eq!(c.audit_queue_size, 10_000);
    assert_eq!(c.audit_shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.config_file, None);
    assert_eq!(c.config_dir, w.home.path().join(".config/coder_boundary"));
    assert_eq!(source(&c, "proxy_port"), Source::Default);
}

/// (flag, env var, yaml key, flag value, env value, yaml value, key in sources, expected winner text per level)
#[test]
fn every_scalar_key_from_every_source_with_precedence() {
    let cases: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
        (
            "--log-level",
            "BOUNDARY_LOG_LEVEL",
            "log_level",
            "debug",
            "INFO",
            "error",
            "log_level",
        ),
        (
            "--log-dir",
            "BOUNDARY_LOG_DIR",
            "log_dir",
            "/f",
            "/e",
            "/y",
            "log_dir",
        ),
        (
            "--proxy-port",
            "PROXY_PORT",
            "proxy_port",
            "1001",
            "1002",
            "1003",
            "proxy_port",
        ),
        (
            "--pprof",
            "BOUNDARY_PPROF",
            "pprof_enabled",
            "true",
            "0",
            "true",
            "pprof_enabled",
        ),
        (
            "--pprof-port",
            "BOUNDARY_PPROF_PORT",
            "pprof_port",
            "2001",
            "2002",
            "2003",
            "pprof_port",
        ),
        (
            "--jail-type",
            "BOUNDARY_JAIL_TYPE",
            "jail_type",
            "landjail",
            "nsjail",
            "landjail",
            "jail_type",
        ),
        (
            "--use-real-dns",
            "BOUNDARY_USE_REAL_DNS",
            "use_real_dns",
            "TRUE",
            "false",
            "1",
            "use_real_dns",
        ),
        (
            "--no-user-namespace",
            "BOUNDARY_NO_USER_NAMESPACE",
            "no_user_namespace",
            "1",
            "False",
            "true",
            "no_user_namespace",
        ),
        (
            "--nested-sandboxes",
            "BOUNDARY_NESTED_SANDBOXES",
            "nested_sandboxes",
            "true",
            "0",
            "1",
            "nested_sandboxes",
        ),
        (
            "--disable-audit-logs",
            "DISABLE_AUDIT_LOGS",
            "disable_audit_logs",
            "true",
            "0",
            "true",
            "disable_audit_logs",
        ),
        (
            "--upstream-proxy",
            "BOUNDARY_UPSTREAM_PROXY",
            "upstream_proxy",
            "http://f:1",
            "http://e:2",
            "https://y:3",
            "upstream_proxy",
        ),
        (
            "--upstream-ca-file",
            "BOUNDARY_UPSTREAM_CA_FILE",
            "upstream_ca_file",
            "/f.pem",
            "/e.pem",
            "/y.pem",
            "upstream_ca_file",
        ),
        (
            "--workspace-id",
            "BOUNDARY_WORKSPACE_ID",
            "workspace_id",
            "11111111-1111-4111-8111-111111111111",
            "22222222-2222-4222-8222-222222222222",
            "33333333-3333-4333-8333-333333333333",
            "workspace_id",
        ),
        (
            "--workspace-name",
            "BOUNDARY_WORKSPACE_NAME",
            "workspace_name",
            "wf",
            "we",
            "wy",
            "workspace_name",
        ),
        (
            "--workspace-owner",
            "BOUNDARY_WORKSPACE_OWNER",
            "workspace_owner",
            "of",
            "oe",
            "oy",
            "workspace_owner",
        ),
        (
            "--template-id",
            "BOUNDARY_TEMPLATE_ID",
            "template_id",
            "11111111-1111-4111-8111-111111111111",
            "22222222-2222-4222-8222-222222222222",
            "33333333-3333-4333-8333-333333333333",
            "template_id",
        ),
        (
            "--template-version-id",
            "BOUNDARY_TEMPLATE_VERSION_ID",
            "template_version_id",
            "11111111-1111-4111-8111-111111111111",
            "22222222-2222-4222-8222-222222222222",
            "33333333-3333-4333-8333-333333333333",
            "template_version_id",
        ),
        (
            "--agent-name",
            "BOUNDARY_AGENT_NAME",
            "agent_name",
            "af",
            "ae",
            "ay",
            "agent_name",
        ),
        (
            "--audit-log",
            "BOUNDARY_AUDIT_LOG",
            "audit_log",
            "/f.jsonl",
            "/e.jsonl",
            "/y.jsonl",
            "audit_log",
        ),
        (
            "--audit-protocol",
            "BOUNDARY_AUDIT_PROTOCOL",
            "audit_protocol",
            "v1",
            "v2",
            "auto",
            "audit_protocol",
        ),
        (
            "--audit-flush-interval",
            "BOUNDARY_AUDIT_FLUSH_INTERVAL",
            "audit_flush_interval",
            "100ms",
            "200ms",
            "300ms",
            "audit_flush_interval",
        ),
        (
            "--audit-queue-size",
            "BOUNDARY_AUDIT_QUEUE_SIZE",
            "audit_queue_size",
            "11",
            "12",
            "13",
            "audit_queue_size",
        ),
        (
            "--audit-shutdown-timeout",
            "BOUNDARY_AUDIT_SHUTDOWN_TIMEOUT",
            "audit_shutdown_timeout",
            "1s",
            "2s",
            "3s",
            "audit_shutdown_timeout",
        ),
        (
            "--landjail-deny-bind",
            "BOUNDARY_LANDJAIL_DENY_BIND",
            "landjail_deny_bind",
            "true",
            "false",
            "true",
            "landjail_deny_bind",
        ),
        (
            "--idle-timeout",
            "BOUNDARY_IDLE_TIMEOUT",
            "idle_timeout",
            "1m",
            "2m",
            "3m",
            "idle_timeout",
        ),
        (
            "--enable-session-correlation",
            "BOUNDARY_SESSION_CORRELATION_ENABLED",
            "session_correlation_enabled",
            "true",
            "false",
            "true",
            "session_correlation_enabled",
        ),
    ];
    for &(flag, env, yaml, fv, ev, yv, key) in cases {
        let shown = |c: &Config| c.sources.iter().find(|s| s.0 == key).unwrap().1.clone();
        let mut w = World::new();
        w.set("CODER_AGENT_URL", "https://dev.coder.com");
        let path = w.file("c.yaml", &format!("{yaml}: \"{yv}\"\n"));
        // file only
        let c = w
            .resolve(&["--config", &path])
            .unwrap_or_else(|e| panic!("{key} file: {e}"));
        assert_eq!(source(&c, key), Source::File(path.clone().into()), "{key}");
        let from_file = shown(&c);
        // env beats file
        w.set(env, ev);
        let c = w
            .resolve(&["--config", &path])
            .unwrap_or_else(|e| panic!("{key} env: {e}"));
        assert_eq!(source(&c, key), Source::Env(env_static(env)), "{key}");
        let from_env = shown(&c);
        // flag beats env
        let flag_arg = format!("{flag}={fv}");
        let c = w
            .resolve(&["--config", &path, &flag_arg])
            .unwrap_or_else(|e| panic!("{key} flag: {e}"));
        assert!(matches!(source(&c, key), Source::Flag(_)), "{key}");
        let from_flag = shown(&c);
        assert_ne!(
            from_file, from_env,
            "{key}: file and env values should differ"
        );
        assert_ne!(
            from_env, from_flag,
            "{key}: env and flag values should differ"
        );
    }
}

fn env_static(name: &str) -> &'static str {
    Box::leak(name.to_string().into_boxed_str())
}

#[test]
fn typed_values_land_in_the_config() {
    let mut w = World::new();
    w.set("PROXY_PORT", "9999")
        .set("BOUNDARY_JAIL_TYPE", "landjail")
        .set("BOUNDARY_LOG_LEVEL", "DEBUG");
    let c = w
        .resolve(&[
            "--use-real-dns",
            "--pprof=false",
            "--audit-flush-interval",
            "250ms",
        ])
        .unwrap();
    assert_eq!(c.proxy_port, 9999);
    assert_eq!(c.jail_type, JailType::Landjail);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(c.use_real_dns);
    assert!(!c.stats);
    assert_eq!(c.audit_flush_interval, Duration::from_millis(250));
}

#[test]
fn rules_merge_file_then_env_then_flags_and_are_never_split() {
    let mut w = World::new();
    w.default_file(
        "allowlist:\n  - \"domain=dev.coder.com\"\n  - \"method=GET,HEAD domain=api.github.com\"\n",
    );
    w.set("BOUNDARY_ALLOW", "domain=env.example.com path=/a,/b");
    let c = w
        .resolve(&[
            "--allow",
            "domain=flag.example.com",
            "--allow=method=POST,PUT domain=x.com",
        ])
        .unwrap();
    assert_eq!(
        c.allow,
        vec![
            "domain=dev.coder.com",
            "method=GET,HEAD domain=api.github.com",
            "domain=env.example.com path=/a,/b",
            "domain=flag.example.com",
            "method=POST,PUT domain=x.com",
        ]
    );
    assert_eq!(c.policy.rules().len(), 5);
    assert!(c
        .config_file
        .as_ref()
        .unwrap()
        .ends_with(".config/coder_boundary/config.yaml"));
    assert!(c.policy.decide("PUT", "x.com", "/").allowed);
}

#[test]
fn default_file_is_read_only_if_present() {
    let w = World::new();
    assert_eq!(w.resolve(&[]).unwrap().config_file, None);
    w.default_file(
        "proxy_port: 8087\njail_type: nsjail\nlog_dir: /tmp/boundary_logs\nlog_level: warn\n",
    );
    let c = w.resolve(&[]).unwrap();
    assert_eq!(c.proxy_port, 8087);
    assert_eq!(c.log_dir.as_deref(), Some(Path::new("/tmp/boundary_logs")));
}

#[test]
fn explicit_config_that_is_missing_is_an_error() {
    let mut w = World::new();
    let err = w
        .resolve(&["--config", "/nonexistent/boundary.yaml"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/boundary.yaml does not exist"),
        "{err}"
    );
    w.set("BOUNDARY_CONFIG", "/nonexistent/env.yaml");
    let err = w.resolve(&[]).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/env.yaml does not exist"),
        "{err}"
    );
}

#[test]
fn unknown_yaml_key_names_key_and_file() {
    let w = World::new();
    let path = w.file("bad.yaml", "allowlist: []\nalowlist:\n  - domain=x.com\n");
    let err = w.resolve(&["--config", &path]).unwrap_err().to_string();
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("unknown key \"alowlist\""), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn malformed_yaml_and_values_are_explained() {
    let w = World::new();
    let path = w.file("bad.yaml", "allowlist: domain=x.com: [\n");
    let err = w.resolve(&["--config", &path]).unwrap_err().to_string();
    assert!(err.contains(&path), "{err}");
    let path = w.file("bad2.yaml", "proxy_port: 70000\n");
    let err = w.resolve(&["--config", &path]).unwrap_err().to_string();
    assert!(
        err.contains("proxy_port from file") && err.contains("not a TCP port"),
        "{err}"
    );
    let path = w.file("bad3.yaml", "allowlist:\n  - \"domain=api.*\"\n");
    let err = w.resolve(&["--config", &path]).unwrap_err().to_string();
    assert!(
        err.contains("config file") && err.contains("cannot end with \"*\""),
        "{err}"
    );
    let err = w
        .resolve(&["--jail-type", "docker"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jail_type from flag --jail-type") && err.contains("nsjail"),
        "{err}"
    );
    let err = w.resolve(&["--use-real-dns=yes"]).unwrap_err().to_string();
    assert!(err.contains("true, false, 1 or 0"), "{err}");
    let err = w
        .resolve(&["--workspace-id", "abc"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a UUID"), "{err}");
    let err = w.resolve(&["--allow", ""]).unwrap_err().to_string();
    assert!(err.contains("--allow") && err.contains("empty"), "{err}");
}

#[test]
fn empty_boundary_allow_is_an_error() {
    let mut w = World::new();
    w.set("BOUNDARY_ALLOW", "");
    let err = w.resolve(&[]).unwrap_err().to_string();
    assert!(err.contains("BOUNDARY_ALLOW is set but empty"), "{err}");
}

#[test]
fn identity_falls_back_to_coder_variables() {
    let mut w = World::new();
    w.set("CODER_WORKSPACE_NAME", "some-task-c88d")
        .set("CODER_WORKSPACE_OWNER_NAME", "joe")
        .set("CODER_WORKSPACE_AGENT_NAME", "dev");
    let c = w.resolve(&[]).unwrap();
    assert_eq!(c.identity.workspace_name.as_deref(), Some("some-task-c88d"));
    assert_eq!(c.identity.owner.as_deref(), Some("joe"));
    assert_eq!(c.identity.agent_name.as_deref(), Some("dev"));
    w.set("BOUNDARY_WORKSPACE_NAME", "explicit");
    assert_eq!(
        w.resolve(&[]).unwrap().identity.workspace_name.as_deref(),
        Some("explicit")
    );
    let c = w
        .resolve(&["--workspace-id", "F2BD4E9F-7E27-49FC-961E-BE4D1C2AA987"])
        .unwrap();
    assert_eq!(
        c.identity.workspace_id.as_deref(),
        Some("f2bd4e9f-7e27-49fc-961e-be4d1c2aa987")
    );
}

#[test]
fn resolve_map_merges_all_sources() {
    let mut w = World::new();
    let path = w.file(
        "c.yaml",
        "resolve:\n  a.test: 127.0.0.1\n  b.test: 127.0.0.2\n",
    );
    w.set("BOUNDARY_RESOLVE", "b.test=127.0.0.3, c.test=::1");
    let c = w
        .resolve(&["--config", &path, "--resolve", "C.test.=127.0.0.4"])
        .unwrap();
    let got: Vec<(String, String)> = c
        .resolve
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a.test".into(), "127.0.0.1".into()),
            ("b.test".into(), "127.0.0.3".into()),
            ("c.test".into(), "127.0.0.4".into())
        ]
    );
    let err = w.resolve(&["--resolve", "x.test"]).unwrap_err().to_string();
    assert!(err.contains("NAME=ADDR"), "{err}");
    let err = w
        .resolve(&["--resolve", "x.test=somehost"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an IP address"), "{err}");
}

#[test]
fn session_correlation_targets() {
    let mut w = World::new();
    let err = w
        .resolve(&["--enable-session-correlation"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no inject target"), "{err}");
    w.set("CODER_AGENT_URL", "https://dev.coder.com:8443/");
    let c = w.resolve(&["--enable-session-correlation"]).unwrap();
    assert_eq!(
        c.inject_targets,
        vec![
            "domain=dev.coder.com path=/api/v2/ai-gateway/*",
            "domain=dev.coder.com path=/api/v2/aibridge/*"
        ],
        "the two rules Go derives"
    );
    assert_eq!(
        source(&c, "session_id_inject_targets"),
        Source::Env("CODER_AGENT_URL")
    );
    let c = w
        .resolve(&[
            "--enable-session-correlation",
            "--session-id-inject-target",
            "domain=a.com",
            "--session-id-inject-target",
            "domain=b.com path=/x",
        ])
        .unwrap();
    assert_eq!(
        c.inject_targets,
        vec!["domain=a.com", "domain=b.com path=/x"]
    );
    let err = w
        .resolve(&[
            "--enable-session-correlation",
            "--session-id-inject-target",
            "domain=a.*",
        ])
        .unwrap_err()
        .to_string();
    assert!(err.contains("inject target"), "{err}");
    for (no_domain, args) in [
        ("flag", vec!["--session-id-inject-target", "path=/api/*"]),
        ("flag", vec!["--session-id-inject-target", "method=POST"]),
    ] {
        let mut all = vec!["--enable-session-correlation"];
        all.extend(args);
        let err = w.resolve(&all).unwrap_err().to_string();
        assert!(
            err.contains("no domain=") && err.contains("session_id_inject_targets"),
            "{no_domain}: {err}"
        );
    }
    w.set("BOUNDARY_SESSION_ID_INJECT_TARGET", "path=/x");
    let err = w.resolve(&[]).unwrap_err().to_string();
    assert!(
        err.contains("BOUNDARY_SESSION_ID_INJECT_TARGET") && err.contains("no domain="),
        "also with correlation off, and named by its source: {err}"
    );
}

#[test]
fn inject_targets_from_every_source_add_up() {
    let mut w = World::new();
    let path = w.file(
        "c.yaml",
        "session_correlation_enabled: true\nsession_id_inject_targets:\n  - domain=file.test\n",
    );
    w.set(
        "BOUNDARY_SESSION_ID_INJECT_TARGET",
        "domain=env.test path=/a,/b",
    );
    let c = w
        .resolve(&[
            "--config",
            &path,
            "--session-id-inject-target",
            "domain=flag.test",
        ])
        .unwrap();
    assert_eq!(
        c.inject_targets,
        vec![
            "domain=file.test",
            "domain=env.test path=/a,/b",
            "domain=flag.test"
        ]
    );
}

#[test]
fn socket_path_follows_tmpdir_and_the_agent_variable() {
    let mut w = World::new();
    w.set("TMPDIR", "/var/tmp/x");
    assert_eq!(
        w.resolve(&[]).unwrap().log_proxy_socket_path,
        Path::new("/var/tmp/x/boundary-audit.sock")
    );
    w.set(
        "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
        "/run/agent.sock",
    );
    assert_eq!(
        w.resolve(&[]).unwrap().log_proxy_socket_path,
        Path::new("/run/agent.sock")
    );
    let c = w.resolve(&["--log-proxy-socket-path", "/f.sock"]).unwrap();
    assert_eq!(c.log_proxy_socket_path, Path::new("/f.sock"));
}

#[test]
fn the_agent_socket_variable_under_its_new_name_comes_first() {
    let mut w = World::new();
    w.set(
        "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
        "/run/old-name.sock",
    );
    w.set(
        "CODER_AGENT_FIREWALL_LOG_PROXY_SOCKET_PATH",
        "/run/new-name.sock",
    );
    let c = w.resolve(&[]).unwrap();
    assert_eq!(c.log_proxy_socket_path, Path::new("/run/new-name.sock"));
    assert_eq!(
        source(&c, "log_proxy_socket_path"),
        Source::Env("CODER_AGENT_FIREWALL_LOG_PROXY_SOCKET_PATH")
    );
}

#[test]
fn xdg_config_home_moves_the_ca_directory_not_the_default_file() {
    let mut w = World::new();
    w.set("XDG_CONFIG_HOME", "/xdg");
    let c = w.resolve(&[]).unwrap();
    assert_eq!(c.config_dir, Path::new("/xdg/coder_boundary"));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn the_spool_dir_default_is_resolved_with_the_other_settings() {
    let mut w = World::new();
    w.set("XDG_STATE_HOME", "/state");
    let c = w.resolve(&[]).unwrap();
    assert_eq!(c.audit_spool_dir, Path::new("/state/coder_boundary/spool"));
    let shown = c.sources.iter().find(|r| r.0 == "audit_spool_dir").unwrap();
    assert_eq!(
        (shown.1.as_str(), &shown.2),
        ("/state/coder_boundary/spool", &Source::Default),
        "boundary config shows the directory a run uses"
    );
}

#[test]
fn presets_add_their_rules_after_the_users_each_rule_naming_its_source() {
    let mut w = World::new();
    w.default_file("allowlist:\n  - domain=file.test\npresets:\n  - npm\n");
    w.set("BOUNDARY_PRESETS", "pypi, npm");
    let c = w
        .resolve(&["--allow", "domain=flag.test", "--preset", "github@1"])
        .unwrap();
    let names: Vec<&str> = c.presets.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["npm", "pypi", "github"],
        "each preset once, in order"
    );
    // The user's rules first, then each preset's, in the order the presets were named.
    assert_eq!(
        c.allow[..3],
        [
            "domain=file.test",
            "domain=flag.test",
            "domain=registry.npmjs.org"
        ]
    );
    assert_eq!(c.allow.len(), c.policy.rules().len());
    let origin = |host: &str| {
        c.policy
            .first_match("GET", host, "/")
            .and_then(|r| r.origin.clone())
    };
    assert_eq!(
        origin("registry.npmjs.org").as_deref(),
        Some("preset npm@1")
    );
    assert_eq!(
        origin("files.pythonhosted.org").as_deref(),
        Some("preset pypi@1")
    );
    assert_eq!(
        origin("codeload.github.com").as_deref(),
        Some("preset github@1")
    );
    assert_eq!(origin("flag.test").as_deref(), Some("flag --allow"));
    assert!(origin("file.test").unwrap().starts_with("file "));
    assert_eq!(origin("crates.io"), None);
    // `boundary config`: the presets rows, then one allow row per preset rule.
    let rows: Vec<(String, String)> = c
        .sources
        .iter()
        .filter(|r| r.0 == "presets" || matches!(r.2, Source::Preset(_)))
        .map(|r| (r.1.clone(), r.2.to_string()))
        .collect();
    let shown: Vec<String> = rows.iter().map(|(v, s)| format!("{v} ({s})")).collect();
    assert!(shown[0].starts_with("npm@1 (file "), "{shown:?}");
    assert_eq!(shown[1], "pypi@1 (env BOUNDARY_PRESETS)");
    assert_eq!(shown[2], "npm@1 (env BOUNDARY_PRESETS)");
    assert_eq!(shown[3], "github@1 (flag --preset)");
    assert_eq!(shown[4], "domain=registry.npmjs.org (preset npm@1)");
    assert_eq!(shown[5], "domain=pypi.org (preset pypi@1)");
    assert_eq!(
        shown.len(),
        4 + 1 + 2 + crate::presets::find("github").unwrap().rules.len()
    );
}

#[test]
fn an_unknown_preset_is_refused_with_the_known_names() {
    let mut w = World::new();
    w.set("BOUNDARY_PRESETS", "npm,pipy");
    let e = w.resolve(&[]).unwrap_err().to_string();
    assert!(
        e.contains("presets from env BOUNDARY_PRESETS")
            && e.contains("\"pipy\"")
            && e.contains("pypi"),
        "{e}"
    );
    let e = World::new()
        .resolve(&["--preset", "npm@7"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("this boundary has npm@1"), "{e}");
}
