//! The jailed command as a process: exit codes (0, 3, 128+signal), signals to boundary
//! forwarded (SIGHUP in live_reload.rs; SIGKILL after the grace period), stdin/stdout pass-through of 100 MiB, an
//! interactive shell driven through tmux, and ten jails at once each with its own policy.

mod nsjail_common;
use nsjail_common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn assert_code(who: As, script: &str, want: i32) {
    let config = config_home(who);
    let o = jailed_sh(who, config.path(), &[], &["--log-level", "error"], script);
    assert_eq!(
        o.status.code(),
        Some(want),
        "{who:?} {script}: {}",
        text(&o)
    );
}

#[test]
fn exit_codes_are_the_targets() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        assert_code(who, "exit 0", 0);
        assert_code(who, "exit 3", 3);
        assert_code(who, "kill -TERM $$", 143);
        assert_code(who, "kill -SEGV $$", 139);
    }
}

/// Starts `boundary -- sh -c script` where the script prints `ready` once its traps are set.
fn start_ready(script: &str) -> (std::process::Child, tempfile::TempDir) {
    let config = config_home(As::Root);
    let child = spawn_ready(
        boundary_cmd(As::Root, config.path(), &[])
            .args(["--log-level", "error", "--", "sh", "-c", script])
            .stdin(Stdio::null()),
        "ready",
    );
    (child, config)
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn sigterm_and_sigint_to_boundary_reach_the_target() {
    require_root().unwrap();
    let (mut child, _c) =
        start_ready("trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(42));
    let (mut child, _c) =
        start_ready("trap 'exit 43' INT; echo ready; while :; do sleep 0.05; done");
    signal(&child, nix::sys::signal::Signal::SIGINT);
    assert_eq!(child.wait().unwrap().code(), Some(43));
    // SIGHUP reloads the policy instead, and reaches the target only when boundary's terminal
    // hangs up: see live_reload.rs.
}

#[test]
fn a_target_that_ignores_sigterm_is_killed_after_the_grace_period() {
    require_root().unwrap();
    let (mut child, _c) = start_ready("trap '' TERM; echo ready; while :; do sleep 0.05; done");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

#[test]
fn a_hundred_mib_pass_through_cat_unchanged() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let config = config_home(who);
        let mut data = vec![0u8; 100 << 20];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let mut child = boundary_cmd(who, config.path(), &[])
            .args(["--log-level", "error", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = data.clone();
        let writer = std::thread::spawn(move || {
            stdin.write_all(&input).unwrap();
        });
        let mut out = Vec::with_capacity(data.len());
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        writer.join().unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(out.len(), data.len());
        assert!(out == data, "bytes changed on the way through the jail");
    }
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for_pane(session: &str, what: impl Fn(&str) -> bool, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pane = tmux(&["capture-pane", "-p", "-t", session]);
        if what(&pane) {
            return pane;
        }
        assert!(Instant::now() < deadline, "{why}; pane:\n{pane}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn interactive_shell_through_tmux() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let config = config_home(who);
        let done = config.path().join("exit-code");
        let session = format!("bnd-{}-{:?}", std::process::id(), who);
        let cmd = boundary_cmd(who, config.path(), &[]);
        let mut line = vec![cmd.get_program().to_string_lossy().into_owned()];
        line.extend(cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())));
        let shell = format!(
            "{} --log-level error -- env PS1='jail-prompt$ ' bash --norc --noprofile -i; echo $? > {}",
            line.join(" "),
            done.display()
        );
        let _ = std::fs::set_permissions(
            config.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "30",
            &shell,
        ]);
        wait_for_pane(&session, |p| p.contains("jail-prompt$"), "no prompt");
        tmux(&[
            "send-keys",
            "-t",
            &session,
            "sleep 100; echo after-sleep-$?",
            "Enter",
        ]);
        wait_for_pane(&session, |p| p.contains("sleep 100;"), "command not echoed");
        tmux(&["send-keys", "-t", &session, "C-c"]);
        // Ctrl-C interrupts sleep (status 130) and the shell survives with a new prompt.
        wait_for_pane(
            &session,
            |p| p.matches("jail-prompt$").count() >= 2,
            "Ctrl-C did not interrupt sleep",
        );
        tmux(&["send-keys", "-t", &session, "exit 3", "Enter"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done.exists() {
            assert!(Instant::now() < deadline, "shell did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(&done).unwrap().trim(), "3");
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &session])
            .output();
    }
}

#[test]
fn ten_jails_at_once_each_with_its_own_policy() {
    require_root().unwrap();
    let fx = Fixture::start();
    let mut children = Vec::new();
    for i in 0..10 {
        let who = if i % 2 == 0 { As::Root } else { As::User };
        let config = config_home(who);
        let mut flags = vec![
            "--log-level".to_string(),
            "error".into(),
            "--allow".into(),
            format!("domain=site{i}.test"),
        ];
        for k in 0..10 {
            flags.push("--resolve".into());
            flags.push(format!("site{k}.test=127.0.0.1"));
        }
        // Every jail says it is up and waits: all ten are running at the same time before any
        // of them makes a request.
        let script = format!(
            "echo ready; read go; for k in 0 1 2 3 4 5 6 7 8 9; do printf 'site%s=%s\\n' $k \
             $(curl -s -o /dev/null -w '%{{http_code}}' http://site$k.test:{}/allowed.txt); done",
            fx.http_port
        );
        let mut child = boundary_cmd(who, config.path(), &[])
            .args(&flags)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "jail {i} did not start");
        children.push((i, child, stdout, config));
    }
    for (_, child, _, _) in &mut children {
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for (i, child, mut stdout, _config) in children {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        let o = child.wait_with_output().unwrap();
        for k in 0..10 {
            let want = if k == i { 200 } else { 403 };
            assert!(
                out.contains(&format!("site{k}={want}")),
                "jail {i}: site{k} should be {want}:\n{}",
                text(&o)
            );
        }
        assert!(o.status.success(), "{}", text(&o));
    }
}
