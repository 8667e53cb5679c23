//! Process numbers in nsjail: every jail has its own PID namespace, and concurrent jails share
//! the host's `/tmp`, where programs name files by pid (Claude Code's
//! `/tmp/cc-socks-<uid>/<pid>.sock`). The jail starts its pids at a random point, so two runs
//! do not hand their commands the same numbers (before, every jailed command was pid 2 and
//! such files collided: `agents.rs` runs two Claude Code sandboxes side by side).
//!
//! Needs root and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::collections::HashSet;
use std::process::Stdio;

/// Three jailed shells, one after the other, as root and as an unprivileged user: each prints
/// its pid, which differs from run to run and is not the low number every run used to get.
#[test]
fn each_jail_numbers_its_processes_from_a_different_point() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let config = config_home(who);
        let mut pids = HashSet::new();
        for _ in 0..3 {
            let out = boundary_cmd(who, config.path(), &[])
                .args(["--log-level", "error", "--", "sh", "-c", "echo $$"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let t = text(&out);
            assert!(out.status.success(), "{who:?}: {t}");
            let pid: u32 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{who:?}: no pid printed: {t}"));
            assert!(pid > 2, "{who:?}: the jailed shell is pid {pid}");
            pids.insert(pid);
        }
        assert_eq!(pids.len(), 3, "{who:?}: runs shared pids: {pids:?}");
    }
}
