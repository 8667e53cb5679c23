//! The run's CA certificate directory (`/tmp/boundary-ca-*`) is not left behind (issue 12
//! follow-up), through the real binary in both jails: it is gone after a normal exit and after
//! SIGTERM to boundary; after SIGKILL (nothing can clean up) it stays, and the next run removes
//! it. Before, every SIGKILLed run left one behind for good.
//!
//! Needs root (nsjail), `cargo build -p boundary`.

mod nsjail_common;
use nsjail_common::*;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

/// Starts boundary in its own process group with a jailed shell that prints the CA
/// certificate's path and then waits; returns the child and the certificate's directory.
fn start(flags: &[String], config: &std::path::Path) -> (Child, PathBuf) {
    let mut child = boundary_cmd(As::Root, config, &[])
        .args(flags)
        .args(["--", "sh", "-c", "echo \"$SSL_CERT_FILE\"; sleep 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let cert = PathBuf::from(line.trim());
    let dir = cert.parent().unwrap().to_path_buf();
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("boundary-ca-")),
        "the trust variable names the CA directory: {line:?}"
    );
    assert!(
        cert.is_file(),
        "{} exists while the run lives",
        cert.display()
    );
    (child, dir)
}

fn signal(child: &Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Ends what is left of the run's process group (the jail of a SIGKILLed boundary).
fn end_group(child: &Child) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
}

#[test]
fn the_ca_directory_is_removed_at_exit_on_sigterm_and_after_a_sigkill_by_the_next_run() {
    require_root().unwrap();
    for (jail, flags) in both_jails() {
        let config = config_home(As::Root);
        // SIGTERM: forwarded to the jail; boundary exits normally and removes the directory.
        let (mut child, dir) = start(&flags, config.path());
        signal(&child, "TERM");
        let status = child.wait().unwrap();
        end_group(&child);
        assert!(
            !dir.exists(),
            "{jail}: {} left after SIGTERM ({status:?})",
            dir.display()
        );

        // SIGKILL: the directory stays...
        let (mut child, dir) = start(&flags, config.path());
        signal(&child, "KILL");
        let _ = child.wait();
        end_group(&child);
        // (the jail's processes may hold the lock a moment longer)
        for _ in 0..50 {
            if std::process::Command::new("pgrep")
                .args(["-g", &child.id().to_string()])
                .output()
                .is_ok_and(|o| o.stdout.is_empty())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(dir.exists(), "{jail}: SIGKILL leaves it (nothing can run)");
        // ...until the next run, which also removes its own at a normal exit.
        let o = boundary_cmd(As::Root, config.path(), &[])
            .args(&flags)
            .args(["--", "sh", "-c", "dirname \"$SSL_CERT_FILE\""])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{jail}: {}", text(&o));
        let next = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        assert!(
            !dir.exists(),
            "{jail}: the next run removed {}",
            dir.display()
        );
        assert!(
            !next.exists(),
            "{jail}: {} left after a normal exit",
            next.display()
        );
    }
}
