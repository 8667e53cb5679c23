//! Replays the command lines that Coder's modules and docs use against our binary: each must
//! be accepted and mean the same (same rules, ports, levels, paths), and a few run for real.
//!
//! Sources of the command lines (public, read 2026):
//! - coder/registry `claude-code` module, `scripts/start.sh`: `boundary-run --log-dir DIR
//!   --allow ... --proxy-port 8087 --log-level WARN [--pprof --pprof-port 6067] -- claude ARGS`.
//! - coder/registry `agentapi` module, `main.sh`: writes `config.yaml` with `jail_type`,
//!   `proxy_port`, `log_level: warn`, then runs `coder-no-caps boundary -- <start script> true PORT`.
//! - coder/coder docs `ai-coder/agent-boundaries/index.md`: `config.yaml` with `allowlist`,
//!   `jail_type`, `log_dir`, `proxy_port`, `log_level`; `boundary --config=<path> -- cmd`.
//! - docs/interop.md §1: the variables the agent and modules export.
//!
//! Every way Coder and its modules start the firewall (issue 14 item 1), replayed by
//! `every_way_coder_starts_the_firewall` (coder/registry at 6be121e4, August 2026):
//! - `agent-firewall` module v0.0.3, `registry/coder/modules/agent-firewall/scripts/install.sh.tftpl`:
//!   its wrapper runs `exec "${SCRIPT_DIR}/coder-no-caps" agent-firewall "$@"` (`boundary` on
//!   Coder versions without the new name), or `exec agent-firewall "$@"` with
//!   `use_agent_firewall_directly`; its README runs `"<wrapper>" --config="<config path>" --
//!   claude`.
//! - `claude-code` module v4.7.0, `registry/coder/modules/claude-code/scripts/start.sh`:
//!   `agentapi server ... -- "$(dirname "$(which coder)")/coder-no-caps" boundary -- claude ARGS`.
//! - `claude-code` modules v4.2.0 to v4.6.0, same file: `boundary-run [--log-dir DIR --allow ...
//!   --proxy-port 8087 --log-level WARN] -- claude ARGS` (v4.6.0 passes no flags).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use boundary_integration::farhost::boundary_binary;
use serde_json::Value;

struct Effective {
    settings: Vec<(String, String, String)>,
    command: Vec<String>,
}

impl Effective {
    fn get(&self, key: &str) -> &str {
        &self
            .settings
            .iter()
            .find(|s| s.0 == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }
    fn source(&self, key: &str) -> &str {
        &self.settings.iter().find(|s| s.0 == key).unwrap().2
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|s| s.0 == key)
            .map(|s| s.1.as_str())
            .collect()
    }
}

