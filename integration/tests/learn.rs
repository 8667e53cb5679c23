//! `boundary learn` and `boundary suggest` through the real binary (issue 16 item 1), in both
//! jails, as root and as an unprivileged user. A scripted client (curl) asks the loopback
//! fixture for several hosts under names mapped with `--resolve`: learn denies them as a plain
//! run does (the client sees 403 or a refused tunnel), proposes one rule per host (`--group`:
//! `*.one.test` for two subdomains), writes the proposal beside the config file and leaves the
//! file alone; `--apply` merges it keeping the file's comments; each proposed rule allows its
//! request in `boundary check`; learn again with the applied file: the client gets its pages
//! and learn says there are no new denied requests. `--narrow` proposes the methods and paths
//! seen, and a path not seen stays denied. `suggest --from` reads an `--audit-log` file and a
//! `--log-dir` log; a missing file and a line that is not a record are clear errors.
//!
//! Needs root and `cargo build -p boundary` first; packages: curl, python3, openssl,
//! util-linux (runuser).

mod nsjail_common;
use nsjail_common::*;

use std::path::Path;
use std::process::{Output, Stdio};

/// The user's config before learning: a comment, another key, a rule and a comment in the list.
const CONFIG: &str = "# policy for the fixture (kept by learn)\nlog_level: error\nallowlist:\n  # nothing useful yet\n  - domain=unused.test\n";

/// Names the scripted client asks for, all mapped to the fixture on loopback.
const NAMES: [&str; 5] = [
    "fixture.test",
    "a.one.test",
    "b.one.test",
    "solo.test",
    "narrow.test",
];

/// The jail's flags and the fixture's, at log level `level`.
fn flags(fx: &Fixture, jail: &[String], level: &str) -> Vec<String> {
    let mut f: Vec<String> = jail
        .chunks(2)
        .filter(|p| p[0] != "--log-level")
        .flatten()
        .cloned()
        .collect();
    let fixture = fx.flags(&[]);
    f.extend(
        fixture
            .chunks(2)
            .filter(|p| p[0] != "--log-level")
            .flatten()
            .cloned(),
    );
    f.extend(["--log-level".into(), level.into()]);
    for n in &NAMES[1..] {
        f.push("--resolve".into());
        f.push(format!("{n}=127.0.0.1"));
    }
    f
}

/// The client: each request prints `label code` (000: the tunnel was refused).
fn client_script(fx: &Fixture) -> String {
    let (h, s) = (fx.http_port, fx.https_port);
    [
        format!("https https://fixture.test:{s}/allowed.txt"),
        format!("a http://a.one.test:{h}/allowed.txt"),
        format!("b http://b.one.test:{h}/denied.txt"),
        format!("solo http://solo.test:{h}/allowed.txt"),
    ]
    .iter()
    .map(|l| {
        let (label, url) = l.split_once(' ').unwrap();
        format!("echo {label} $(curl -s -o /dev/null -w '%{{http_code}}' {url})\n")
    })
    .collect()
}

fn write_config(who: As, dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    if who == As::User {
        let uid = test_user();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
    }
    path
}

