//! Live reload of the policy through the real binary, in both jails (issue 16 item 3).
//!
//! A jailed script asks for one fixture path per line the test writes to it. Between requests
//! the test changes the policy: SIGHUP after editing a file the config symlink points to (a
//! change the file watch cannot see, so only the signal loads it), a rename over the config
//! file (the watch loads it), a broken file (the running generation stays, the log names the
//! line), and a new `jail_type` and `proxy_port` (reported as needing a restart, nothing
//! changes). The JSON audit file shows which generation decided each request. The jailed
//! script outlives every SIGHUP: the signal reloads, it is not forwarded. Also: landjail
//! refuses to reload a file its jailed user could have written, and a hangup of boundary's
//! terminal still reaches the jailed command.
//!
//! Needs root, curl, python3 and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The jailed script: `ready`, then one request per path read from stdin, until `quit`.
fn script(port: u16) -> String {
    format!(
        "echo ready; while read p; do [ \"$p\" = quit ] && exit 0; \
         echo \"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 20 \
         https://fixture.test:{port}/$p)\"; done"
    )
}

/// A running boundary with the script, its stdout lines and everything it logged.
struct Run {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    log: Arc<Mutex<String>>,
    what: String,
}

impl Run {
    fn start(who: As, home: &Path, flags: &[String], port: u16, what: &str) -> Run {
        let mut child = boundary_cmd(who, home, &[])
            .args(flags)
            .args(["--", "sh", "-c", &script(port)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap_or_default());
        let run = Run {
            child,
            stdin,
            lines,
            log,
            what: what.to_string(),
        };
        assert_eq!(first.as_deref(), Some("ready"), "{}", run.context());
        run
    }

    fn context(&self) -> String {
        format!("{}\n--- log\n{}", self.what, self.log.lock().unwrap())
    }

    /// The status of a request for `path` made in the jail.
    fn get(&mut self, path: &str) -> String {
        writeln!(self.stdin, "{path}").unwrap();
        let line = self.lines.next().map(|l| l.unwrap_or_default());
        let line = line.unwrap_or_else(|| panic!("no answer for {path}\n{}", self.context()));
        line.trim().trim_start_matches("code=").to_string()
    }

    /// Waits until the log holds `n` occurrences of `text`.
    fn logged(&self, text: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log.lock().unwrap().matches(text).count() < n {
            assert!(
                Instant::now() < deadline,
                "{text:?} was not logged {n} times\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn hup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // boundary_cmd starts boundary under `env` (and `runuser`), which exec or forward:
        // signal boundary itself, found as the child's descendant named boundary.
        let target = boundary_pid(pid).unwrap_or(pid);
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGHUP).unwrap();
    }

    fn finish(mut self) -> String {
        writeln!(self.stdin, "quit").unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.context());
        self.context()
    }
}

/// The boundary process at or below `pid` (runuser forks; env execs).
fn boundary_pid(pid: nix::unistd::Pid) -> Option<nix::unistd::Pid> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    if exe.file_name().is_some_and(|n| n == "boundary") {
        return Some(pid);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .find_map(|c| boundary_pid(nix::unistd::Pid::from_raw(c)))
}

/// Writes `text` to `path` the way editors do: a new file renamed over the old name.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The JSON audit file's records as (path, decision, generation).
fn audited(file: &Path) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let url = v["http_url"].as_str().unwrap();
            (
                url.rsplit_once('/').unwrap().1.to_string(),
                v["decision"].as_str().unwrap().to_string(),
                v["policy_generation"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn settings(jail: &str, port: u16, rules: &[&str]) -> String {
    let mut text = format!("jail_type: {jail}\nproxy_port: {port}\nallowlist:\n");
    for r in rules {
        text.push_str(&format!("  - {r}\n"));
    }
    text
}

/// boundary's flags for a run with `config`, writing `audit`, against the fixture `fx`.
fn run_flags(config: &Path, audit: &Path, fx: &Fixture) -> Vec<String> {
    [
        "--config",
        &config.display().to_string(),
        "--audit-log",
        &audit.display().to_string(),
        "--log-level",
        "info",
        "--resolve",
        "fixture.test=127.0.0.1",
        "--upstream-ca-file",
        &fx.ca_cert.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// A world-readable root-owned directory under `/var/lib`, which no jail may write.
fn outside_jail_writes() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("boundary-reload-")
        .tempdir_in("/var/lib")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sighup_and_file_changes_reload_the_policy_in_both_jails() {
    require_root().expect("this test needs root (CI runs as root): it starts jails");
    let fx = Fixture::start();
    let a = "domain=fixture.test path=/allowed.txt";
    let d = "domain=fixture.test path=/denied.txt";
    let x = "domain=fixture.test path=/x3";
    for (jail, who) in [
        ("nsjail", As::Root),
        ("nsjail", As::User),
        ("landjail", As::User),
    ] {
        let what = format!("{jail} as {who:?}");
        // The config file: a symlink in one root-owned directory to a file in another, both
        // outside what a root-started jail may write (not /tmp), so a file renamed over it
        // can be reloaded (see the next test for one the jail could change).
        let link_dir = outside_jail_writes();
        let real_dir = outside_jail_writes();
        let config = link_dir.path().join("config.yaml");
        let real = real_dir.path().join("real.yaml");
        let port = free_port();
        replace(&real, &settings(jail, port, &[a]));
        std::os::unix::fs::symlink(&real, &config).unwrap();
        let home = config_home(who);
        let audit = home.path().join("audit.jsonl");
        let flags = run_flags(&config, &audit, &fx);
        let mut run = Run::start(who, home.path(), &flags, fx.https_port, &what);
        assert_eq!(run.get("denied.txt"), "403", "{}", run.context());
        // SIGHUP: the edit is in the directory the symlink points into, unwatched.
        replace(&real, &settings(jail, port, &[a, d]));
        run.hup();
        run.logged("policy generation 2 loaded from", 1);
        assert!(
            run.log.lock().unwrap().contains("(+1 rules, -0 rules)"),
            "{}",
            run.context()
        );
        assert_eq!(run.get("denied.txt"), "200", "{}", run.context());
        // The watch: a file renamed over the config file's name.
        replace(&config, &settings(jail, port, &[a, x]));
        run.logged("policy generation 3 loaded from", 1);
        assert_eq!(run.get("x3"), "404", "{}", run.context());
        assert_eq!(run.get("denied.txt"), "403", "{}", run.context());
        // A broken rule on line 6: logged with its line, generation 3 stays.
        replace(
            &config,
            &format!("{}  - colour=red\n", settings(jail, port, &[a, x])),
        );
        run.logged("cannot reload the policy from", 1);
        assert!(
            run.log.lock().unwrap().contains("line 6"),
            "{}",
            run.context()
        );
        assert_eq!(run.get("x3"), "404", "{}", run.context());
        // The jail type and the proxy port cannot change while running: reported, kept.
        let other_jail = if jail == "nsjail" {
            "landjail"
        } else {
            "nsjail"
        };
        replace(&config, &settings(other_jail, free_port(), &[a, x]));
        run.logged("needs a restart", 2);
        let log = run.log.lock().unwrap().clone();
        for key in ["jail_type changed", "proxy_port changed"] {
            assert!(log.contains(key), "{key}\n{}", run.context());
        }
        assert_eq!(run.get("x3"), "404", "{}", run.context());
        // One more SIGHUP with nothing new: the script is still there to answer.
        run.hup();
        run.logged("SIGHUP: allow rules unchanged", 1);
        assert_eq!(run.get("allowed.txt"), "200", "{}", run.context());
        let context = run.finish();
        let got = audited(&audit);
        let want: Vec<(String, String, u64)> = [
            ("denied.txt", "deny", 1),
            ("denied.txt", "allow", 2),
            ("x3", "allow", 3),
            ("denied.txt", "deny", 3),
            ("x3", "allow", 3),
            ("x3", "allow", 3),
            ("allowed.txt", "allow", 3),
        ]
        .iter()
        .map(|(p, d, g)| (p.to_string(), d.to_string(), *g))
        .collect();
        assert_eq!(got, want, "{context}");
        assert!(
            context.contains("policy_generation=2"),
            "the local log names the generation\n{context}"
        );
    }
}

#[test]
fn landjail_refuses_to_reload_a_file_its_jailed_user_can_write() {
    require_root().expect("this test needs root (CI runs as root): it creates a user");
    let fx = Fixture::start();
    let home = config_home(As::User);
    // The user's own file, as a landjail target (same user) could rewrite it.
    let config = home.path().join("own.yaml");
    let port = free_port();
    let a = "domain=fixture.test path=/allowed.txt";
    let d = "domain=fixture.test path=/denied.txt";
    std::fs::write(&config, settings("landjail", port, &[a])).unwrap();
    let uid = test_user();
    std::os::unix::fs::chown(&config, Some(uid), Some(uid)).unwrap();
    let audit = home.path().join("audit.jsonl");
    let flags = run_flags(&config, &audit, &fx);
    let mut run = Run::start(As::User, home.path(), &flags, fx.https_port, "landjail");
    std::fs::write(&config, settings("landjail", port, &[a, d])).unwrap();
    run.logged("live reload refused", 1);
    run.hup();
    run.logged("SIGHUP: live reload refused", 1);
    assert!(
        run.log.lock().unwrap().contains("--jail-type nsjail"),
        "{}",
        run.context()
    );
    assert_eq!(run.get("denied.txt"), "403", "{}", run.context());
    let context = run.finish();
    assert_eq!(
        audited(&audit),
        [("denied.txt".to_string(), "deny".to_string(), 1)],
        "{context}"
    );
    assert!(!context.contains("policy generation 2"), "{context}");
}

/// Runs boundary on a new pseudo-terminal (as its session leader) and closes the terminal once
/// the jailed script is ready; prints the exit code (or that it did not exit).
const HANGUP: &str = r#"
import os, pty, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
seen = b""
while b"ready" not in seen:
    chunk = os.read(fd, 1024)
    if not chunk:
        break
    seen += chunk
os.close(fd)
for _ in range(600):
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print(os.waitstatus_to_exitcode(status))
        sys.exit(0)
    time.sleep(0.1)
os.kill(pid, signal.SIGKILL)
print("still running 60 s after the hangup")
"#;

#[test]
fn a_terminal_hangup_still_reaches_the_jailed_command() {
    require_root().expect("this test needs root (CI runs as root): it starts jails");
    for (jail, flags) in both_jails() {
        let home = config_home(As::Root);
        let cmd = boundary_cmd(As::Root, home.path(), &[]);
        let mut argv: Vec<String> = vec![cmd.get_program().to_string_lossy().into_owned()];
        argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        argv.extend(flags.iter().cloned());
        argv.extend(
            [
                "--",
                "sh",
                "-c",
                "trap 'exit 44' HUP; echo ready; while :; do sleep 0.05; done",
            ]
            .map(String::from),
        );
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(HANGUP)
            .args(&argv)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "44",
            "{jail}: the hangup did not reach the target\n{}",
            text(&out)
        );
    }
}

/// nsjail binds a `--config` file outside boundary's own directories read-only, and the bind
/// stays with that file: an editor that saves by renaming puts a new file at the path, which
/// the jail can write when it can write the directory. Such a file is not reloaded (the jail
/// could have widened its own policy: attack16 F15); the refusal says how to load it. The
/// positive control is the test above: a replaced file the jail cannot write reloads.
#[test]
fn nsjail_refuses_to_reload_a_replaced_config_file_the_jail_can_write() {
    require_root().expect("this test needs root (CI runs as root): it starts jails");
    let fx = Fixture::start();
    let a = "domain=fixture.test path=/allowed.txt";
    let d = "domain=fixture.test path=/denied.txt";
    let home = config_home(As::User);
    // A directory of the user's own, writable in the jail.
    let dir = config_home(As::User);
    let config = dir.path().join("config.yaml");
    let port = free_port();
    std::fs::write(&config, settings("nsjail", port, &[a])).unwrap();
    let audit = home.path().join("audit.jsonl");
    let flags = run_flags(&config, &audit, &fx);
    let mut run = Run::start(As::User, home.path(), &flags, fx.https_port, "nsjail");
    assert_eq!(run.get("denied.txt"), "403", "{}", run.context());
    replace(&config, &settings("nsjail", port, &[a, d]));
    run.logged("live reload refused", 1);
    assert!(
        run.log
            .lock()
            .unwrap()
            .contains("was replaced by another file"),
        "{}",
        run.context()
    );
    assert_eq!(run.get("denied.txt"), "403", "{}", run.context());
    run.finish();
}
