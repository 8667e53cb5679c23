//! A flood of idle client connections under a 1,024 descriptor limit: 2,000 keep-alive
//! connections (each made one request, then went quiet) must not stop a second client from
//! being served. Own binary: the limit is process-wide.

mod common;

use std::process::Stdio;

use common::*;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[test]
fn an_idle_connection_flood_does_not_starve_another_client() {
    run(async {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let limit = hard.min(1024);
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;

        let script = format!(
            "read go; exec curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}' --proxy {} \
             'http://{ORIGIN}:{}/echo?second-client'",
            h.proxy_url(),
            origin.port()
        );
        let mut second = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sh");
        let mut second_in = second.stdin.take().unwrap();

        // Opens 2,000 connections to the proxy with one keep-alive request on each, then holds
        // them; in its own process (its own limit).
        let port = origin.port();
        let mut flood = tokio::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/flood.py"
            ))
            .args(["127.0.0.1", &h.addr.port().to_string(), "2000"])
            .arg(format!("http://origin.test:{port}/echo"))
            .arg(format!("origin.test:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("this test needs python3");
        let mut lines = BufReader::new(flood.stdout.take().unwrap()).lines();
        let ready = lines.next_line().await.unwrap().unwrap_or_default();
        let connected: usize = ready
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the flood did not start: {ready:?}"));
        assert!(
            connected as u64 > limit,
            "the flood holds more connections ({connected}) than the descriptor limit ({limit})"
        );

        // The second client was started before the flood (this process may have no
        // descriptor left to start it now); the newline lets it go.
        second_in.write_all(b"go\n").await.unwrap();
        drop(second_in);
        let out = second.wait_with_output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.ends_with("200"),
            "the second client was not served: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(origin
            .seen()
            .iter()
            .any(|s| s.uri.contains("second-client")));
        let _ = flood.kill().await;
    });
}