fn boundary(who: As, home: &Path, args: &[&str], flags: &[String], tail: &[&str]) -> Output {
    boundary_cmd(who, home, &[])
        .args(args)
        .args(flags)
        .args(tail)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// learn, learn --apply, check, learn again: the round trip with `--group`.
fn round_trip(who: As) {
    require_root().expect("this test needs root");
    let fx = Fixture::start();
    let script = client_script(&fx);
    for (jail, jflags) in both_jails() {
        let home = config_home(who);
        let config = write_config(who, home.path(), CONFIG);
        let cfg = config.to_string_lossy().into_owned();
        let f = flags(&fx, &jflags, "error");
        let learn = |extra: &[&str]| {
            let mut args = vec!["learn", "--group", "--config", &cfg];
            args.extend(extra);
            boundary(who, home.path(), &args, &f, &["--", "sh", "-c", &script])
        };

        let first = learn(&[]);
        let t = format!("{jail} as {who:?}, first learn: {}", text(&first));
        assert!(first.status.success(), "{t}");
        let out = stdout(&first);
        // Enforced as usual: nothing was let through.
        for line in ["a 403", "b 403", "solo 403"] {
            assert!(out.contains(line), "{line}: {t}");
        }
        // A refused tunnel: curl reports no status (000) or the proxy's 403 to CONNECT.
        assert!(
            out.contains("https 000") || out.contains("https 403"),
            "{t}"
        );
        let added = [
            "+  - 'domain=*.one.test'",
            "+  - 'domain=fixture.test'",
            "+  - 'domain=solo.test'",
        ];
        for line in added {
            assert!(out.contains(&format!("\n{line}\n")), "{line}: {t}");
        }
        assert!(!out.contains("domain=a.one.test"), "{t}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG, "{t}");
        let proposed = std::fs::read_to_string(format!("{cfg}.proposed")).unwrap();
        assert!(proposed.starts_with(CONFIG), "{proposed}");

        let applied = learn(&["--apply"]);
        let t = format!("{jail} as {who:?}, learn --apply: {}", text(&applied));
        assert!(applied.status.success(), "{t}");
        assert!(
            stdout(&applied).contains("applied: 3 rules added to"),
            "{t}"
        );
        let file = std::fs::read_to_string(&config).unwrap();
        let expected = format!(
            "{CONFIG}  - 'domain=*.one.test'\n  - 'domain=fixture.test'\n  - 'domain=solo.test'\n"
        );
        assert_eq!(file, expected, "{t}");

        // Each proposed rule allows its request in `boundary check`, through the config file.
        for url in [
            "https://fixture.test/allowed.txt",
            "http://a.one.test/allowed.txt",
            "http://b.one.test/denied.txt",
            "http://solo.test/allowed.txt",
        ] {
            let c = boundary(
                who,
                home.path(),
                &["check", "--config", &cfg, url],
                &[],
                &[],
            );
            assert!(c.status.success(), "check {url}: {}", text(&c));
        }

        let again = learn(&[]);
        let t = format!("{jail} as {who:?}, learn again: {}", text(&again));
        assert!(again.status.success(), "{t}");
        let out = stdout(&again);
        for line in ["https 200", "a 200", "b 200", "solo 200"] {
            assert!(out.contains(line), "{line}: {t}");
        }
        assert!(out.contains("no new denied requests"), "{t}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), expected, "{t}");
    }
}

#[test]
fn learn_apply_and_learn_again_as_root() {
    round_trip(As::Root);
}

#[test]
fn learn_apply_and_learn_again_as_user() {
    round_trip(As::User);
}

/// `--narrow`: the methods and paths seen, and nothing else on that host.
#[test]
fn learn_narrow_proposes_methods_and_paths() {
    require_root().expect("this test needs root");
    let fx = Fixture::start();
    let h = fx.http_port;
    let s = fx.https_port;
    let script = format!(
        "echo get $(curl -s -o /dev/null -w '%{{http_code}}' http://narrow.test:{h}/allowed.txt)\n\
         echo head $(curl -s -o /dev/null -w '%{{http_code}}' -I http://narrow.test:{h}/denied.txt)\n\
         echo tls $(curl -s -o /dev/null -w '%{{http_code}}' https://fixture.test:{s}/allowed.txt?x=1)\n"
    );
    for (jail, jflags) in both_jails() {
        let who = As::Root;
        let home = config_home(who);
        let config = write_config(who, home.path(), CONFIG);
        let cfg = config.to_string_lossy().into_owned();
        let f = flags(&fx, &jflags, "error");
        let learn = |extra: &[&str]| {
            let mut args = vec!["learn", "--narrow", "--config", &cfg];
            args.extend(extra);
            boundary(who, home.path(), &args, &f, &["--", "sh", "-c", &script])
        };
        let first = learn(&["--apply"]);
        let t = format!("{jail}, learn --narrow --apply: {}", text(&first));
        assert!(first.status.success(), "{t}");
        assert!(stdout(&first).contains("get 403"), "{t}");
        assert!(stdout(&first).contains("tls 403"), "{t}");
        // Over HTTPS too: the requests inside the intercepted tunnel are what is narrowed.
        for rule in [
            "method=GET domain=fixture.test path=/allowed.txt",
            "method=GET,HEAD domain=narrow.test path=/allowed.txt,/denied.txt",
        ] {
            assert!(
                stdout(&first).contains(&format!("\n+  - '{rule}'\n")),
                "{rule}: {t}"
            );
        }
        let again = learn(&[]);
        let t = format!("{jail}, learn again: {}", text(&again));
        assert!(stdout(&again).contains("get 200"), "{t}");
        assert!(stdout(&again).contains("head 200"), "{t}");
        assert!(stdout(&again).contains("tls 200"), "{t}");
        assert!(stdout(&again).contains("no new denied requests"), "{t}");
        // What was not seen stays denied: another path, another method.
        for (method, url) in [
            ("GET", "http://narrow.test/other"),
            ("POST", "http://narrow.test/allowed.txt"),
            ("GET", "https://fixture.test/denied.txt"),
        ] {
            let c = boundary(
                who,
                home.path(),
                &["check", "-X", method, "--config", &cfg, url],
                &[],
                &[],
            );
            assert_eq!(c.status.code(), Some(1), "{method} {url}: {}", text(&c));
        }
    }
}

/// `suggest --from` an `--audit-log` file and a `--log-dir` log of a plain run, and bad input.
#[test]
fn suggest_from_audit_log_and_local_log() {
    require_root().expect("this test needs root");
    let fx = Fixture::start();
    let script = client_script(&fx);
    for (jail, jflags) in both_jails() {
        let who = As::Root;
        let home = config_home(who);
        let config = write_config(who, home.path(), CONFIG);
        let cfg = config.to_string_lossy().into_owned();
        let audit = home.path().join("audit.jsonl");
        let logs = home.path().join("logs");
        let mut f = flags(&fx, &jflags, "warn");
        f.extend([
            "--audit-log".into(),
            audit.to_string_lossy().into_owned(),
            "--log-dir".into(),
            logs.to_string_lossy().into_owned(),
            "--config".into(),
            cfg.clone(),
        ]);
        let run = boundary(who, home.path(), &[], &f, &["--", "sh", "-c", &script]);
        assert!(stdout(&run).contains("solo 403"), "{jail}: {}", text(&run));
        let local = logs.join("boundary.log");
        for from in [&audit, &local] {
            let from = from.to_string_lossy();
            let s = boundary(
                who,
                home.path(),
                &["suggest", "--from", &from, "--config", &cfg],
                &[],
                &[],
            );
            let t = format!("{jail}, suggest --from {from}: {}", text(&s));
            assert!(s.status.success(), "{t}");
            for host in ["a.one.test", "b.one.test", "fixture.test", "solo.test"] {
                assert!(
                    stdout(&s).contains(&format!("\n+  - 'domain={host}'\n")),
                    "{host}: {t}"
                );
            }
        }
        assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG);
    }
    // Bad input: a missing file, a line that is not a record (named by its number).
    let home = config_home(As::Root);
    let config = write_config(As::Root, home.path(), CONFIG);
    let cfg = config.to_string_lossy().into_owned();
    let missing = home.path().join("missing.jsonl");
    let s = boundary(
        As::Root,
        home.path(),
        &[
            "suggest",
            "--from",
            &missing.to_string_lossy(),
            "--config",
            &cfg,
        ],
        &[],
        &[],
    );
    assert_eq!(s.status.code(), Some(2), "{}", text(&s));
    let err = String::from_utf8_lossy(&s.stderr);
    assert!(
        err.contains("cannot read") && err.contains("--audit-log"),
        "{err}"
    );
    let bad = home.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"decision\":\"deny\",\"http_method\":\"GET\",\"http_url\":\"https://x.test/\"}\nnot a record\n",
    )
    .unwrap();
    let s = boundary(
        As::Root,
        home.path(),
        &[
            "suggest",
            "--from",
            &bad.to_string_lossy(),
            "--config",
            &cfg,
        ],
        &[],
        &[],
    );
    assert_eq!(s.status.code(), Some(2), "{}", text(&s));
    let err = String::from_utf8_lossy(&s.stderr);
    assert!(
        err.contains("bad.jsonl line 2: neither a log line"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG);
}

/// The jailed process chooses the hosts learn sees: a request whose Host is `*.org` (written
/// raw to the proxy, as no client would) must not make learn propose a wildcard rule. Fails on
/// the first version of learn, which proposed `domain=*.org`.
#[test]
fn a_jailed_host_cannot_widen_the_proposal() {
    require_root().expect("this test needs root");
    // landjail: to the proxy named by HTTP_PROXY; nsjail: any address, redirected to it.
    let script = r#"python3 - <<'PY'
import os, socket
proxy = os.environ.get("HTTP_PROXY")
addr = ("127.0.0.1", int(proxy.rsplit(":", 1)[1])) if proxy else ("192.0.2.1", 80)
for host in (b"*.org", b"*", b"a.*.org"):
    s = socket.create_connection(addr)
    s.sendall(b"GET http://" + host + b"/ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    print(host.decode(), s.recv(12).decode())
    s.close()
PY"#;
    for (jail, jflags) in both_jails() {
        let home = config_home(As::Root);
        let config = write_config(As::Root, home.path(), CONFIG);
        let cfg = config.to_string_lossy().into_owned();
        let out = boundary(
            As::Root,
            home.path(),
            &["learn", "--group", "--narrow", "--apply", "--config", &cfg],
            &jflags,
            &["--", "sh", "-c", script],
        );
        let t = format!("{jail}: {}", text(&out));
        assert!(out.status.success(), "{t}");
        // Positive control: the requests reached the proxy and were denied.
        assert!(stdout(&out).contains("*.org HTTP/1.1 403"), "{t}");
        assert!(stdout(&out).contains("no rule proposed"), "{t}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("*.org: not a host name or IPv4 address a rule can name literally"),
            "{t}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG, "{t}");
    }
}

/// A jailed command that edits the config file while learn runs (landjail runs it as the user,
/// who owns the file; nsjail binds it read-only) never gets its edit applied under the user's
/// name: learn refuses to propose on top of a file that changed during the run.
#[test]
fn a_config_changed_by_the_jail_is_not_applied() {
    require_root().expect("this test needs root");
    let fx = Fixture::start();
    for (jail, jflags) in both_jails() {
        let home = config_home(As::Root);
        let config = write_config(As::Root, home.path(), CONFIG);
        let cfg = config.to_string_lossy().into_owned();
        let script = format!(
            "echo '  - domain=planted.test' >> '{cfg}' && echo planted\n\
             curl -s -o /dev/null -w 'solo %{{http_code}}\\n' http://solo.test:{}/\n",
            fx.http_port
        );
        let f = flags(&fx, &jflags, "error");
        let out = boundary(
            As::Root,
            home.path(),
            &["learn", "--apply", "--config", &cfg],
            &f,
            &["--", "sh", "-c", &script],
        );
        let t = format!("{jail}: {}", text(&out));
        assert!(stdout(&out).contains("solo 403"), "{t}");
        let now = std::fs::read_to_string(&config).unwrap();
        if stdout(&out).contains("planted") {
            // The jail could write the file (landjail): nothing is proposed or applied.
            assert_eq!(out.status.code(), Some(2), "{t}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("changed while the command ran"), "{t}");
            assert_eq!(now, format!("{CONFIG}  - domain=planted.test\n"), "{t}");
            assert!(!Path::new(&format!("{cfg}.proposed")).exists(), "{t}");
        } else {
            // It could not (nsjail): learn proposes and applies as usual.
            assert_eq!(jail, "nsjail", "{t}");
            assert!(out.status.success(), "{t}");
            assert_eq!(now, format!("{CONFIG}  - 'domain=solo.test'\n"), "{t}");
        }
    }
}
