//! The Coder module (`integration/coder/boundary/main.tf`), parsed with a real HCL parser
//! (python-hcl2, installed by scripts/test.sh), checked against the registry's `agent-firewall`
//! module and the binary: it has the registry module's variables and outputs (names kept in
//! `integration/coder/registry-agent-firewall.json`, with their source), every variable it
//! exports and every config key it writes exists in `boundary`, it reads only real workspace
//! attributes, and its setup script, rendered for several variable sets, installs a wrapper
//! that runs jailed commands the way the registry module's wrapper is used.

use std::path::{Path, PathBuf};
use std::process::Command;

use boundary_integration::farhost::boundary_binary;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn module(bin: &Path) -> Value {
    module_with(bin, serde_json::json!({}))
}

/// The module parsed, with its script rendered for these variable values.
fn module_with(bin: &Path, vars: Value) -> Value {
    let out = Command::new("python3")
        .arg(repo().join("coder/check_module.py"))
        .arg(repo().join("coder/boundary/main.tf"))
        .arg(bin)
        .arg(vars.to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "parsing the module failed (is python-hcl2 installed? pip install python-hcl2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn help(bin: &Path) -> String {
    let out = Command::new(bin).arg("--help").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn module_references_only_what_the_binary_has() {
    let bin = boundary_binary().unwrap();
    let m = module(&bin);
    let help = help(&bin);
    let envs: Vec<&str> = m["env_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(envs.len(), 4, "identity variables: {envs:?}");
    for e in &envs {
        assert!(
            help.contains(&format!("env: {e}")),
            "module exports {e}, which boundary does not read"
        );
    }
    // Each exported variable really lands in the effective config.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("HOME", home.path())
        .args(["config", "--json"]);
    let values = [
        (
            "BOUNDARY_WORKSPACE_ID",
            "f2bd4e9f-7e27-49fc-961e-be4d1c2aa987",
            "workspace_id",
        ),
        (
            "BOUNDARY_TEMPLATE_ID",
            "0d286645-29aa-4eaf-9b52-cc5d2740c90b",
            "template_id",
        ),
        (
            "BOUNDARY_TEMPLATE_VERSION_ID",
            "3e1ae4a1-5b55-4fce-8d0a-3c1c6bdfbc1f",
            "template_version_id",
        ),
        ("BOUNDARY_WORKSPACE_OWNER", "joe", "workspace_owner"),
    ];
    for (k, v, _) in values {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (env, v, key) in values {
        assert!(envs.contains(&env), "module lacks {env}");
        let row = cfg["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap();
        assert_eq!(row["value"], v, "{key}");
        assert_eq!(row["source"], format!("env {env}"), "{key}");
    }
    let attrs: Vec<(String, String)> = m["data_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let known = [
        ("coder_workspace", "id"),
        ("coder_workspace", "template_id"),
        ("coder_workspace", "template_version"),
        ("coder_workspace", "name"),
        // The registry agent-firewall module reads it for its default allow rule.
        ("coder_workspace", "access_url"),
        ("coder_workspace_owner", "name"),
        ("coder_workspace_owner", "email"),
    ];
    for (d, a) in &attrs {
        assert!(
            known.iter().any(|(kd, ka)| kd == d && ka == a),
            "unknown attribute data.{d}.me.{a}"
        );
    }
}

#[test]
fn module_has_the_registry_modules_interface() {
    let bin = boundary_binary().unwrap();
    let m = module(&bin);
    let registry: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("coder/registry-agent-firewall.json")).unwrap(),
    )
    .unwrap();
    let ours: Vec<&str> = m["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in registry["variables"].as_array().unwrap() {
        let v = v.as_str().unwrap();
        assert!(
            ours.contains(&v),
            "the registry module has variable {v}; a template passing it would not plan with ours"
        );
    }
    assert_eq!(
        m["outputs"], registry["outputs"],
        "same outputs, so references to module.agent-firewall.* keep working"
    );
    let dir = registry["defaults"]["module_directory"].as_str().unwrap();
    let locals = &m["locals"];
    let at = |key: &str| {
        registry["paths"][key]
            .as_str()
            .unwrap()
            .replace("$MODULE_DIR", dir)
    };
    assert_eq!(locals["wrapper"], at("wrapper").as_str());
    assert_eq!(locals["config_path"], at("config").as_str());
    assert_eq!(locals["script_name"], "coder-agent-firewall-install_script");
}

/// Runs the module's script, rendered for `vars`, with HOME at `home`.
fn run_setup(bin: &Path, home: &Path, vars: Value) -> Value {
    let m = module_with(bin, vars);
    let out = Command::new("sh")
        .arg("-c")
        .arg(m["script"].as_str().unwrap())
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m
}

/// A module path (`$HOME/...`) under this HOME.
fn under(home: &Path, p: &Value) -> PathBuf {
    PathBuf::from(p.as_str().unwrap().replace("$HOME", home.to_str().unwrap()))
}

#[test]
fn module_setup_script_writes_a_policy_the_binary_accepts() {
    let bin = boundary_binary().unwrap();
    let home = tempfile::tempdir().unwrap();
    let m = run_setup(
        &bin,
        home.path(),
        serde_json::json!({
            "_access_url": "https://dev.coder.com/",
            "allowlist": ["method=GET,HEAD domain=*.github.com"],
        }),
    );
    let cfg = under(home.path(), &m["locals"]["config_path"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let wrapper = under(home.path(), &m["locals"]["wrapper"]);
    // The wrapper runs boundary with the written file as its default config.
    let out = Command::new(&wrapper)
        .env("HOME", home.path())
        .args(["config", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["settings"].as_array().unwrap();
    for key in m["yaml_keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        let key = if key == "allowlist" { "allow" } else { key };
        let row = rows
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key} unknown to boundary"));
        assert!(
            row["source"].as_str().unwrap().starts_with("file "),
            "{key} not taken from the module's file: {row}"
        );
    }
    let log_dir = rows.iter().find(|r| r["key"] == "log_dir").unwrap();
    assert_eq!(
        log_dir["value"],
        format!(
            "{}/.coder-modules/coder/agent-firewall/logs/agent_firewall_logs",
            home.path().display()
        ),
        "$HOME in the config is the workspace user's home"
    );
    let check = |url: &str| {
        Command::new(&wrapper)
            .env("HOME", home.path())
            .args(["check", url])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(check("https://api.github.com/repos"), Some(0));
    assert_eq!(check("https://dev.coder.com/api/v2/buildinfo"), Some(0));
    assert_eq!(check("https://evil.example/"), Some(1));
}

#[test]
fn module_variables_of_the_registry_module_do_what_they_say() {
    let bin = boundary_binary().unwrap();
    let home = tempfile::tempdir().unwrap();
    let h = home.path().display().to_string();
    // Inline config, pre/post install scripts (in order), install_command with the version.
    let installed = home.path().join("bin/boundary");
    let m = run_setup(
        &bin,
        home.path(),
        serde_json::json!({
            "agent_firewall_config": "allowlist:\n  - domain=inline.test\n",
            "pre_install_script": format!("#!/bin/sh\necho pre >> {h}/order"),
            "post_install_script": format!("#!/bin/sh\necho post >> {h}/order"),
            "binary_path": installed,
            "agent_firewall_version": "v9.9.9",
            "install_command": format!(
                "mkdir -p {h}/bin && cp {} {h}/bin/boundary && echo \"install $AGENT_FIREWALL_VERSION\" >> {h}/order",
                bin.display()
            ),
        }),
    );
    assert_eq!(
        std::fs::read_to_string(home.path().join("order")).unwrap(),
        "pre\ninstall v9.9.9\npost\n"
    );
    let cfg = under(home.path(), &m["locals"]["config_path"]);
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap().trim(),
        "allowlist:\n  - domain=inline.test"
    );
    // agent_firewall_config_path: nothing written, the output and the wrapper use that path.
    let home2 = tempfile::tempdir().unwrap();
    let own = home2.path().join("mine.yaml");
    std::fs::write(&own, "allowlist:\n  - domain=mine.test\n").unwrap();
    let m = run_setup(
        &bin,
        home2.path(),
        serde_json::json!({"agent_firewall_config_path": own}),
    );
    assert_eq!(m["locals"]["config_path"], own.display().to_string());
    let written = home2
        .path()
        .join(".coder-modules/coder/agent-firewall/config/config.yaml");
    assert!(!written.exists(), "no config written when a path is given");
    let wrapper = under(home2.path(), &m["locals"]["wrapper"]);
    let code = |url: &str| {
        Command::new(&wrapper)
            .env("HOME", home2.path())
            .args(["check", url])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(code("https://mine.test/"), Some(0));
    assert_eq!(code("https://inline.test/"), Some(1));
}

/// Our module's wrapper, used as the registry module's README uses its wrapper, runs the
/// command jailed: the last step before a real Coder deployment.
#[test]
fn module_wrapper_runs_a_jailed_command_as_the_registry_readme_shows() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "this test needs root (CI runs as root): it starts a real jail"
    );
    let bin = boundary_binary().unwrap();
    let home = tempfile::tempdir().unwrap();
    let m = run_setup(
        &bin,
        home.path(),
        serde_json::json!({"allowlist": ["domain=example.test"]}),
    );
    let wrapper = under(home.path(), &m["locals"]["wrapper"]);
    let config = under(home.path(), &m["locals"]["config_path"]);
    // The wrapper as a template's agent command runs it, with `sh -c script` as the agent.
    let jailed = |script: &str| {
        Command::new(&wrapper)
            .env("HOME", home.path())
            .env(
                "CODER_AGENT_FIREWALL_LOG_PROXY_SOCKET_PATH",
                home.path().join("none.sock"),
            )
            .arg(format!("--config={}", config.display()))
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap()
    };
    let out = jailed("exit 9");
    assert_eq!(
        out.status.code(),
        Some(9),
        "the jailed command's status comes back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        home.path()
            .join(".coder-modules/coder/agent-firewall/logs/agent_firewall_logs/boundary.log")
            .is_file(),
        "the module's log_dir received boundary's log"
    );
    // The wrapper starts the next session: the jailed command cannot rewrite it (it names its
    // directory in BOUNDARY_PROTECT_PATHS; nsjail binds it read-only). Before, it could, and
    // the next session ran without a jail.
    let before = std::fs::read_to_string(&wrapper).unwrap();
    let out = jailed(&format!(
        "echo 'exec \"$@\"' > {}; echo ran",
        wrapper.display()
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ran"));
    assert_eq!(
        std::fs::read_to_string(&wrapper).unwrap(),
        before,
        "the jail rewrote the wrapper: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
