use super::*;
use boundary_proxy::rules::LivePolicy;

fn env(name: &str) -> Option<String> {
    (name == "HOME").then(|| "/nonexistent-boundary-home".to_string())
}

/// A reloader for a run started from `file` holding `text`, with the live policy.
fn start(dir: &Path, text: &str, jail: Option<JailWrites>) -> (Reloader, Arc<LivePolicy>, PathBuf) {
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).unwrap();
    let mut flags = Flags::default();
    flags.set("config", vec![file.display().to_string()]);
    let cfg = config::resolve(&flags, &env).unwrap();
    let live = Arc::new(LivePolicy::new(cfg.policy.clone()));
    (
        Reloader::new(flags, env, cfg, live.clone(), jail),
        live,
        file,
    )
}

fn allows(live: &LivePolicy, host: &str) -> bool {
    live.snapshot().policy.decide("GET", host, "/").allowed
}

#[test]
fn a_bad_file_keeps_the_generation_and_names_the_line_and_a_fix_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, live, file) = start(dir.path(), "allowlist:\n  - domain=a.test\n", None);
    std::fs::write(
        &file,
        "allowlist:\n  - domain=a.test\n  - colour=red domain=b.test\n",
    )
    .unwrap();
    match r.reload("test") {
        Outcome::Failed { generation, error } => {
            assert_eq!(generation, 1);
            assert!(error.contains("line 3"), "{error}");
            assert!(error.contains(&file.display().to_string()), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(allows(&live, "a.test") && !allows(&live, "b.test"));
    std::fs::write(&file, "allowlist:\n  - domain=a.test\n  - domain=b.test\n").unwrap();
    assert_eq!(
        r.reload("test"),
        Outcome::Loaded {
            generation: 2,
            added: 1,
            removed: 0
        }
    );
    assert!(allows(&live, "a.test") && allows(&live, "b.test"));
    // Broken YAML and an unknown key: both name their line, generation 2 stays.
    for (text, line) in [
        ("allowlist:\n  - domain=c.test\nalowlist: [x]\n", "line 3"),
        ("allowlist:\n  - domain=c.test\n  bad: [\n", "line 3"),
    ] {
        std::fs::write(&file, text).unwrap();
        match r.reload("test") {
            Outcome::Failed { generation, error } => {
                assert_eq!(generation, 2);
                assert!(error.contains(line), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!allows(&live, "c.test") && allows(&live, "b.test"));
    }
    std::fs::write(&file, "allowlist:\n  - domain=c.test\n").unwrap();
    assert_eq!(
        r.reload("test"),
        Outcome::Loaded {
            generation: 3,
            added: 1,
            removed: 2
        }
    );
    assert!(allows(&live, "c.test") && !allows(&live, "a.test"));
}

#[test]
fn settings_that_need_a_restart_are_reported_and_keep_their_value() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, live, file) = start(
        dir.path(),
        "allowlist: [domain=a.test]\njail_type: nsjail\nproxy_port: 8087\n",
        None,
    );
    let running = r.running.clone();
    std::fs::write(
        &file,
        "allowlist: [domain=a.test]\njail_type: landjail\nproxy_port: 9099\n",
    )
    .unwrap();
    let mut flags = Flags::default();
    flags.set("config", vec![file.display().to_string()]);
    let new = config::resolve(&flags, &env).unwrap();
    let changed = restart_needed(&running, &new);
    assert_eq!(
        changed,
        vec![
            ("proxy_port", "8087".to_string(), "9099".to_string()),
            ("jail_type", "nsjail".to_string(), "landjail".to_string()),
        ]
    );
    assert_eq!(r.reload("test"), Outcome::Unchanged { generation: 1 });
    assert_eq!(live.snapshot().generation, 1);
    // Only rows marked live may change while running; the allow list is one of them.
    let live_keys: Vec<&str> = SETTINGS.iter().filter(|s| s.live).map(|s| s.key).collect();
    assert_eq!(live_keys, ["allow", "presets"]);
    assert!(!live_keys.contains(&"jail_type") && !live_keys.contains(&"proxy_port"));
}

#[test]
fn landjail_refuses_a_file_the_jail_could_have_written() {
    let dir = tempfile::tempdir().unwrap();
    // Started by root with the directory among the jail's writable paths.
    let roots = vec![std::fs::canonicalize(dir.path()).unwrap()];
    let (mut r, live, file) = start(
        dir.path(),
        "jail_type: landjail\nallowlist: [domain=a.test]\n",
        Some(JailWrites(Some(roots))),
    );
    std::fs::write(
        &file,
        "jail_type: landjail\nallowlist: [domain=a.test, domain=evil.test]\n",
    )
    .unwrap();
    match r.reload("test") {
        Outcome::Refused { generation, reason } => {
            assert_eq!(generation, 1);
            assert!(reason.contains("nsjail"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!allows(&live, "evil.test"));
    // Outside the writable paths the same file loads.
    r.jail_writes = Some(JailWrites(Some(vec!["/nonexistent-root".into()])));
    assert!(matches!(
        r.reload("test"),
        Outcome::Loaded { generation: 2, .. }
    ));
    assert!(allows(&live, "evil.test"));
}

#[test]
fn an_unprivileged_jail_could_write_what_its_user_owns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "").unwrap();
    // The test's own files are its user's: writable to a landjail of that user.
    assert!(jail_could_write(&file, None).is_some());
    // `/` is root's and not writable unless the test runs as root.
    let root_only = nix::unistd::geteuid().is_root();
    assert_eq!(jail_could_write(Path::new("/"), None).is_some(), root_only);
}

#[test]
fn presets_are_resolved_again_like_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, live, file) = start(dir.path(), "allowlist: [domain=a.test]\n", None);
    assert!(!allows(&live, "registry.npmjs.org"));
    std::fs::write(&file, "allowlist: [domain=a.test]\npresets: [npm]\n").unwrap();
    assert!(matches!(
        r.reload("test"),
        Outcome::Loaded { generation: 2, added, removed: 0 } if added > 0
    ));
    assert!(allows(&live, "registry.npmjs.org") && allows(&live, "a.test"));
}
