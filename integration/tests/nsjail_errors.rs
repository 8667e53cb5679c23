//! When the host forbids what nsjail needs, boundary says so and names the fixes (landjail
//! among them) instead of running the command unjailed; `--no-user-namespace` works as root
//! and is refused, with the reason and the ways out, for a user without sudo or file
//! capabilities.

mod nsjail_common;
use nsjail_common::*;
use std::process::Command;

#[test]
fn forbidden_user_namespaces_give_a_clear_error_naming_landjail() {
    require_root().unwrap();
    test_user();
    let bin = boundary_binary().unwrap();
    // A user namespace of the test's own whose limit forbids further user namespaces: the
    // change stays inside it, the host's sysctl is untouched.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && {} --log-level error -- sh -c 'echo RAN-UNJAILED'",
        bin.display()
    );
    let o = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "unshare", "-Ur", "sh", "-c", &script])
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(125), "{t}");
    assert!(!t.contains("RAN-UNJAILED"), "{t}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot create the jail's namespaces"), "{t}");
    assert!(
        err.contains("user namespace") && err.contains("--jail-type landjail"),
        "{t}"
    );
    assert!(err.contains("--no-user-namespace"), "{t}");
}

#[test]
fn no_user_namespace_works_as_root_and_is_refused_otherwise() {
    require_root().unwrap();
    let config = config_home(As::Root);
    let o = jailed_sh(
        As::Root,
        config.path(),
        &[],
        &["--log-level", "error", "--no-user-namespace"],
        "grep -E '^CapEff' /proc/self/status; cat /proc/self/uid_map",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("CapEff:\t0000000000000000"), "{}", text(&o));
    // No user namespace: the initial identity map.
    assert!(out.contains("4294967295"), "{}", text(&o));

    let config = config_home(As::User);
    let o = jailed_sh(
        As::User,
        config.path(),
        &[],
        &["--log-level", "error", "--no-user-namespace"],
        "echo RAN",
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(125), "{t}");
    // The test user has neither passwordless sudo nor a binary with file capabilities
    // (nsjail_sudo.rs covers those): the error says so and names the three ways out.
    assert!(
        !t.contains("RAN\n") && t.contains("not running as root"),
        "{t}"
    );
    assert!(
        t.contains("sudo -n true") && t.contains("setcap") && t.contains("--jail-type landjail"),
        "{t}"
    );
}

/// `--nested-sandboxes` where it cannot work is refused before anything runs, with the reason
/// and the way out: without the jail's user namespace (`--no-user-namespace`), and in landjail
/// (Landlock forbids mounts). Control: an unprivileged user with a user namespace runs (root
/// runs too: `jail_root_files.rs`).
#[test]
fn nested_sandboxes_where_they_cannot_work_are_refused_with_the_reason() {
    require_root().unwrap();
    let cases: [(As, &[&str], &str); 2] = [
        (
            As::User,
            &["--no-user-namespace"],
            "needs the jail's own user namespace",
        ),
        (
            As::User,
            &["--jail-type", "landjail"],
            "needs --jail-type nsjail",
        ),
    ];
    for (who, extra, reason) in cases {
        let config = config_home(who);
        let mut flags = vec!["--log-level", "error", "--nested-sandboxes"];
        flags.extend(extra);
        let o = jailed_sh(who, config.path(), &[], &flags, "echo RAN");
        let t = text(&o);
        assert!(
            !o.status.success() && !t.contains("RAN\n"),
            "{who:?} {extra:?}: {t}"
        );
        assert!(t.contains(reason), "{who:?} {extra:?}: {t}");
        assert!(
            t.contains("without its own sandbox"),
            "{who:?} {extra:?}: {t}"
        );
    }
    let config = config_home(As::User);
    let o = jailed_sh(
        As::User,
        config.path(),
        &[],
        &["--log-level", "error", "--nested-sandboxes"],
        "echo RAN",
    );
    assert!(
        o.status.success() && text(&o).contains("RAN"),
        "{}",
        text(&o)
    );
}