/// `boundary config --json` with the same arguments: the parser is the run's parser.
fn effective(home: &Path, argv0: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Effective {
    let bin = boundary_binary().expect("boundary binary");
    let mut full: Vec<String> = Vec::new();
    let mut rest = args.to_vec();
    if argv0.is_some() {
        // `coder boundary ...`: the word after argv[0] is "boundary".
        assert_eq!(rest.remove(0), "boundary");
    }
    full.push("config".into());
    full.push("--json".into());
    full.extend(rest.iter().map(|s| s.to_string()));
    let out = Command::new(&bin)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env.iter().copied())
        .args(&full)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["value"].as_str().unwrap().to_string(),
                r["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let command = v["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    Effective { settings, command }
}

#[test]
fn claude_code_module_command_line() {
    let home = tempfile::tempdir().unwrap();
    let args = [
        "--log-dir",
        "/tmp/boundary_logs",
        "--allow",
        "domain=anthropic.com",
        "--allow",
        "domain=registry.npmjs.org",
        "--allow",
        "domain=sentry.io",
        "--allow",
        "domain=claude.ai",
        "--allow",
        "domain=dev.coder.com",
        "--allow",
        "method=GET,HEAD domain=*.github.com",
        "--proxy-port",
        "8087",
        "--log-level",
        "WARN",
        "--pprof",
        "--pprof-port",
        "6067",
        "--",
        "claude",
        "--dangerously-skip-permissions",
        "--",
        "fix the bug",
    ];
    let e = effective(home.path(), None, &args, &[]);
    assert_eq!(e.get("log_dir"), "/tmp/boundary_logs");
    assert_eq!(
        e.all("allow"),
        vec![
            "domain=anthropic.com",
            "domain=registry.npmjs.org",
            "domain=sentry.io",
            "domain=claude.ai",
            "domain=dev.coder.com",
            "method=GET,HEAD domain=*.github.com"
        ]
    );
    assert_eq!(e.get("proxy_port"), "8087");
    assert_eq!(e.get("log_level"), "warn");
    assert_eq!(e.get("pprof_enabled"), "true");
    assert_eq!(e.get("pprof_port"), "6067");
    assert_eq!(
        e.command,
        vec![
            "claude",
            "--dangerously-skip-permissions",
            "--",
            "fix the bug"
        ]
    );
}

#[test]
fn agentapi_module_config_file_and_coder_boundary_form() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/coder_boundary");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "jail_type: nsjail\nproxy_port: 8087\nlog_level: warn\n",
    )
    .unwrap();
    let e = effective(
        home.path(),
        Some("coder-no-caps"),
        &[
            "boundary",
            "--",
            "/home/coder/.agentapi-module/scripts/agentapi-start.sh",
            "true",
            "3284",
        ],
        &[],
    );
    assert_eq!(e.get("jail_type"), "nsjail");
    assert_eq!(e.get("proxy_port"), "8087");
    assert!(
        e.source("proxy_port").starts_with("file "),
        "{}",
        e.source("proxy_port")
    );
    assert_eq!(e.get("log_level"), "warn");
    assert_eq!(e.command[1..], ["true", "3284"]);
}

#[test]
fn docs_config_yaml_and_explicit_config_flag() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("policy.yaml");
    std::fs::write(
        &path,
        r#"allowlist:
  - "domain=dev.coder.com" # Required - use your Coder deployment domain
  - "domain=api.anthropic.com" # Required - API endpoint for Claude
  - "domain=statsig.anthropic.com" # Required - Feature flags and analytics
  - "domain=claude.ai" # Recommended - WebFetch/WebSearch features
  - "domain=*.sentry.io" # Recommended - Error tracking (helps Anthropic fix bugs)
jail_type: nsjail
log_dir: /tmp/boundary_logs
proxy_port: 8087
log_level: warn
"#,
    )
    .unwrap();
    let flag = format!("--config={}", path.display());
    let e = effective(home.path(), None, &[&flag, "--", "claude"], &[]);
    assert_eq!(e.all("allow").len(), 5);
    assert_eq!(e.all("allow")[4], "domain=*.sentry.io");
    assert_eq!(e.get("log_dir"), "/tmp/boundary_logs");
    assert_eq!(e.get("proxy_port"), "8087");
    // The same file through BOUNDARY_CONFIG.
    let p = path.display().to_string();
    let e2 = effective(
        home.path(),
        None,
        &["--", "claude"],
        &[("BOUNDARY_CONFIG", &p)],
    );
    assert_eq!(e2.all("allow"), e.all("allow"));
}

#[test]
fn variables_the_agent_and_modules_export() {
    let home = tempfile::tempdir().unwrap();
    let env: HashMap<&str, &str> = [
        ("BOUNDARY_ALLOW", "domain=dev.coder.com"),
        ("PROXY_PORT", "8099"),
        ("BOUNDARY_LOG_LEVEL", "info"),
        ("BOUNDARY_JAIL_TYPE", "landjail"),
        ("DISABLE_AUDIT_LOGS", "1"),
        (
            "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
            "/tmp/coder.XYZ/boundary-audit.sock",
        ),
        ("CODER_WORKSPACE_NAME", "some-task-c88d"),
        ("CODER_WORKSPACE_OWNER_NAME", "joe"),
        ("CODER_WORKSPACE_AGENT_NAME", "dev"),
        ("CODER_AGENT_URL", "https://dev.coder.com/"),
        ("BOUNDARY_SESSION_CORRELATION_ENABLED", "true"),
    ]
    .into_iter()
    .collect();
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    let e = effective(home.path(), None, &["--", "codex"], &env);
    assert_eq!(e.all("allow"), vec!["domain=dev.coder.com"]);
    assert_eq!(e.get("proxy_port"), "8099");
    assert_eq!(e.get("log_level"), "info");
    assert_eq!(e.get("jail_type"), "landjail");
    assert_eq!(e.get("disable_audit_logs"), "true");
    assert_eq!(
        e.get("log_proxy_socket_path"),
        "/tmp/coder.XYZ/boundary-audit.sock"
    );
    assert_eq!(e.get("workspace_name"), "some-task-c88d");
    assert_eq!(e.get("workspace_owner"), "joe");
    assert_eq!(e.get("agent_name"), "dev");
    assert_eq!(
        e.all("session_id_inject_targets"),
        vec![
            "domain=dev.coder.com path=/api/v2/ai-gateway/*",
            "domain=dev.coder.com path=/api/v2/aibridge/*"
        ]
    );
}

