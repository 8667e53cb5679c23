//! nsjail changes nothing on the host: `ip link`, `ip addr`, routes, `nft list ruleset` and
//! `iptables-save` are identical before, during and after a run, also after `kill -9` of
//! boundary mid-run (and then no jail process is left). Inside, `ps` shows only the jail.
//!
//! Runs boundary in the real host network namespace (root and unprivileged user). Another test
//! suite changing the host's network at the same moment would show up here as a difference.

mod nsjail_common;
use nsjail_common::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn snapshot() -> String {
    let mut s = String::new();
    for args in [
        vec!["ip", "-d", "link"],
        vec!["ip", "addr"],
        vec!["ip", "route"],
        vec!["ip", "-6", "route"],
        vec!["nft", "list", "ruleset"],
        vec!["iptables-save"],
        vec!["ip6tables-save"],
    ] {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        s.push_str(&format!("== {}\n", args.join(" ")));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // iptables-save stamps its output with the time; counters of chains move.
            if line.starts_with('#') {
                continue;
            }
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

/// Starts a jail whose target says `ready` and waits on stdin; returns the child and the
/// target's marker (a unique argument to find its processes).
fn start_waiting_jail(who: As, config: &std::path::Path, marker: &str) -> std::process::Child {
    spawn_ready(
        boundary_cmd(who, config, &[])
            .args(["--log-level", "error", "--", "sh", "-c"])
            .arg(format!("echo ready; read line; echo {marker} >/dev/null"))
            .stdin(Stdio::piped()),
        "ready",
    )
}

fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmd)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

fn host_unchanged(who: As) {
    let config = config_home(who);
    let before = snapshot();

    let marker = format!("bnd-marker-{}-a", std::process::id());
    let mut child = start_waiting_jail(who, config.path(), &marker);
    let during = snapshot();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    let after = snapshot();
    assert_eq!(before, during, "host network changed while the jail ran");
    assert_eq!(before, after, "host network changed after the jail ran");

    // kill -9 of boundary mid-run: the jail goes with it and nothing is left behind.
    let marker = format!("bnd-marker-{}-b", std::process::id());
    let mut child = start_waiting_jail(who, config.path(), &marker);
    assert!(!processes_with(&marker).is_empty(), "jail target not found");
    // As the test user the runuser wrapper is our child; kill boundary itself.
    let boundary_pid = boundary_pid_under(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(boundary_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    // The helper sees its control socket close and kills init; wait for that to finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "jail processes survived kill -9 of boundary: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        before,
        snapshot(),
        "host network changed after kill -9 of boundary"
    );
}

/// The boundary process: `pid` itself, or its descendant when started through runuser/env.
fn boundary_pid_under(pid: u32) -> u32 {
    let exe = boundary_binary().unwrap();
    let mut current = pid;
    for _ in 0..5 {
        if std::fs::read_link(format!("/proc/{current}/exe"))
            .ok()
            .as_deref()
            == Some(exe.as_path())
        {
            return current;
        }
        let children = std::fs::read_to_string(format!("/proc/{current}/task/{current}/children"))
            .unwrap_or_default();
        match children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
        {
            Some(c) => current = c,
            None => break,
        }
    }
    panic!("boundary process not found under pid {pid}");
}

#[test]
fn host_network_is_unchanged_as_root() {
    require_root().unwrap();
    host_unchanged(As::Root);
}

#[test]
fn host_network_is_unchanged_as_an_unprivileged_user() {
    require_root().unwrap();
    host_unchanged(As::User);
}

#[test]
fn ps_inside_shows_only_the_jail() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let config = config_home(who);
        let o = jailed_sh(
            who,
            config.path(),
            &[],
            &["--log-level", "error"],
            "ps -e -o pid=,comm=",
        );
        let t = text(&o);
        let rows: Vec<(u32, String)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace();
                (
                    w.next().unwrap().parse().unwrap(),
                    w.next().unwrap_or("").to_string(),
                )
            })
            .collect();
        // init, the shell (which may exec ps itself), ps.
        assert!(rows.len() <= 3, "{t}");
        assert_eq!(rows[0], (1, "boundary-jail".to_string()), "{t}");
        assert!(rows.iter().any(|(_, c)| c == "ps"), "{t}");
    }
}
