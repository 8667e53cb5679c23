//! `boundary selftest` exits 0 on this host (as root, with its own far host, and as an
//! unprivileged user), and fails when enforcement is broken on purpose: a build with the
//! test-only feature `boundary-jail/insecure-test-hooks` and
//! `BOUNDARY_INSECURE_TEST_SKIP_NETFILTER=1` starts jails without their netfilter rules.
//!
//! The insecure build lives in its own target dir so it never replaces the real binary:
//! `cargo build -p boundary --features boundary-jail/insecure-test-hooks --target-dir
//! target/insecure-hooks`. This test runs that command itself when the binary is missing
//! (`BOUNDARY_INSECURE_BIN` overrides the path).

mod nsjail_common;
use nsjail_common::*;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn selftest(bin: &std::path::Path, who: As, env: &[(&str, &str)]) -> Output {
    let mut cmd = if who == As::User {
        test_user();
        let mut c = Command::new("runuser");
        c.args(["-u", TEST_USER, "--", "env"])
            .arg(format!("HOME=/home/{TEST_USER}"))
            .arg(format!("PATH={PATH}"));
        c.arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("selftest").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_wired(o: &Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("boundary selftest ("),
        "`boundary selftest` did not run the selftest (main.rs must dispatch \"selftest\" to selftest::main):\n{}",
        text(o)
    );
}

#[test]
fn selftest_exits_zero_here() {
    require_root().unwrap();
    let bin = boundary_binary().unwrap();
    for who in [As::Root, As::User] {
        let o = selftest(&bin, who, &[]);
        assert_wired(&o);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{who:?}:\n{}", text(&o));
        assert!(
            out.contains("all enforcement checks hold") && !out.contains("FAIL"),
            "{}",
            text(&o)
        );
        if who == As::Root {
            assert!(
                out.contains("the far host received nothing from the jail"),
                "{}",
                text(&o)
            );
        }
    }
}

fn insecure_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BOUNDARY_INSECURE_BIN") {
        return PathBuf::from(p);
    }
    let real = boundary_binary().unwrap();
    // `cargo test --workspace --all-features` (the README's test command) already built the
    // hook into the regular binary: use it rather than building a second copy.
    let hook = b"BOUNDARY_INSECURE_TEST_SKIP_NETFILTER";
    let bytes = std::fs::read(&real).unwrap();
    if bytes.windows(hook.len()).any(|w| w == hook) {
        return real;
    }
    let target = real
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let profile = real.parent().unwrap().file_name().unwrap().to_owned();
    let dir = target.join("insecure-hooks");
    let bin = dir.join(&profile).join("boundary");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "boundary",
            "--features",
            "boundary-jail/insecure-test-hooks",
            "--target-dir",
        ])
        .arg(&dir);
        if profile == "release" {
            cmd.arg("--release");
        }
        eprintln!("building the insecure test binary: {cmd:?}");
        let st = cmd.status().expect("running cargo");
        assert!(st.success(), "building the insecure test binary failed");
    }
    bin
}

#[test]
fn selftest_fails_when_netfilter_is_skipped_on_purpose() {
    require_root().unwrap();
    let bin = insecure_binary();
    // Same binary, hook off: passes, so the hook is the only difference.
    let ok = selftest(&bin, As::Root, &[]);
    assert_wired(&ok);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    for who in [As::Root, As::User] {
        let o = selftest(&bin, who, &[("BOUNDARY_INSECURE_TEST_SKIP_NETFILTER", "1")]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{who:?}: broken enforcement not noticed:\n{}",
            text(&o)
        );
        let failed: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("FAIL"))
            .collect();
        assert!(
            failed
                .iter()
                .any(|l| l.contains("direct TCP to an IP:port is intercepted")),
            "{}",
            text(&o)
        );
        assert!(
            failed.iter().any(|l| l.contains("UDP to port 443")),
            "{}",
            text(&o)
        );
    }
}
