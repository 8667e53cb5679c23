//! Sequence numbers under concurrency, correlation headers, and the corporate upstream proxy.

mod common;

use std::collections::BTreeSet;

use boundary_proxy::rules::Policy;
use boundary_proxy::Correlation;
use common::*;

#[test]
fn sequence_numbers_are_dense_and_unique_under_100_concurrent_requests() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        let mut args: Vec<String> = vec![
            "--parallel".into(),
            "--parallel-immediate".into(),
            "--parallel-max".into(),
            "100".into(),
            "--proxy".into(),
            h.proxy_url(),
        ];
        for i in 0..100 {
            // Half allowed, half denied: both kinds take numbers.
            let path = if i % 2 == 0 { "echo" } else { "denied" };
            args.push(format!("http://{ORIGIN}:{}/{path}?i={i}", origin.port()));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&refs).await;
        assert_eq!(out.statuses.len(), 100, "{}", out.stderr);
        assert_eq!(out.statuses.iter().filter(|s| **s == 200).count(), 50);
        assert_eq!(out.statuses.iter().filter(|s| **s == 403).count(), 50);
        let recs = h.records();
        assert_eq!(recs.len(), 100);
        let seqs: BTreeSet<i32> = recs.iter().map(|r| r.sequence_number).collect();
        assert_eq!(seqs, (0..100).collect::<BTreeSet<i32>>());
        let urls: BTreeSet<String> = recs.iter().map(|r| r.url.clone()).collect();
        assert_eq!(urls.len(), 100, "each request audited exactly once");
        for r in &recs {
            assert_eq!(r.allowed, r.url.contains("/echo?"), "{r:?}");
        }
    });
}

#[test]
fn correlation_headers_only_from_boundary_and_only_on_allowed_matching_requests() {
    run(async {
        let origin = Origin::start(None, None).await;
        let session = uuid::Uuid::new_v4();
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.correlation = Some(Correlation {
                session_id: session,
                targets: Policy::parse(&["domain=origin.test path=/api/v2/aibridge/*"]).unwrap(),
            })
        })
        .await;
        let base = format!("http://{ORIGIN}:{}", origin.port());
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "-H",
            "X-Coder-Agent-Firewall-Session-Id: 11111111-2222-3333-4444-555555555555",
            "-H",
            "X-Coder-Agent-Firewall-Sequence-Number: 7",
            &format!("{base}/other"),
            &format!("{base}/api/v2/aibridge/chat"),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200]);
        let seen = origin.seen();
        // Not a target: the jailed client's own pair is removed (coderd would store a pair
        // that names any session the client likes), and none is added.
        for name in [
            "x-coder-agent-firewall-session-id",
            "x-coder-agent-firewall-sequence-number",
        ] {
            assert!(seen[0].headers.get(name).is_none(), "{name} passed");
        }
        // A target: overwritten with the real session and this request's sequence number.
        assert_eq!(
            seen[1].headers["x-coder-agent-firewall-session-id"],
            session.to_string().as_str()
        );
        assert_eq!(
            seen[1].headers["x-coder-agent-firewall-sequence-number"],
            "1"
        );
        assert_eq!(h.records()[1].sequence_number, 1);
    });
}

#[test]
fn upstream_proxy_carries_https_and_http() {
    run(async {
        // The corporate proxy is another boundary proxy; ours must trust its CA.
        let corp = Harness::new(&["domain=origin.test"]).await;
        let corp_ca = corp.ca_cert.clone();
        let corp_url = format!("http://user:pw@{}", corp.addr);
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_proxy = Some(corp_url);
            c.upstream_ca_file = Some(corp_ca);
            c.resolve.clear();
        })
        .await;
        let tls = Origin::start(Some(corp.origin_tls()), None).await;
        let plain = Origin::start(None, None).await;
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
            &format!("http://{ORIGIN}:{}/echo", plain.port()),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200], "{out:?}");
        assert_eq!(h.records().len(), 2);
        // The corporate proxy saw (and decided) both requests through its CONNECT tunnels.
        let corp_urls: Vec<String> = corp.records().iter().map(|r| r.url.clone()).collect();
        assert_eq!(
            corp_urls,
            vec![
                format!("https://origin.test:{}/echo", tls.port()),
                format!("http://origin.test:{}/echo", plain.port()),
            ]
        );
        assert!(tls.seen()[0].headers.get("proxy-authorization").is_none());

        // A corporate proxy that refuses the CONNECT gives a 502 that says so.
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("http://{ORIGIN}.:{}/x", plain.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "trailing dot is the same host: {out:?}");
        // (A proxy that answers 403 to every CONNECT; boundary itself now accepts them.)
        let refuser = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused_url = format!("http://{}", refuser.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = refuser.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let h2 = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_proxy = Some(refused_url)
        })
        .await;
        let out = curl(&[
            "--proxy",
            &h2.proxy_url(),
            &format!("http://{ORIGIN}:{}/x", plain.port()),
        ])
        .await;
        assert_eq!(out.status(), 502, "{out:?}");
        assert!(out.body.contains("answered 403 to CONNECT"), "{}", out.body);
    });
}

