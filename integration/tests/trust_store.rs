//! The origins' trust store loads beside the run, and only an upstream TLS handshake waits for
//! it (issue 15: `boundary -- true` must not wait for certificates it never uses), through the
//! real binary in both jails. The system bundle is a FIFO (`SSL_CERT_FILE`, which boundary
//! reads as OpenSSL does): reading it blocks until something writes to it.
//! - Nothing writes: `true` still runs and boundary exits 0 (before, boundary waited for the
//!   load after the jail had started, for ever).
//! - The positive control: the fixture's CA is written into the FIFO and a jailed `curl`
//!   fetches the fixture over HTTPS with no `--upstream-ca-file`, so the load reads the FIFO
//!   and the handshake waits for it.
//!
//! Needs root and `cargo build -p boundary` first; packages: curl, openssl, python3.

mod nsjail_common;
use nsjail_common::*;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Waits for `child`, killing it after `limit` (a hang guard, not a timing assertion).
fn finish(mut child: Child, limit: Duration) -> Option<Output> {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child.wait_with_output().unwrap())
}

fn fifo(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bundle.fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    path
}

#[test]
fn a_trust_store_that_never_loads_does_not_hold_up_a_command_that_needs_none() {
    require_root().unwrap();
    for (jail, flags) in both_jails() {
        let config = config_home(As::Root);
        let bundle = fifo(config.path());
        let child = boundary_cmd(As::Root, config.path(), &[])
            .env("SSL_CERT_FILE", &bundle)
            .env_remove("SSL_CERT_DIR")
            .args(&flags)
            .args(["--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish(child, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!("{jail}: boundary -- true did not exit: it waits for the trust store")
        });
        assert!(out.status.success(), "{jail}: {}", text(&out));
    }
}

#[test]
fn the_first_https_request_waits_for_the_trust_store_and_then_verifies_with_it() {
    require_root().unwrap();
    let fx = Fixture::start();
    for (jail, flags) in both_jails() {
        let config = config_home(As::Root);
        let bundle = fifo(config.path());
        let ca = std::fs::read(&fx.ca_cert).unwrap();
        let writer = {
            let bundle = bundle.clone();
            // Opening a FIFO for writing waits for its reader: boundary's load.
            std::thread::spawn(move || std::fs::write(bundle, ca))
        };
        let script = format!(
            "curl -sS https://fixture.test:{}/allowed.txt",
            fx.https_port
        );
        let child = boundary_cmd(As::Root, config.path(), &[])
            .env("SSL_CERT_FILE", &bundle)
            .env_remove("SSL_CERT_DIR")
            .args(&flags)
            .args(["--resolve", "fixture.test=127.0.0.1"])
            .args(["--allow", "domain=fixture.test"])
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish(child, Duration::from_secs(60));
        let read = writer.is_finished();
        // If nothing opened the FIFO, its read end opened here lets the writer finish.
        let _reader = (!read).then(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&bundle)
        });
        writer.join().unwrap().unwrap();
        let out = out.unwrap_or_else(|| panic!("{jail}: the jailed curl did not finish"));
        assert!(
            read,
            "{jail}: boundary did not read SSL_CERT_FILE: {}",
            text(&out)
        );
        assert!(out.status.success(), "{jail}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            ALLOWED_BODY,
            "{jail}: {}",
            text(&out)
        );
    }
}
