//! The command line as a user meets it: help, version, `check`, `config`, and the errors.

use std::process::{Command, Output};

fn boundary(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boundary"));
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run boundary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let home = tempfile::tempdir().unwrap();
    let o = boundary(home.path(), &["--version"], &[]);
    assert!(o.status.success());
    assert!(text(&o).0.starts_with("boundary "), "{:?}", text(&o));
    let o = boundary(home.path(), &["--help"], &[]);
    assert!(o.status.success());
    // Help is wrapped to the terminal; compare with whitespace collapsed.
    let help = text(&o).0.split_whitespace().collect::<Vec<_>>().join(" ");
    for (flag, env, yaml) in [
        ("--config", "BOUNDARY_CONFIG", ""),
        ("--allow", "BOUNDARY_ALLOW", "allowlist"),
        ("--log-level", "BOUNDARY_LOG_LEVEL", "log_level"),
        ("--log-dir", "BOUNDARY_LOG_DIR", "log_dir"),
        ("--proxy-port", "PROXY_PORT", "proxy_port"),
        ("--pprof", "BOUNDARY_PPROF", "pprof_enabled"),
        ("--pprof-port", "BOUNDARY_PPROF_PORT", "pprof_port"),
        ("--jail-type", "BOUNDARY_JAIL_TYPE", "jail_type"),
        ("--use-real-dns", "BOUNDARY_USE_REAL_DNS", "use_real_dns"),
        (
            "--no-user-namespace",
            "BOUNDARY_NO_USER_NAMESPACE",
            "no_user_namespace",
        ),
        (
            "--disable-audit-logs",
            "DISABLE_AUDIT_LOGS",
            "disable_audit_logs",
        ),
        (
            "--log-proxy-socket-path",
            "CODER_AGENT_FIREWALL_LOG_PROXY_SOCKET_PATH",
            "",
        ),
        (
            "--enable-session-correlation",
            "BOUNDARY_SESSION_CORRELATION_ENABLED",
            "session_correlation_enabled",
        ),
        (
            "--session-id-inject-target",
            "BOUNDARY_SESSION_ID_INJECT_TARGET",
            "session_id_inject_targets",
        ),
        (
            "--upstream-proxy",
            "BOUNDARY_UPSTREAM_PROXY",
            "upstream_proxy",
        ),
        ("--resolve", "BOUNDARY_RESOLVE", "resolve"),
        (
            "--upstream-ca-file",
            "BOUNDARY_UPSTREAM_CA_FILE",
            "upstream_ca_file",
        ),
        ("--workspace-id", "BOUNDARY_WORKSPACE_ID", "workspace_id"),
        (
            "--workspace-name",
            "BOUNDARY_WORKSPACE_NAME",
            "workspace_name",
        ),
        (
            "--workspace-owner",
            "BOUNDARY_WORKSPACE_OWNER",
            "workspace_owner",
        ),
        ("--template-id", "BOUNDARY_TEMPLATE_ID", "template_id"),
        (
            "--template-version-id",
            "BOUNDARY_TEMPLATE_VERSION_ID",
            "template_version_id",
        ),
        ("--agent-name", "BOUNDARY_AGENT_NAME", "agent_name"),
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
        assert!(
            help.contains(&format!("env: {env}")),
            "help lacks env {env}"
        );
        if !yaml.is_empty() {
            assert!(
                help.contains(&format!("yaml: {yaml}")),
                "help lacks yaml key {yaml}"
            );
        }
    }
}