#[test]
fn upstream_proxy_over_tls() {
    run(async {
        // https:// corporate proxy: TLS to the proxy itself, then CONNECT inside that TLS.
        let corp = Harness::new(&["domain=origin.test"]).await;
        let corp_ca = corp.ca_cert.clone();
        let corp_url = format!("https://corp.test:{}", corp.addr.port());
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_proxy = Some(corp_url);
            c.upstream_ca_file = Some(corp_ca);
            c.resolve.insert(
                "corp.test".into(),
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            );
        })
        .await;
        let tls = Origin::start(Some(corp.origin_tls()), None).await;
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert_eq!(corp.records().len(), 1);
        assert_eq!(
            corp.records()[0].url,
            format!("https://origin.test:{}/echo", tls.port())
        );
    });
}

/// A minimal corporate proxy: records each CONNECT head, answers 200 and relays bytes.
async fn relay_proxy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = s.read_u8().await else { return };
                    head.push(b);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                seen.lock().unwrap().push(text.clone());
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                // Every name resolves to loopback here.
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (addr, heads)
}

#[test]
fn upstream_proxy_credentials_are_sent_on_connect() {
    run(async {
        let (corp, heads) = relay_proxy().await;
        let corp_url = format!("http://alice:s%40cret@{corp}");
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_proxy = Some(corp_url);
        })
        .await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with(&format!("CONNECT origin.test:{} HTTP/1.1\r\n", tls.port())),
            "{}",
            heads[0]
        );
        // base64("alice:s@cret")
        assert!(
            heads[0].contains("Proxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
            "{}",
            heads[0]
        );
        // The origin itself never sees the corporate credentials.
        assert!(tls.seen()[0].headers.get("proxy-authorization").is_none());
    });
}

#[test]
fn records_continue_the_callers_trace_and_carry_the_decision_time() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        let before = chrono::Utc::now();
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            &format!("http://{ORIGIN}:{}/echo", origin.port()),
            &format!("http://{ORIGIN}:{}/echo", origin.port()),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 200]);
        let recs = h.records();
        assert_eq!(
            recs[0].trace.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(recs[0].trace.parent_span_id.is_some());
        assert!(recs[0].time >= before && recs[0].time <= chrono::Utc::now());
        // The traceparent header itself is passed on to the origin unchanged.
        assert_eq!(
            origin.seen()[0].headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    });
}

/// The requester lookup (the jail's, in boundary) is asked once per client connection with the
/// client's address and the address it connected to, and its answer is in every record of that
/// connection: plain requests, and requests inside a CONNECT tunnel, allowed or denied.
#[test]
fn every_record_carries_its_connections_requester() {
    use std::sync::{Arc, Mutex};
    run(async {
        let asked: Arc<Mutex<Vec<(std::net::SocketAddr, std::net::SocketAddr)>>> = Arc::default();
        let log = asked.clone();
        let h = Harness::with(&["domain=origin.test path=/echo"], move |c| {
            c.requesters = Some(Arc::new(move |peer, dest| {
                log.lock().unwrap().push((peer, dest));
                boundary_audit::Requester {
                    pid: Some(u32::from(peer.port())),
                    name: format!("client-{}", peer.port()),
                    exe: "/usr/bin/curl".into(),
                    args: "curl".into(),
                    parent: "sh".into(),
                }
            }))
        })
        .await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let plain = Origin::start(None, None).await;
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            "--cacert",
            &h.ca_cert.display().to_string(),
            &format!("https://{ORIGIN}:{}/echo", tls.port()),
            &format!("https://{ORIGIN}:{}/denied", tls.port()),
            &format!("http://{ORIGIN}:{}/echo", plain.port()),
        ])
        .await;
        assert_eq!(out.statuses, vec![200, 403, 200], "{out:?}");
        let asked = asked.lock().unwrap().clone();
        assert_eq!(
            asked.len(),
            2,
            "one lookup per client connection: {asked:?}"
        );
        for (_, dest) in &asked {
            assert_eq!(*dest, h.addr, "an explicit client connected to the proxy");
        }
        let recs = h.records();
        assert_eq!(recs.len(), 3);
        let names: BTreeSet<String> = asked
            .iter()
            .map(|(peer, _)| format!("client-{}", peer.port()))
            .collect();
        for r in &recs {
            let who = r.requester.as_deref().unwrap_or_else(|| panic!("{r:?}"));
            assert!(names.contains(&who.name), "{r:?} {asked:?}");
        }
        // The two tunnel requests came on one connection: the same requester.
        assert_eq!(recs[0].requester, recs[1].requester);
    });
}
