//! HTTP/1.1 and HTTPS through both models (explicit `--proxy` and transparent), with real curl
//! against real origins on loopback.

mod common;

use std::sync::atomic::Ordering;

use common::*;

fn ca(h: &Harness) -> String {
    h.ca_cert.display().to_string()
}

#[test]
fn explicit_http_allow_and_deny_with_keep_alive_reuse() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test path=/echo/*"]).await;
        let base = format!("http://{ORIGIN}:{}", origin.port());
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            &format!("{base}/echo/one?x=1"),
            &format!("{base}/echo/two"),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200], "{out:?}");
        assert!(out.body.contains("uri: /echo/one?x=1"), "{}", out.body);
        assert!(out.body.contains("uri: /echo/two"), "{}", out.body);
        // Both requests went over one pooled upstream connection.
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);

        let denied = curl(&["--proxy", &h.proxy_url(), &format!("{base}/admin")]).await;
        assert_eq!(denied.status(), 403);
        assert!(denied.body.contains("Request Blocked by Boundary"));
        assert!(denied.body.contains("GET"));
        assert!(denied.body.contains("origin.test"));
        assert!(denied.body.contains("/admin"));
        assert!(
            denied.body.contains("domain=origin.test"),
            "suggestion missing: {}",
            denied.body
        );
        assert_eq!(
            origin.seen().len(),
            2,
            "a denied request reached the origin"
        );

        let recs = h.records();
        assert_eq!(recs.len(), 3);
        let port = origin.port();
        assert_eq!(
            recs[0].url,
            format!("http://origin.test:{port}/echo/one?x=1")
        );
        assert!(recs[0].allowed);
        assert_eq!(
            recs[0].matched_rule.as_deref(),
            Some("domain=origin.test path=/echo/*")
        );
        assert_eq!(recs[2].url, format!("http://origin.test:{port}/admin"));
        assert!(!recs[2].allowed);
        assert_eq!(recs[2].matched_rule, None);
        let seqs: Vec<i32> = recs.iter().map(|r| r.sequence_number).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
    });
}

#[test]
fn explicit_https_via_connect_allow_deny_and_refused_connect() {
    run(async {
        let h = Harness::new(&["domain=origin.test method=GET"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let base = format!("https://{ORIGIN}:{}", origin.port());
        let out = curl(&[
            "--http1.1",
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &ca(&h),
            &format!("{base}/echo?q=1"),
            &format!("{base}/echo2"),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200], "{out:?}");
        assert!(out.body.contains("/echo?q=1"), "{}", out.body);
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);

        let post = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &ca(&h),
            "-d",
            "x=1",
            &format!("{base}/echo"),
        ])
        .await;
        assert_eq!(post.status(), 403, "{post:?}");
        assert!(post.body.contains("Request Blocked by Boundary"));
        assert!(post.body.contains("POST"));

        // No rule could allow other.test: the tunnel is intercepted all the same, and the
        // request in it gets the 403 page and is audited as itself (issue 17 item 1).
        let refused = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &ca(&h),
            &format!("https://{OTHER}:{}/", origin.port()),
        ])
        .await;
        assert_eq!(refused.status(), 403, "{refused:?}");
        assert!(
            refused.body.contains("Request Blocked by Boundary"),
            "{refused:?}"
        );
        let recs = h.records();
        assert_eq!(recs.len(), 4, "{recs:#?}");
        let port = origin.port();
        assert_eq!(recs[0].url, format!("https://origin.test:{port}/echo?q=1"));
        assert_eq!(recs[2].method, "POST");
        assert!(!recs[2].allowed);
        assert_eq!(recs[3].method, "GET");
        assert_eq!(recs[3].url, format!("https://other.test:{port}/"));
        assert!(!recs[3].allowed);
        assert_eq!(origin.seen().len(), 2);
    });
}

/// A CONNECT to a host no rule allows is accepted; a plain HTTP request inside gets the block
/// page with a rule that would allow it.
#[test]
fn a_request_in_a_tunnel_to_an_unruled_host_gets_the_block_page() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
        s.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        buf.clear();
        while !String::from_utf8_lossy(&buf).contains("--allow 'domain=") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains("content-type: text/plain\r\n"), "{text}");
        assert!(text.contains("Request Blocked by Boundary"));
        assert!(
            text.contains("--allow 'method=POST domain=evil.test path=/v1/messages'"),
            "{text}"
        );
        let recs = h.records();
        assert_eq!(recs.len(), 1, "{recs:#?}");
        assert_eq!(
            (recs[0].method.as_str(), recs[0].url.as_str()),
            ("POST", "http://evil.test:443/v1/messages")
        );
    });
}

#[test]
fn transparent_http_and_https_allow_and_deny() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        let plain = Origin::start(None, None).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let t_plain = h.transparent(plain.addr).await;
        let t_tls = h.transparent(tls.addr).await;

        let url = format!("http://{ORIGIN}:{}/echo", plain.port());
        let connect_to = format!("{ORIGIN}:{}:127.0.0.1:{}", plain.port(), t_plain.port());
        let out = curl(&["--connect-to", &connect_to, &url, &url]).await;
        assert_eq!(out.statuses, vec![200, 200], "{out:?}");
        assert_eq!(plain.connections.load(Ordering::SeqCst), 1);
        let denied = curl(&[
            "--connect-to",
            &connect_to,
            &format!("http://{ORIGIN}:{}/nope", plain.port()),
        ])
        .await;
        assert_eq!(denied.status(), 403);
        assert!(denied.body.contains("Request Blocked by Boundary"));

        let url = format!("https://{ORIGIN}:{}/echo", tls.port());
        let connect_to = format!("{ORIGIN}:{}:127.0.0.1:{}", tls.port(), t_tls.port());
        let out = curl(&[
            "--http1.1",
            "--cacert",
            &ca(&h),
            "--connect-to",
            &connect_to,
            &url,
            &url,
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200], "{out:?}");
        assert!(
            out.body.contains("version: HTTP/2.0"),
            "origin offers h2: {}",
            out.body
        );
        assert_eq!(tls.connections.load(Ordering::SeqCst), 1);
        let denied = curl(&[
            "--cacert",
            &ca(&h),
            "--connect-to",
            &connect_to,
            &format!("https://{ORIGIN}:{}/echo/deeper", tls.port()),
        ])
        .await;
        assert_eq!(denied.status(), 403);

        let urls: Vec<String> = h.records().iter().map(|r| r.url.clone()).collect();
        assert_eq!(
            urls,
            vec![
                format!("http://origin.test:{}/echo", plain.port()),
                format!("http://origin.test:{}/echo", plain.port()),
                format!("http://origin.test:{}/nope", plain.port()),
                format!("https://origin.test:{}/echo", tls.port()),
                format!("https://origin.test:{}/echo", tls.port()),
                format!("https://origin.test:{}/echo/deeper", tls.port()),
            ]
        );
    });
}

#[test]
fn transparent_tls_without_sni_uses_the_ip() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(tls.addr).await;
        // curl sends no SNI for an IP literal; the leaf then carries an IP SAN.
        let out = curl(&[
            "--cacert",
            &ca(&h),
            "--connect-to",
            &format!("127.0.0.1:{}:127.0.0.1:{}", tls.port(), t.port()),
            &format!("https://127.0.0.1:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(out.body.contains("Host: 127.0.0.1"), "{}", out.body);
        assert_eq!(
            h.records()[0].url,
            format!("https://127.0.0.1:{}/echo", tls.port())
        );
    });
}

#[test]
fn host_and_sni_mismatch_is_denied() {
    run(async {
        let h = Harness::new(&["domain=origin.test", "domain=other.test"]).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(tls.addr).await;
        // SNI origin.test, Host other.test: both allowed on their own, but they disagree.
        let out = curl(&[
            "--cacert",
            &ca(&h),
            "--connect-to",
            &format!("{ORIGIN}:{}:127.0.0.1:{}", tls.port(), t.port()),
            "-H",
            "Host: other.test",
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(out.body.contains("does not match"), "{}", out.body);
        assert!(tls.seen().is_empty());

        // Explicit CONNECT to origin.test, then plain HTTP inside naming other.test.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let plain = Origin::start(None, None).await;
        let req = format!(
            "CONNECT {ORIGIN}:{p} HTTP/1.1\r\nHost: {ORIGIN}:{p}\r\n\r\n",
            p = plain.port()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s.write_all(b"GET /echo HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert!(resp.contains("Request Blocked by Boundary"));
        assert!(plain.seen().is_empty());

        // CONNECT to origin.test, TLS inside with SNI other.test.
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &ca(&h),
            "--connect-to",
            &format!("{OTHER}:{}:{ORIGIN}:{}", tls.port(), tls.port()),
            &format!("https://{OTHER}:{}/echo", tls.port()),
        ])
        .await;
        // curl CONNECTs to origin.test (connect-to) but sends SNI/Host other.test.
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(
            out.body.contains("does not match the CONNECT target"),
            "{}",
            out.body
        );
        assert!(tls.seen().is_empty());
        let recs = h.records();
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|r| !r.allowed));
    });
}

#[test]
fn dot_segments_are_decided_normalised_and_forwarded_raw() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test path=/public/*"]).await;
        let base = format!("http://{ORIGIN}:{}", origin.port());
        // --path-as-is keeps curl from normalising the path itself.
        let out = curl(&[
            "--path-as-is",
            "--proxy",
            &h.proxy_url(),
            &format!("{base}/public/../admin/secret"),
        ])
        .await;
        assert_eq!(out.status(), 403, "{out:?}");
        let out = curl(&[
            "--path-as-is",
            "--proxy",
            &h.proxy_url(),
            &format!("{base}/public/x/../y%2Fz?a=%20b"),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        // Raw bytes reached the origin unchanged.
        assert!(
            out.body.contains("uri: /public/x/../y%2Fz?a=%20b"),
            "{}",
            out.body
        );
        assert!(origin.seen().iter().all(|s| !s.uri.contains("admin")));
    });
}

#[test]
fn hop_by_hop_and_proxy_authorization_never_reach_the_origin() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        let out = curl(&[
            "--proxy",
            &format!("http://user:secret@{}", h.addr),
            "-H",
            "Connection: keep-alive, X-Drop-Me",
            "-H",
            "X-Drop-Me: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "TE: trailers",
            "-H",
            "X-Keep-Me: 2",
            "-i",
            &format!("http://{ORIGIN}:{}/echo", origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let seen = &origin.seen()[0];
        assert!(seen.headers.get("proxy-authorization").is_none());
        assert!(seen.headers.get("x-drop-me").is_none());
        assert!(seen.headers.get("keep-alive").is_none());
        assert!(seen.headers.get("proxy-connection").is_none());
        assert_eq!(seen.headers["x-keep-me"], "2");
        assert_eq!(seen.headers["te"], "trailers");
        // And back: the origin's hop-by-hop headers do not reach the client.
        let head = out
            .body
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.contains("x-origin: yes"), "{head}");
        assert!(!head.contains("x-origin-hop"), "{head}");
        assert!(!head.contains("keep-alive: timeout=30"), "{head}");

        // Same through a CONNECT tunnel with TLS.
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let out = curl(&[
            "--proxy",
            &format!("http://user:secret@{}", h.addr),
            "--proxy-anyauth",
            "--cacert",
            &h.ca_cert.display().to_string(),
            "-H",
            "Proxy-Authorization: Basic c2VjcmV0",
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert!(!out
            .body
            .to_ascii_lowercase()
            .contains("proxy-authorization"));
        assert!(tls.seen()[0].headers.get("proxy-authorization").is_none());
    });
}

#[test]
fn uploads_keep_their_body_for_every_method() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let out = curl(&[
                "--proxy",
                &h.proxy_url(),
                "-X",
                method,
                "--data-binary",
                "hello body",
                &format!("http://{ORIGIN}:{}/echo", origin.port()),
            ])
            .await;
            assert_eq!(out.status(), 200);
            assert!(out.body.contains(&format!("method: {method}")));
            assert!(
                out.body.contains("body: hello body"),
                "{method}: {}",
                out.body
            );
        }
        // HTTP/2 from the client, to an HTTP/2 origin and to an HTTP/1.1-only one.
        let h2 = Origin::start(Some(h.origin_tls()), None).await;
        let h1 = Origin::start(Some(h.pki.server_config(&[ORIGIN], &[b"http/1.1"])), None).await;
        for o in [&h2, &h1] {
            for method in ["POST", "PUT"] {
                let out = curl(&[
                    "--http2",
                    "--proxy",
                    &h.proxy_url(),
                    "--cacert",
                    &h.ca_cert.display().to_string(),
                    "-X",
                    method,
                    "--data-binary",
                    "h2 body",
                    &format!("https://{ORIGIN}:{}/echo", o.port()),
                ])
                .await;
                assert_eq!(out.status(), 200, "{out:?}");
                assert!(out.body.contains("body: h2 body"), "{}", out.body);
            }
        }
        assert_eq!(h1.seen()[0].version, http::Version::HTTP_11);
        assert_eq!(h2.seen()[0].version, http::Version::HTTP_2);
    });
}

#[test]
fn requests_to_the_proxy_itself_are_refused() {
    run(async {
        let h = Harness::new(&["domain=*"]).await;
        let own = format!("http://{}/echo", h.addr);
        let out = curl(&["--proxy", &h.proxy_url(), &own]).await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(out.body.contains("proxy itself"), "{}", out.body);
        // Origin-form straight at the proxy names the proxy too.
        let out = curl(&[&own]).await;
        assert_eq!(out.status(), 403, "{out:?}");
        // A CONNECT to the proxy's own address.
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--proxytunnel",
            &format!("http://127.0.0.1:{}/", h.addr.port()),
        ])
        .await;
        assert_ne!(out.status(), 200, "{out:?}");
        assert!(out.stderr.contains("403"), "{out:?}");
        // localhost via DNS-free name, and a transparent connection whose original destination
        // is the proxy (treated as explicit, then refused as a loop).
        let t = h.transparent(h.addr).await;
        let out = curl(&[&format!("http://localhost:{}/x", t.port())]).await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(h.records().iter().all(|r| !r.allowed));
    });
}

#[test]
fn malformed_input_gets_an_answer_not_a_hang() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let h = Harness::new(&["domain=origin.test"]).await;
        for junk in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"CONNECT nohost HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET ftp://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello",
        ] {
            let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
            s.write_all(junk).await.unwrap();
            let mut out = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read until a response head arrived or the proxy closed the connection.
            while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&out);
            if junk.starts_with(b"CONNECT") {
                // Accepted (no rule allows the host, but requests inside would be decided).
                assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
            } else if junk[0] != 0x16 {
                assert!(
                    text.starts_with("HTTP/1.1 4"),
                    "{:?} -> {text:?}",
                    String::from_utf8_lossy(junk)
                );
            }
        }
        // Only the CONNECT named something to decide: its tunnel carried nothing, so it is
        // audited once as refused when the tunnel ends (the connection closed above).
        let mut recs = h.records();
        for _ in 0..100 {
            if !recs.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            recs = h.records();
        }
        assert_eq!(recs.len(), 1, "{recs:#?}");
        assert_eq!(
            (recs[0].method.as_str(), recs[0].url.as_str()),
            ("CONNECT", "https://nohost:443")
        );
        assert!(!recs[0].allowed);
    });
}

#[test]
fn idle_client_connections_are_closed() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let origin = Origin::start(None, None).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.idle_timeout = std::time::Duration::from_millis(300)
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let req = format!(
            "GET http://{ORIGIN}:{}/echo HTTP/1.1\r\nHost: {ORIGIN}:{}\r\n\r\n",
            origin.port(),
            origin.port()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Nothing more is sent: the proxy closes the connection (read returns EOF).
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut rest))
                .await;
        assert!(closed.is_ok(), "idle connection was not closed");
    });
}

#[test]
fn idle_timeout_does_not_cut_an_active_stream() {
    run(async {
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.idle_timeout = std::time::Duration::from_millis(100)
        })
        .await;
        let origin = Origin::start(None, None).await;
        // /sse runs for about a second, far past the idle timeout.
        let out = curl(&[
            "-N",
            "--proxy",
            &h.proxy_url(),
            &format!("http://{ORIGIN}:{}/sse", origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert!(out.body.contains("data: event 4"), "{}", out.body);
    });
}

#[test]
fn status_codes_and_bodies_pass_through() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        for code in ["201", "404", "500", "204"] {
            let out = curl(&[
                "--proxy",
                &h.proxy_url(),
                &format!("http://{ORIGIN}:{}/status?code={code}", origin.port()),
            ])
            .await;
            assert_eq!(out.status().to_string(), code);
        }
    });
}

#[test]
fn ipv6_literal_targets_keep_their_brackets() {
    run(async {
        // The origins are on ::1, which a rule cannot name: allow loopback upstreams.
        let h = Harness::with(&["domain=*"], |c| c.upstream_allow_local = true).await;
        let origin = Origin::start_at("[::1]:0".parse().unwrap(), None, None).await;
        let tls = Origin::start_at(
            "[::1]:0".parse().unwrap(),
            Some(h.pki.server_config(&["::1"], &[b"http/1.1"])),
            None,
        )
        .await;
        let out = curl(&[
            "-g",
            "--proxy",
            &h.proxy_url(),
            &format!("http://[::1]:{}/echo?v=6", origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let out = curl(&[
            "-g",
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("https://[::1]:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let urls: Vec<String> = h.records().iter().map(|r| r.url.clone()).collect();
        assert_eq!(
            urls,
            vec![
                format!("http://[::1]:{}/echo?v=6", origin.port()),
                format!("https://[::1]:{}/echo", tls.port()),
            ]
        );
    });
}

#[test]
fn many_and_large_headers_pass_both_ways() {
    // 90 request headers with an 8 KB cookie; 250 response headers (hyper's default is 100).
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let plain = Origin::start(None, None).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("headers");
        let mut text = String::new();
        for i in 0..90 {
            text.push_str(&format!("X-Req-{i}: {}\n", "r".repeat(40)));
        }
        text.push_str(&format!("Cookie: big={}\n", "c".repeat(8000)));
        std::fs::write(&headers, text).unwrap();
        let hdr_arg = format!("@{}", headers.display());
        for (url, http2) in [
            (format!("http://{ORIGIN}:{}", plain.port()), false),
            (format!("https://{ORIGIN}:{}", tls.port()), true),
        ] {
            let mut args = vec![
                "--proxy".to_string(),
                h.proxy_url(),
                "--cacert".into(),
                h.ca_cert.display().to_string(),
                "-H".into(),
                hdr_arg.clone(),
                format!("{url}/echo"),
                "-i".into(),
                format!("{url}/many-headers"),
            ];
            if http2 {
                args.insert(0, "--http2".into());
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = curl(&refs).await;
            assert_eq!(out.statuses, vec![200, 200], "{url}: {}", out.stderr);
            assert!(out.body.contains("header: x-req-89: "), "{url}");
            assert!(out.body.contains("x-h-249: "), "{url}");
        }
    });
}

#[test]
fn a_client_that_never_finishes_its_headers_is_closed() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.idle_timeout = std::time::Duration::from_millis(300)
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.te")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut rest))
                .await;
        assert!(
            closed.is_ok(),
            "a half-sent request head kept the connection open"
        );
        assert!(h.records().is_empty());
    });
}
