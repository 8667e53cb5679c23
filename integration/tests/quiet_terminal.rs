//! boundary keeps off the target's screen (issue 17 item 5). In a tmux pane (stderr a
//! terminal, no `--log-dir`) at the default level, a jailed request is denied: the pane holds
//! the target's output and boundary's one-line deny summary at exit, and no log line (the deny
//! record and every warning go to `boundary.log` in the state directory). Non-interactive runs
//! (stderr not a terminal) keep logging to stderr; outside Coder (no agent socket) that is one
//! info line, and no warning at the default level. In both jails, as root.
//!
//! Needs root, tmux, curl and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Request the jailed script makes; no rule allows it (in nsjail the address is redirected to
/// the proxy, in landjail curl sends it to the proxy named in HTTP_PROXY).
const SCRIPT: &str = "curl -s -o /dev/null -w 'code=%{http_code}\\n' \
                      --resolve denied.test:80:192.0.2.1 http://denied.test/quiet; \
                      echo target-done";

fn jails() -> [(&'static str, Vec<String>); 2] {
    [
        ("nsjail", vec!["--jail-type".into(), "nsjail".into()]),
        ("landjail", landjail_flags()),
    ]
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed (package tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The single-quoted shell line running `boundary` as `boundary_cmd` builds it, with the state
/// directory `state` (apart from the config directory, as `~/.local/state` is from `~/.config`).
fn shell_line(config: &Path, state: &Path, flags: &[String], script: &str) -> String {
    let cmd = boundary_cmd(As::Root, config, &[]);
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        match a.strip_prefix("XDG_STATE_HOME=") {
            Some(_) => format!("XDG_STATE_HOME={}", state.display()),
            None => a.into_owned(),
        }
    }));
    words.extend(flags.iter().cloned());
    words.extend(["--allow", "domain=example.com", "--", "sh", "-c", script].map(String::from));
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn interactive_run_keeps_log_lines_off_the_screen() {
    require_root().expect("this test needs root");
    for (jail, flags) in jails() {
        let config = config_home(As::Root);
        let state = config_home(As::Root);
        let done = config.path().join("exit-code");
        let session = format!("bnd-quiet-{}-{jail}", std::process::id());
        let shell = format!(
            "{}; echo $? > {}; sleep 600",
            shell_line(config.path(), state.path(), &flags, SCRIPT),
            done.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "250",
            "-y",
            "40",
            &shell,
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.exists() {
            assert!(Instant::now() < deadline, "{jail}: boundary did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pane = tmux(&["capture-pane", "-p", "-J", "-t", &session]);
        let _ = tmux(&["kill-session", "-t", &session]);
        let code = std::fs::read_to_string(&done).unwrap();
        let log_file = state.path().join("coder_boundary/boundary.log");
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        let t = format!("{jail}: exit {code}\npane:\n{pane}\nlog file:\n{log}");
        assert_eq!(code.trim(), "0", "{t}");
        assert!(pane.contains("code=403"), "{t}");
        assert!(pane.contains("target-done"), "{t}");
        for line in ["WARN", "INFO", "ERROR", "boundary_request", "audit socket"] {
            assert!(!pane.contains(line), "{line:?} on the screen\n{t}");
        }
        // The summary: count, host, log file, and the command that shows the rules.
        let summary = format!(
            "boundary: 1 request denied (denied.test); log: {}; rules that would allow the first: \
             boundary check -X 'GET' 'http://denied.test/quiet'",
            log_file.display()
        );
        assert!(pane.contains(&summary), "no summary {summary:?}\n{t}");
        assert!(log.contains("boundary_request"), "{t}");
        assert!(log.contains("http_url=http://denied.test/quiet"), "{t}");
        assert!(log.contains("decision=\"deny\""), "{t}");
    }
}

#[test]
fn non_interactive_run_logs_to_stderr_and_outside_coder_only_at_info() {
    require_root().expect("this test needs root");
    for (jail, flags) in jails() {
        for (level, socket_lines) in [("warn", 0), ("info", 1)] {
            let config = config_home(As::Root);
            let out = boundary_cmd(As::Root, config.path(), &[])
                .args(&flags)
                .args(["--log-level", level, "--allow", "domain=example.com"])
                .args(["--", "sh", "-c", SCRIPT])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let t = format!("{jail} at {level}: {}", text(&out));
            assert!(out.status.success(), "{t}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("http_url=http://denied.test/quiet"), "{t}");
            assert!(
                !stderr.contains("request denied ("),
                "summary in a log: {t}"
            );
            let about_socket: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("audit socket"))
                .collect();
            assert_eq!(about_socket.len(), socket_lines, "{t}");
            assert!(about_socket.iter().all(|l| l.contains(" INFO ")), "{t}");
            assert!(
                !config.path().join("coder_boundary/boundary.log").exists(),
                "{t}"
            );
        }
    }
}

/// The state directory's log is boundary's, not the jailed command's: in nsjail it is
/// read-only inside the jail, in landjail (same uid, no mount namespace) a change made during
/// the run is reported at exit. Positive control: the same write outside the jail works.
#[test]
fn the_state_log_is_protected_like_a_log_dir() {
    require_root().expect("this test needs root");
    let script = "L=\"$XDG_STATE_HOME/coder_boundary/boundary.log\"; echo \"log=$L\"; \
                  mv \"$L\" \"$L.old\" && echo forged-line > \"$L\"; echo write=$?";
    for (jail, flags) in jails() {
        let config = config_home(As::Root);
        let state = config_home(As::Root);
        let done = config.path().join("exit-code");
        let session = format!("bnd-qlog-{}-{jail}", std::process::id());
        let shell = format!(
            "{} 2>&1; echo $? > {}; sleep 600",
            shell_line(config.path(), state.path(), &flags, script),
            done.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "250",
            "-y",
            "40",
            &shell,
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.exists() {
            assert!(Instant::now() < deadline, "{jail}: boundary did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pane = tmux(&["capture-pane", "-p", "-J", "-t", &session]);
        let _ = tmux(&["kill-session", "-t", &session]);
        let log_file = state.path().join("coder_boundary/boundary.log");
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        let t = format!("{jail}\npane:\n{pane}\nlog file:\n{log}");
        assert!(pane.contains(&format!("log={}", log_file.display())), "{t}");
        if jail == "nsjail" {
            assert!(!log.contains("forged-line"), "{t}");
            assert!(!pane.contains("write=0"), "{t}");
        } else {
            assert!(pane.contains("write=0"), "{t}");
            assert!(pane.contains("boundary: WARNING:"), "{t}");
            assert!(pane.contains("boundary.log"), "{t}");
        }
        // Positive control: outside the jail the same file takes the line.
        let out = outside(As::Root, &["sh", "-c", "echo control >> \"$0\""])
            .arg(&log_file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{t}");
    }
}
