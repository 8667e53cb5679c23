//! When memory runs out, the kernel's OOM killer must pick the jailed program, not boundary:
//! a jail that makes the machine run short (by its own allocations, or by holding thousands of
//! proxy connections, which grows boundary) would otherwise get boundary killed, ending the run
//! with its queued audit records. Both jails start the target with `oom_score_adj` 1000
//! (inherited by everything it starts). The kernel lets a process lower it only down to a floor
//! that only a writer with `CAP_SYS_RESOURCE` over the host raises: boundary run by root makes
//! 1000 the floor; landjail's Landlock rules refuse the write anyway; an unprivileged nsjail's
//! program can go back to 0, boundary's own value (a documented limit, checked here too).
//!
//! Needs root and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::process::Stdio;

/// In both jails, as root and as an unprivileged user: the jailed shell's child reads 1000;
/// the shell cannot lower it in landjail, nor in nsjail when boundary's write could set the
/// floor (root with CAP_SYS_RESOURCE); otherwise only to 0.
#[test]
fn the_jailed_program_is_the_oom_killers_first_choice() {
    require_root().unwrap();
    // `/proc/self` in the subshell names the subshell: a write there changes only it.
    let script = "cat /proc/self/oom_score_adj; \
                  (echo 0 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj) \
                  2>/dev/null || echo refused; \
                  (echo -1 > /proc/self/oom_score_adj) 2>/dev/null && echo below-zero || echo floor";
    // The control: the test (and boundary outside any jail) does not run at 1000.
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert_ne!(
        own.trim(),
        "1000",
        "the test itself runs with oom_score_adj 1000"
    );
    // Root on some hosts (this VM's, for one) lacks CAP_SYS_RESOURCE (bit 24), and then its
    // write cannot raise the floor either.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let root_has_sys_resource = cap_eff & (1 << 24) != 0;
    if !root_has_sys_resource {
        eprintln!(
            "NOTE: root here lacks CAP_SYS_RESOURCE: the floor a root-started nsjail sets \
             cannot be checked on this host; checking that its program can lower it instead"
        );
    }
    for who in [As::Root, As::User] {
        let config = config_home(who);
        for jail in ["nsjail", "landjail"] {
            let out = boundary_cmd(who, config.path(), &[])
                .args([
                    "--jail-type",
                    jail,
                    "--log-level",
                    "error",
                    "--",
                    "sh",
                    "-c",
                    script,
                ])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let t = text(&out);
            assert!(out.status.success(), "{who:?} {jail}: {t}");
            let lines: Vec<_> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            let floor_set = who == As::Root && root_has_sys_resource;
            let second = if jail == "landjail" || floor_set {
                "refused"
            } else {
                "0"
            };
            assert_eq!(lines, ["1000", second, "floor"], "{who:?} {jail}: {t}");
        }
    }
}
