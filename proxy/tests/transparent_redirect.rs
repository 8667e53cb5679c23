//! Real transparent mode: netfilter REDIRECT in the test's own network namespace sends curl's
//! connection to the proxy's listener, and `serve` recovers the original destination with
//! SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6). Also ClientHellos that are large
//! and split across many TLS records.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use tokio::net::TcpListener;

fn sh(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("this test needs {cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed");
}

#[test]
fn netfilter_redirect_v4_and_v6_uses_the_original_destination() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        // The proxy's own listener for redirected traffic, dual-stack.
        let listener = TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(h.proxy.clone().serve(listener));
        // The origin listens on port 80 of 127.0.0.1; the client aims at 127.0.0.2:80 and
        // [::1]:80, which netfilter redirects to the proxy.
        let origin_listener = std::net::TcpListener::bind("127.0.0.1:80");
        assert!(
            origin_listener.is_ok(),
            "cannot bind port 80 in the test namespace (needs root)"
        );
        drop(origin_listener);
        let origin = Origin::start_at("127.0.0.1:80".parse().unwrap(), None, None).await;
        let p = port.to_string();
        sh(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "127.0.0.2",
                "--dport",
                "80",
                "-j",
                "REDIRECT",
                "--to-ports",
                &p,
            ],
        );
        sh(
            "ip6tables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "::1",
                "--dport",
                "80",
                "-j",
                "REDIRECT",
                "--to-ports",
                &p,
            ],
        );
        let out = curl(&[
            "--resolve",
            "origin.test:80:127.0.0.2",
            "http://origin.test/echo",
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let out = curl(&[
            "--resolve",
            "origin.test:80:[::1]",
            "http://origin.test/echo",
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let out = curl(&[
            "--resolve",
            "origin.test:80:127.0.0.2",
            "http://origin.test/other",
        ])
        .await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert_eq!(origin.seen().len(), 2);
        let urls: Vec<String> = h.records().iter().map(|r| r.url.clone()).collect();
        assert_eq!(
            urls,
            vec![
                "http://origin.test/echo",
                "http://origin.test/echo",
                "http://origin.test/other"
            ]
        );
        // A connection made straight to the listener (not redirected) is explicit mode.
        let out = curl(&[
            "--proxy",
            &format!("http://127.0.0.1:{port}"),
            "http://origin.test/echo",
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
    });
}

/// Sends a ClientHello by hand: `record_size` bytes of handshake data per TLS record, then
/// finishes the handshake and one HTTP request with rustls over a blocking socket.
fn split_hello_request(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    record_size: usize,
) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let name = rustls_pki_types::ServerName::try_from(ORIGIN).unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    // Take the handshake payload out of rustls' records and re-frame it.
    let mut payload = Vec::new();
    let mut rest = &hello[..];
    while rest.len() >= 5 {
        assert_eq!(rest[0], 0x16);
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        payload.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    let mut framed = Vec::new();
    for chunk in payload.chunks(record_size) {
        framed.extend_from_slice(&[0x16, 0x03, 0x01]);
        framed.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        framed.extend_from_slice(chunk);
    }
    tcp.write_all(&framed).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn large_and_split_client_hellos_are_parsed() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(origin.addr).await;
        // Small records: a normal hello cut into 40-byte records.
        let small = h.client_tls(&[b"http/1.1"]);
        // Huge hello: ~25 KB of ALPN names forces more than one maximum-size record.
        let names: Vec<Vec<u8>> = (0..120)
            .map(|i| format!("x-{i:03}-{}", "p".repeat(200)).into_bytes())
            .chain([b"http/1.1".to_vec()])
            .collect();
        let mut big = (*h.client_tls(&[])).clone();
        big.alpn_protocols = names;
        let big = Arc::new(big);
        let resp = tokio::task::spawn_blocking(move || {
            (
                split_hello_request(t, small, 40),
                split_hello_request(t, big, 16_384),
            )
        })
        .await
        .unwrap();
        for r in [&resp.0, &resp.1] {
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            assert!(r.contains("/echo\n"), "{r}");
        }
        assert_eq!(h.records().len(), 2);
    });
}
