//! The Coder module (`integration/coder/boundary/main.tf`), parsed with a real HCL parser
//! (python-hcl2, installed by .ci/run), checked against the binary: every variable it exports
//! and every config key it writes exists in `boundary`, it reads only real workspace attributes,
//! and its setup script, rendered with the defaults, installs a working wrapper.

use std::path::{Path, PathBuf};
use std::process::Command;

use boundary_integration::farhost::boundary_binary;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn module(bin: &Path) -> Value {
    let out = Command::new("python3")
        .arg(repo().join("coder/check_module.py"))
        .arg(repo().join("coder/boundary/main.tf"))
        .arg(bin)
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
        ("coder_workspace_owner", "name"),
        ("coder_workspace_owner", "email"),
    ];
    for (d, a) in &attrs {
        assert!(
            known.iter().any(|(kd, ka)| kd == d && ka == a),
            "unknown attribute data.{d}.me.{a}"
        );
    }
    assert_eq!(m["outputs"], serde_json::json!(["wrapper"]));
}

#[test]
fn module_setup_script_writes_a_policy_the_binary_accepts() {
    let bin = boundary_binary().unwrap();
    let m = module(&bin);
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(m["script"].as_str().unwrap())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = home.path().join(".config/coder_boundary/config.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let wrapper = home.path().join(".local/bin/boundary-wrapper");
    // The wrapper runs boundary, which picks the written file up by default.
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
    let check = |url: &str| {
        Command::new(&wrapper)
            .env("HOME", home.path())
            .args(["check", url])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(check("https://api.github.com/repos"), Some(0));
    assert_eq!(check("https://evil.example/"), Some(1));
}