#[test]
fn no_command_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let o = boundary(home.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("no command specified"),
        "{:?}",
        text(&o)
    );
    let o = boundary(home.path(), &["--allow", "domain=x.com", "--"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no command specified"));
}

#[test]
fn check_allows_denies_and_rejects_bad_input() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let o = boundary(
        h,
        &[
            "check",
            "--allow",
            "domain=github.com",
            "--allow",
            "domain=*.github.com",
            "https://api.github.com/repos",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("allow GET https://api.github.com/repos"),
        "{out}"
    );
    assert!(out.contains("matched rule: domain=*.github.com"), "{out}");

    let o = boundary(
        h,
        &[
            "check",
            "--method",
            "POST",
            "--allow",
            "method=GET domain=github.com",
            "https://github.com/x/y?z=1",
        ],
        &[],
    );
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("deny POST https://github.com/x/y?z=1"),
        "{out}"
    );
    assert!(
        out.contains("--allow 'method=POST domain=github.com path=/x/y'"),
        "{out}"
    );
    assert!(out.contains("--allow 'domain=github.com'"), "{out}");

    // Methods are case-sensitive as in Go: `get` is not `GET`, and the suggested rule names
    // the method as sent. A path ending in `/` can only be allowed by a trailing `*`.
    let o = boundary(
        h,
        &[
            "check",
            "--method",
            "get",
            "--allow",
            "method=GET domain=github.com",
            "https://github.com/api/",
        ],
        &[],
    );
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("--allow 'method=get domain=github.com path=/api/*'"),
        "{out}"
    );

    // Rules from the environment and the default file count too.
    let dir = h.join(".config/coder_boundary");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "allowlist:\n  - domain=file.example.com\n",
    )
    .unwrap();
    let o = boundary(
        h,
        &["check", "https://env.example.com/"],
        &[("BOUNDARY_ALLOW", "domain=env.example.com")],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = boundary(h, &["check", "https://file.example.com/"], &[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    for bad in [
        vec!["check", "--allow", "domain=api.*", "https://api.x.com/"],
        vec!["check", "--allow", "domain=x.com", "not-a-url"],
        vec!["check", "--method", "GE T", "https://x.com/"],
        vec!["check"],
    ] {
        let o = boundary(h, &bad, &[]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {:?}", text(&o));
        assert!(!text(&o).1.is_empty(), "{bad:?} explains itself");
    }
    let o = boundary(h, &["check", "https://x.com/"], &[("BOUNDARY_ALLOW", "")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("BOUNDARY_ALLOW is set but empty"));
}

#[test]
fn config_prints_values_with_their_sources() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = h.join("c.yaml");
    std::fs::write(
        &file,
        "proxy_port: 8087\nallowlist:\n  - domain=dev.coder.com\n",
    )
    .unwrap();
    let o = boundary(
        h,
        &[
            "config",
            "--config",
            file.to_str().unwrap(),
            "--log-level",
            "info",
        ],
        &[("BOUNDARY_JAIL_TYPE", "landjail")],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing in {out}"))
            .to_string()
    };
    assert!(
        line("proxy_port").contains("8087") && line("proxy_port").contains("(file "),
        "{out}"
    );
    assert!(line("log_level").contains("info") && line("log_level").contains("(flag --log-level)"));
    assert!(
        line("jail_type").contains("landjail")
            && line("jail_type").contains("(env BOUNDARY_JAIL_TYPE)")
    );
    assert!(line("pprof_port").contains("6060") && line("pprof_port").contains("(default)"));
    assert!(line("allow").contains("domain=dev.coder.com"));

    let o = boundary(h, &["config", "--config", "/nonexistent.yaml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/nonexistent.yaml does not exist"));
}

#[test]
fn run_refuses_bad_configuration_before_jailing_anything() {
    let home = tempfile::tempdir().unwrap();
    let o = boundary(
        home.path(),
        &["--allow", "domain=github.com:443", "--", "true"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(
        err.contains("invalid allow rule \"domain=github.com:443\" at column 18"),
        "{err}"
    );
    let o = boundary(home.path(), &["--jail-type", "chroot", "--", "true"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("not a jail type"));
}

#[test]
fn subcommand_words_after_the_separator_are_programs() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "this test starts a real jail and needs root (CI runs as root)"
    );
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, code) in [("check", 42), ("config", 43)] {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\nexit {code}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (args, want) in [
        (vec!["--", "check", "https://x.com/"], 42),
        (vec!["--allow", "domain=x.com", "--", "config"], 43),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_boundary"))
            .env("HOME", home.path())
            .env("PATH", &path)
            .env(
                "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH",
                home.path().join("none.sock"),
            )
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(want), "{args:?}: {:?}", text(&o));
    }
}

#[test]
fn values_that_failed_after_the_jail_started_now_fail_before_it() {
    let home = tempfile::tempdir().unwrap();
    let marker = home.path().join("ran");
    let touch = format!("touch {}", marker.display());
    // A proxy URL with a path: accepted by the old configuration check, refused by the proxy
    // only once the jail was running.
    let o = boundary(
        home.path(),
        &[
            "--log-level=info",
            "--upstream-proxy",
            "http://proxy.corp:3128/path",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        &[],
    );
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("upstream_proxy from flag --upstream-proxy") && err.contains("path"),
        "{err}"
    );
    assert!(!err.contains("jail started"), "{err}");
    // A trust anchor file that does not exist.
    let o = boundary(
        home.path(),
        &["--log-level=info", "--", "sh", "-c", &touch],
        &[("BOUNDARY_UPSTREAM_CA_FILE", "/nonexistent/ca.pem")],
    );
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("cannot read upstream CA file /nonexistent/ca.pem"),
        "{err}"
    );
    assert!(!err.contains("jail started"), "{err}");
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn selftest_resolves_its_flags_like_a_run() {
    let home = tempfile::tempdir().unwrap();
    // Each of these is refused by a run; the selftest used to read its flags on its own and
    // went on to jail its probes with them.
    for (args, env, want) in [
        (
            &["--proxy-port", "0"][..],
            &[][..],
            "proxy_port from flag --proxy-port",
        ),
        (
            &[][..],
            &[("BOUNDARY_JAIL_TYPE", "LANDJAIL")][..],
            "jail_type from env BOUNDARY_JAIL_TYPE",
        ),
        (
            &["--jail-type=docker"][..],
            &[][..],
            "jail_type from flag --jail-type",
        ),
    ] {
        let mut argv = vec!["selftest"];
        argv.extend_from_slice(args);
        let o = boundary(home.path(), &argv, env);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.contains("boundary selftest ("), "{args:?} ran: {out}");
    }
}

#[test]
fn output_into_a_closed_pipe_is_not_a_crash() {
    // `boundary config | head -1`: the reader is gone before boundary writes.
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["config"][..],
        &["config", "--json"][..],
        &["check", "--allow", "domain=x.com", "https://x.com/"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_boundary"))
            .env_clear()
            .env("HOME", home.path())
            .args(args)
            .stdout(writer)
            .output()
            .expect("run boundary");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// `boundary presets` lists every preset with its version, description and rules; one by
/// name; an unknown name exits 2 listing the known ones. `check` names the preset of the
/// rule that matched and offers the presets that would allow a denied request; `config`
/// shows each preset rule with its preset as source.
#[test]
fn presets_are_listed_named_by_check_and_shown_by_config() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let o = boundary(h, &["presets"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for name in [
        "claude-code@1",
        "codex@1",
        "github@1",
        "npm@1",
        "pypi@1",
        "crates@1",
        "go@1",
        "docker-hub@1",
        "ubuntu-apt@1",
        "debian-apt@1",
    ] {
        assert!(
            out.contains(&format!("\n{name}  ")) || out.starts_with(name),
            "{name}: {out}"
        );
    }
    assert!(out.contains("    domain=files.pythonhosted.org\n"), "{out}");
    let o = boundary(h, &["presets", "--json", "crates"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["name"], "crates");
    assert_eq!(list[0]["rules"][0], "domain=index.crates.io");
    let o = boundary(h, &["presets", "cargo"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("no preset is named \"cargo\"") && err.contains("crates"),
        "{err}"
    );

    let o = boundary(
        h,
        &[
            "check",
            "--preset",
            "npm",
            "https://registry.npmjs.org/left-pad",
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("matched rule: domain=registry.npmjs.org (preset npm@1)"),
        "{out}"
    );
    let o = boundary(
        h,
        &["check", "https://static.crates.io/crates/x/x-1.0.0.crate"],
        &[("BOUNDARY_PRESETS", "npm")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("--preset crates"), "{out}");
    assert!(!out.contains("--preset npm"), "npm is in use: {out}");

    let o = boundary(h, &["config", "--preset", "pypi"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("files.pythonhosted.org"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.starts_with("allow ") && line.ends_with("(preset pypi@1)"),
        "{line}"
    );
}

/// `boundary suggest` on top of a config file with `presets: [npm]`: a denied request the
/// preset now allows is not proposed again, and a denied host another preset covers is
/// proposed as a rule with a hint naming that preset.
#[test]
fn suggest_knows_the_presets() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let cfg = h.join("config.yaml");
    std::fs::write(&cfg, "presets:\n  - npm\n").unwrap();
    let log = h.join("audit.jsonl");
    std::fs::write(
        &log,
        concat!(
            r#"{"decision":"deny","http_method":"GET","http_url":"https://registry.npmjs.org/left-pad"}"#,
            "\n",
            r#"{"decision":"deny","http_method":"GET","http_url":"https://pypi.org/simple/x/"}"#,
            "\n",
            r#"{"decision":"deny","http_method":"GET","http_url":"https://other.test/"}"#,
            "\n"
        ),
    )
    .unwrap();
    let o = boundary(
        h,
        &[
            "suggest",
            "--from",
            log.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let proposed = std::fs::read_to_string(h.join("config.yaml.proposed")).unwrap();
    assert_eq!(
        proposed, "presets:\n  - npm\nallowlist:\n  - 'domain=other.test'\n  - 'domain=pypi.org'\n",
        "{out}{err}"
    );
    assert!(
        err.contains("preset pypi@1")
            && err.contains("allows pypi.org")
            && err.contains("--preset pypi"),
        "{err}"
    );
    assert!(!err.contains("preset npm@1"), "npm is in use: {err}");
}
