//! Every way the upstream can fail gets the right status and a body that says why, through
//! both the explicit HTTP path and a CONNECT tunnel; never a hang or an empty reply.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

async fn through_proxy(h: &Harness, url: &str) -> Curl {
    curl(&[
        "--proxy",
        &h.proxy_url(),
        "--cacert",
        &h.ca_cert.display().to_string(),
        url,
    ])
    .await
}

#[test]
fn unresolvable_name_is_502() {
    run(async {
        let h = Harness::new(&["domain=*"]).await;
        // Not in --resolve; the test namespace has no route to any DNS server.
        for url in ["http://nowhere.test/x", "https://nowhere.test/x"] {
            let out = through_proxy(&h, url).await;
            assert_eq!(out.status(), 502, "{url}: {out:?}");
            assert!(
                out.body.contains("could not resolve host nowhere.test"),
                "{url}: {}",
                out.body
            );
        }
        assert_eq!(
            h.records().len(),
            2,
            "both requests were decided and audited"
        );
    });
}

#[test]
fn refused_connection_is_502() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for url in [
            format!("http://{ORIGIN}:{port}/"),
            format!("https://{ORIGIN}:{port}/"),
        ] {
            let out = through_proxy(&h, &url).await;
            assert_eq!(out.status(), 502, "{url}: {out:?}");
            assert!(out.body.contains("could not connect"), "{}", out.body);
            assert!(out.body.contains("refused"), "{}", out.body);
        }
    });
}

#[test]
fn connect_timeout_is_504() {
    run(async {
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.connect_timeout = Duration::from_millis(500)
        })
        .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Drop SYNs to that port inside the test namespace: the connect never completes.
        let st = std::process::Command::new("iptables")
            .args([
                "-I",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "--syn",
                "-j",
                "DROP",
            ])
            .status()
            .expect("this test needs iptables");
        assert!(st.success(), "iptables failed in the test namespace");
        let out = through_proxy(&h, &format!("http://{ORIGIN}:{port}/")).await;
        assert_eq!(out.status(), 504, "{out:?}");
        assert!(out.body.contains("timed out connecting"), "{}", out.body);
        let out = through_proxy(&h, &format!("https://{ORIGIN}:{port}/")).await;
        assert_eq!(out.status(), 504, "{out:?}");
        drop(listener);
    });
}

#[test]
fn untrusted_origin_certificate_is_502() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let stranger = Pki::new();
        let origin = Origin::start(
            Some(stranger.server_config(&[ORIGIN], &[b"http/1.1"])),
            None,
        )
        .await;
        let out = through_proxy(&h, &format!("https://{ORIGIN}:{}/echo", origin.port())).await;
        assert_eq!(out.status(), 502, "{out:?}");
        assert!(
            out.body.contains("TLS handshake with origin.test failed"),
            "{}",
            out.body
        );
        assert!(out.body.contains("certificate"), "{}", out.body);
        assert!(origin.seen().is_empty());

        // A certificate for another name fails the same way.
        let wrong = Origin::start(Some(h.pki.server_config(&["elsewhere.test"], &[])), None).await;
        let out = through_proxy(&h, &format!("https://{ORIGIN}:{}/echo", wrong.port())).await;
        assert_eq!(out.status(), 502, "{out:?}");
        assert!(out.body.contains("certificate"), "{}", out.body);
    });
}

#[test]
fn silent_tls_origin_is_504() {
    run(async {
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.handshake_timeout = Duration::from_millis(500)
        })
        .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // accept, never answer
            }
        });
        let out = through_proxy(&h, &format!("https://{ORIGIN}:{port}/")).await;
        assert_eq!(out.status(), 504, "{out:?}");
        assert!(out.body.contains("timed out"), "{}", out.body);
    });
}

async fn misbehaving_origin(reset: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            if reset {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            drop(s);
        }
    });
    port
}

#[test]
fn reset_and_empty_reply_are_502() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        for reset in [true, false] {
            let port = misbehaving_origin(reset).await;
            let out = through_proxy(&h, &format!("http://{ORIGIN}:{port}/x")).await;
            assert_eq!(out.status(), 502, "reset={reset}: {out:?}");
            assert!(
                out.body
                    .contains("Boundary lost the connection to origin.test"),
                "{}",
                out.body
            );
        }
    });
}

#[test]
fn upload_over_http2_to_a_failing_origin_gets_the_502() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body");
        std::fs::write(&file, "y".repeat(200_000)).unwrap();
        let body = format!("@{}", file.display());
        for _ in 0..5 {
            let out = curl(&[
                "--http2",
                "--proxy",
                &h.proxy_url(),
                "--cacert",
                &h.ca_cert.display().to_string(),
                "--data-binary",
                &body,
                &format!("https://{ORIGIN}:{port}/upload"),
            ])
            .await;
            assert_eq!(out.status(), 502, "{out:?}");
            assert!(out.body.contains("could not connect"), "{}", out.body);
        }
    });
}

#[test]
fn a_trust_store_that_failed_to_load_fails_https_with_the_reason_and_http_still_works() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("not-a-ca.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        // Before, the proxy refused to start at all; now it starts and says why at the first
        // request that needs the anchors.
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_ca_file = Some(bad.clone())
        })
        .await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let url = format!("https://{ORIGIN}:{}/echo", origin.port());
        for _ in 0..2 {
            let out = through_proxy(&h, &url).await;
            assert_eq!(out.status(), 502, "{out:?}");
            assert!(
                out.body.contains(&format!(
                    "cannot load trust anchors: upstream CA file {} holds no certificate",
                    bad.display()
                )),
                "{}",
                out.body
            );
        }
        assert!(origin.seen().is_empty(), "nothing reached the origin");
        let plain = Origin::start(None, None).await;
        let out = through_proxy(&h, &format!("http://{ORIGIN}:{}/echo", plain.port())).await;
        assert_eq!(out.status(), 200, "plain HTTP needs no anchors: {out:?}");
        assert_eq!(
            h.records().len(),
            3,
            "every request was decided and audited"
        );
    });
}

#[test]
fn the_proxy_serves_while_the_trust_store_loads_and_https_waits_for_it() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        // Reading a FIFO blocks until something writes to it: the load cannot finish before
        // the test says so.
        let fifo = dir.path().join("upstream-ca.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_ca_file = Some(fifo.clone())
        })
        .await;
        let plain = Origin::start(None, None).await;
        let out = through_proxy(&h, &format!("http://{ORIGIN}:{}/echo", plain.port())).await;
        assert_eq!(out.status(), 200, "served while the anchors load: {out:?}");

        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let url = format!("https://{ORIGIN}:{}/echo", origin.port());
        let out = through_proxy(&h, &url).await;
        assert_eq!(out.status(), 504, "{out:?}");
        assert!(
            out.body.contains("were still loading"),
            "says why: {}",
            out.body
        );
        assert!(origin.seen().is_empty());

        let ca = std::fs::read(&h.pki.ca_path).unwrap();
        tokio::task::spawn_blocking(move || std::fs::write(&fifo, ca))
            .await
            .unwrap()
            .unwrap();
        let out = through_proxy(&h, &url).await;
        assert_eq!(out.status(), 200, "the anchors arrived: {out:?}");
        assert!(out.body.contains("method: GET"), "{}", out.body);
    });
}