/// The names Coder's modules and `cargo install` give the binary, in a fresh directory: links
/// to `boundary` as the docs install them, and the `agent-firewall` / `boundary-run` programs
/// cargo builds (which run the `boundary` next to them).
struct Names {
    dir: tempfile::TempDir,
}

impl Names {
    fn new() -> Names {
        let bin = boundary_binary().expect("boundary binary");
        let dir = tempfile::tempdir().unwrap();
        for name in ["coder-no-caps", "coder", "agent-firewall", "boundary-run"] {
            std::os::unix::fs::symlink(&bin, dir.path().join(name)).unwrap();
        }
        Names { dir }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    /// A module's wrapper script: `exec <line> "$@"`, as the agent-firewall module writes it.
    fn wrapper(&self, exec_line: &str) -> std::path::PathBuf {
        let w = self.path(&format!(
            "wrapper-{}.sh",
            self.dir.path().read_dir().unwrap().count()
        ));
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\nset -eu\nSCRIPT_DIR=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\nexec {exec_line} \"$@\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    }
}

/// `exe words... config --json args...`: what the run behind `exe words... args...` would use.
fn effective_via(exe: &Path, words: &[&str], home: &Path, args: &[&str]) -> Effective {
    let out = Command::new(exe)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap())
        .args(words)
        .args(["config", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{exe:?} {words:?} {args:?} rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Effective {
        settings: v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let t = |k: &str| r[k].as_str().unwrap().to_string();
                (t("key"), t("value"), t("source"))
            })
            .collect(),
        command: v["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect(),
    }
}

#[test]
fn every_way_coder_starts_the_firewall() {
    let names = Names::new();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("module/config/config.yaml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    // The shape of the module's config.yaml.tftpl (domain rules, its own log dir, port 8087).
    std::fs::write(
        &config,
        "allowlist:\n  - domain=dev.coder.com\n  - domain=api.anthropic.com\nlog_dir: /tmp/af_logs\nlog_level: warn\nproxy_port: 8087\n",
    )
    .unwrap();
    let config_flag = format!("--config={}", config.display());
    let cargo_bin = boundary_binary().unwrap();
    let cargo_dir = cargo_bin.parent().unwrap();
    // (what, program, words before the flags): each followed by `--config=<path> -- claude`.
    let forms: Vec<(&str, std::path::PathBuf, Vec<&str>)> = vec![
        (
            "agent-firewall module, coder-no-caps agent-firewall",
            names.wrapper("\"${SCRIPT_DIR}/coder-no-caps\" agent-firewall"),
            vec![],
        ),
        (
            "agent-firewall module, coder-no-caps boundary (older Coder)",
            names.wrapper("\"${SCRIPT_DIR}/coder-no-caps\" boundary"),
            vec![],
        ),
        (
            "agent-firewall module, use_agent_firewall_directly",
            names.wrapper(&format!("\"{}\"", names.path("agent-firewall").display())),
            vec![],
        ),
        (
            "claude-code v4.7, coder-no-caps boundary",
            names.path("coder-no-caps"),
            vec!["boundary"],
        ),
        (
            "claude-code v4.2 to v4.6, boundary-run",
            names.path("boundary-run"),
            vec![],
        ),
        (
            "coder agent-firewall",
            names.path("coder"),
            vec!["agent-firewall"],
        ),
        (
            "cargo install: agent-firewall",
            cargo_dir.join("agent-firewall"),
            vec![],
        ),
        (
            "cargo install: boundary-run",
            cargo_dir.join("boundary-run"),
            vec![],
        ),
        ("boundary", cargo_bin.clone(), vec![]),
    ];
    for (what, exe, words) in &forms {
        assert!(
            exe.exists(),
            "{what}: {exe:?} missing (cargo build -p boundary builds it)"
        );
        let e = effective_via(
            exe,
            words,
            home.path(),
            &[&config_flag, "--", "claude", "-p", "fix it"],
        );
        assert_eq!(
            e.all("allow"),
            vec!["domain=dev.coder.com", "domain=api.anthropic.com"],
            "{what}"
        );
        assert_eq!(e.get("proxy_port"), "8087", "{what}");
        assert_eq!(e.get("log_dir"), "/tmp/af_logs", "{what}");
        assert_eq!(
            e.source("proxy_port"),
            format!("file {}", config.display()),
            "{what}"
        );
        assert_eq!(e.command, ["claude", "-p", "fix it"], "{what}");
    }
    // claude-code v4.2's full flag list through boundary-run means what it means for boundary.
    let v42 = [
        "--log-dir",
        "/tmp/boundary_logs",
        "--allow",
        "domain=anthropic.com",
        "--allow",
        "domain=registry.npmjs.org",
        "--allow",
        "domain=sentry.io",
        "--allow",
        "domain=claude.ai",
        "--allow",
        "domain=dev.coder.com",
        "--proxy-port",
        "8087",
        "--log-level",
        "WARN",
        "--",
        "claude",
        "--dangerously-skip-permissions",
    ];
    let run = effective_via(&names.path("boundary-run"), &[], home.path(), &v42);
    let plain = effective_via(&cargo_bin, &[], home.path(), &v42);
    assert_eq!(run.settings, plain.settings);
    assert_eq!(run.all("allow").len(), 5);
    assert_eq!(run.get("log_level"), "warn");
    // `--help` through each module name is boundary's (the module's install script probes
    // `coder agent-firewall --help`, then `coder boundary --help`).
    for (exe, words) in [
        (names.path("coder"), vec!["agent-firewall"]),
        (names.path("coder"), vec!["boundary"]),
    ] {
        let out = Command::new(&exe)
            .args(&words)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{words:?} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("--allow"));
    }
}

/// The module forms run for real: a jailed command's exit status comes back unchanged.
#[test]
fn module_command_lines_run_jailed() {
    assert!(
        nix_is_root(),
        "this test needs root (CI runs as root): it starts real jails"
    );
    let bin = boundary_binary().unwrap();
    let home = tempfile::tempdir().unwrap();
    let link = home.path().join("coder-no-caps");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let runs: Vec<(std::path::PathBuf, Vec<&str>)> = vec![
        (
            bin.clone(),
            vec![
                "--log-dir",
                "LOGDIR",
                "--allow",
                "domain=anthropic.com",
                "--proxy-port",
                "8087",
                "--log-level",
                "WARN",
                "--",
                "sh",
                "-c",
                "exit 7",
            ],
        ),
        (link.clone(), vec!["boundary", "--", "sh", "-c", "exit 5"]),
        (
            link.clone(),
            vec!["agent-firewall", "--", "sh", "-c", "exit 6"],
        ),
        (
            bin.with_file_name("boundary-run"),
            vec!["--", "sh", "-c", "exit 4"],
        ),
        (
            bin.with_file_name("agent-firewall"),
            vec!["--", "sh", "-c", "exit 3"],
        ),
    ];
    let logdir = home.path().join("logs").display().to_string();
    for (exe, args) in runs {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == "LOGDIR" {
                    logdir.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        let want: i32 = args
            .last()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let out = Command::new(&exe)
            .env("HOME", home.path())
            .env(
                "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
                home.path().join("none.sock"),
            )
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(want),
            "{exe:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        Path::new(&logdir).join("boundary.log").is_file(),
        "--log-dir received the application log"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
