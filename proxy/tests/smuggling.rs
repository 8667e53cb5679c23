//! Request smuggling (issue 12 item 1): no byte the jailed process sends may reach an origin as
//! a request the proxy did not decide. Each desync class we know is sent through the real proxy
//! to a lenient recording origin (it ignores GET bodies and tolerates bare LF, as many origins
//! do), each hiding a `POST /forbidden/<case>` the rules deny. The origin must never execute
//! one, and everything it executed must have been audited as allowed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::lenient::{exchange, forbidden, Lenient};
use common::*;

const RULE: &str = "domain=origin.test path=/ok/*";

fn smuggled(case: &str) -> String {
    format!("POST /forbidden/{case} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\r\n")
}

/// Every HTTP/1.1 desync class, as (case, bytes sent on one client connection).
fn h1_cases() -> Vec<(String, String)> {
    let mut cases = Vec::new();
    let mut add = |case: &str, f: &dyn Fn(&str, &str) -> String| {
        let s = smuggled(case);
        cases.push((case.to_string(), f(case, &s)));
    };
    // CL.0: a body on a method whose body the origin ignores.
    for m in ["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"] {
        add(&format!("cl0_{m}"), &|c, s| {
            format!(
                "{m} /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            )
        });
    }
    // CL.0 on any method: the origin answers `/early` at once without reading the body, and
    // on a kept-alive connection would read the body as its next request.
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        add(&format!("cl0_early_{m}"), &|c, s| {
            format!(
                "{m} /ok/early/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            )
        });
    }
    add("cl0_get_chunked", &|c, s| {
        format!("GET /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len())
    });
    // CL.TE and TE.CL: both framings on one request.
    add("cl_te", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}")
    });
    add("te_cl", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len())
    });
    // Content-Length values an origin may read leniently (a sign, a list).
    add("cl_plus", &|c, s| {
        format!(
            "POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: +{}\r\n\r\n{s}",
            s.len()
        )
    });
    add("cl_list", &|c, s| {
        format!(
            "POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0, {}\r\n\r\n{s}",
            s.len()
        )
    });
    // HTTP/1.0 has no chunked coding: a Transfer-Encoding there is read two ways.
    add("http10_te", &|c, s| {
        format!("POST /ok/{c} HTTP/1.0\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    add("cl_cl", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    // Transfer-Encoding obfuscation, each with a Content-Length framing the smuggled request.
    for (i, te) in [
        "xchunked",
        "chunked, identity",
        "identity",
        "chunked\t",
        "CHUNKED",
        "chunked;x=1",
        "\"chunked\"",
    ]
    .iter()
    .enumerate()
    {
        add(&format!("te_obfuscated_{i}"), &|c, s| {
            format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: {te}\r\nContent-Length: {}\r\n\r\n{s}", s.len())
        });
    }
    add("te_space_before_colon", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding : chunked\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    add("te_twice", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    // obs-fold.
    add("obs_fold_te", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    add("obs_fold_cl", &|c, s| {
        format!(
            "GET /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nX-A: a\r\n Content-Length: {}\r\n\r\n{s}",
            s.len()
        )
    });
    // Bare LF line ends.
    add("bare_lf", &|c, s| {
        format!(
            "GET /ok/{c} HTTP/1.1\nHost: origin.test\nContent-Length: {}\n\n{s}",
            s.len()
        )
    });
    add("bare_lf_chunked", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\nHost: origin.test\nTransfer-Encoding: chunked\n\n{:x}\n{s}\n0\n\n", s.len())
    });
    // Chunk extensions, trailers and invalid chunk sizes.
    add("chunk_ext", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x};a=\"b\"\r\n{s}\r\n0;c\r\n\r\n", s.len())
    });
    add("chunk_ext_bare_lf", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n0\r\n\r\n{s}")
    });
    add("trailers", &|c, s| {
        format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n0\r\nX-T: 1\r\nContent-Length: {}\r\n\r\n{s}", s.len())
    });
    for (i, size) in ["+5", "0x5", "-1", "ffffffffffffffffffff", "5 5"]
        .iter()
        .enumerate()
    {
        add(&format!("chunk_size_{i}"), &|c, s| {
            format!("POST /ok/{c} HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n{s}\r\n0\r\n\r\n")
        });
    }
    cases
}

/// The same GET-with-body class over HTTP/2 (prior knowledge): `content-length` with DATA the
/// origin leg would turn into a body an HTTP/1.1 origin ignores, and a `content-length` the
/// DATA does not match.
async fn h2_case(
    addr: std::net::SocketAddr,
    method: &str,
    case: &str,
    declared: Option<usize>,
) -> Option<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    let mut client = client.ready().await.ok()?;
    let body = smuggled(case);
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://origin.test/ok/{case}"));
    if let Some(n) = declared {
        req = req.header("content-length", n);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).ok()?;
    let _ = send.send_data(Bytes::from(body), true);
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

#[test]
fn no_smuggled_request_reaches_the_origin() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[RULE]).await;
        let t = h.transparent(origin.addr).await;
        let cases = h1_cases();
        let mut answers: HashMap<String, String> = HashMap::new();
        let runs = cases.iter().map(|(case, bytes)| async move {
            (case.clone(), exchange(t, bytes.as_bytes()).await)
        });
        for (case, answer) in futures_util::future::join_all(runs).await {
            answers.insert(case, answer);
        }
        let s = smuggled("h2_get").len();
        let h2 = [
            ("GET", "h2_get", Some(s)),
            ("OPTIONS", "h2_options", Some(s)),
            ("GET", "h2_get_no_length", None),
            ("POST", "h2_post_short_length", Some(0)),
            ("GET", "h2_get_short_length", Some(1)),
            ("POST", "h2_post_long_length", Some(s + 200)),
        ];
        for (method, case, declared) in h2 {
            let status = h2_case(t, method, case, declared).await;
            answers.insert(case.to_string(), format!("h2 status {status:?}"));
        }
        // Positive control: a plain allowed request is executed and audited.
        let control = exchange(t, b"GET /ok/control HTTP/1.1\r\nHost: origin.test\r\n\r\n").await;
        assert!(control.starts_with("HTTP/1.1 200"), "control: {control}");

        let executed = origin.settled().await;
        assert!(
            executed.contains(&"GET /ok/control".to_string()),
            "{executed:?}"
        );
        let leaked = forbidden(&executed);
        assert!(
            leaked.is_empty(),
            "the origin executed requests the proxy never decided: {leaked:?}\nanswers: {answers:#?}"
        );
        // Everything the origin ran was audited as allowed, at most as often as audited.
        let mut allowed: HashMap<String, usize> = HashMap::new();
        for r in h.records().iter().filter(|r| r.allowed) {
            let path = r.url.splitn(4, '/').nth(3).unwrap_or("");
            *allowed.entry(format!("{} /{path}", r.method)).or_default() += 1;
        }
        for e in &executed {
            let left = allowed.get_mut(e);
            assert!(
                left.as_ref().is_some_and(|n| **n > 0),
                "the origin executed {e:?} without an allowed audit record\nexecuted: {executed:?}"
            );
            *left.unwrap() -= 1;
        }
    });
}

#[test]
fn a_body_on_get_is_refused_with_400_and_audited() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[RULE]).await;
        let t = h.transparent(origin.addr).await;
        let answer = exchange(
            t,
            b"GET /ok/body HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("GET requests must not carry a body"),
            "{answer}"
        );
        let records = h.records();
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(!records[0].allowed);
        assert_eq!(
            records[0].url,
            format!("http://origin.test:{}/ok/body", origin.port())
        );
        assert!(origin.settled().await.is_empty());
    });
}

/// Both framings on one request (CL.TE, TE.CL): hyper's parser keeps only Transfer-Encoding
/// (it drops Content-Length from the header map, so the proxy cannot see that both were sent)
/// and closes the client connection after the answer. So the origin gets one request framed
/// chunked by the proxy, and the bytes after the chunked body are never read as a request,
/// even an allowed one.
#[test]
fn a_request_with_both_framings_is_read_chunked_and_ends_the_connection() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[RULE]).await;
        let t = h.transparent(origin.addr).await;
        let after = "GET /ok/after HTTP/1.1\r\nHost: origin.test\r\n\r\n";
        let heads = [
            "Content-Length: 40\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 40",
        ];
        for (i, head) in heads.iter().enumerate() {
            let bytes = format!(
                "POST /ok/both{i} HTTP/1.1\r\nHost: origin.test\r\n{head}\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n{after}"
            );
            let answer = exchange(t, bytes.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{head}: {answer}");
            assert_eq!(
                answer.matches("HTTP/1.1 ").count(),
                1,
                "{head}: one answer, then the connection closes: {answer}"
            );
        }
        let executed = origin.settled().await;
        assert_eq!(executed, ["POST /ok/both0", "POST /ok/both1"]);
        assert_eq!(h.records().len(), 2, "{:?}", h.records());
    });
}

/// An HTTP/2 request whose `host` header names another host than its `:authority`.
async fn h2_host_disagrees(addr: std::net::SocketAddr) -> Option<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    let mut client = client.ready().await.ok()?;
    let req = http::Request::get("http://origin.test/ok/h2_host")
        .header("host", "other.test")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

/// A request that names its host more than once, or two ways that disagree, is refused and
/// audited as denied (two Host headers: 400; Host against the absolute-form target or HTTP/2
/// `:authority`: 403); header names and values an origin could split differently never reach
/// it (hyper answers 400). The origin executes none of them. Before, a second Host header was
/// accepted and the request forwarded.
#[test]
fn a_host_named_twice_or_two_ways_is_refused_and_audited() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[RULE]).await;
        let t = h.transparent(origin.addr).await;
        let port = origin.port();
        let refused = [
            (
                "two_hosts",
                t,
                "GET /ok/two_hosts HTTP/1.1\r\nHost: origin.test\r\nHost: other.test\r\n\r\n"
                    .to_string(),
                "HTTP/1.1 400",
            ),
            (
                "two_same_hosts",
                t,
                "GET /ok/two_same_hosts HTTP/1.1\r\nHost: origin.test\r\nHost: origin.test\r\n\r\n"
                    .to_string(),
                "HTTP/1.1 400",
            ),
            (
                "host_vs_absolute",
                h.addr,
                format!("GET http://origin.test:{port}/ok/host_vs_absolute HTTP/1.1\r\nHost: other.test\r\n\r\n"),
                "HTTP/1.1 403",
            ),
            (
                "space_in_name",
                t,
                "GET /ok/space_in_name HTTP/1.1\r\nHost: origin.test\r\nX Bad: 1\r\n\r\n".to_string(),
                "HTTP/1.1 400",
            ),
            (
                "nul_in_value",
                t,
                "GET /ok/nul_in_value HTTP/1.1\r\nHost: origin.test\r\nX-A: a\0b\r\n\r\n".to_string(),
                "HTTP/1.1 400",
            ),
            (
                "cr_in_value",
                t,
                "GET /ok/cr_in_value HTTP/1.1\r\nHost: origin.test\r\nX-A: a\rb\r\n\r\n".to_string(),
                "HTTP/1.1 400",
            ),
        ];
        for (case, addr, bytes, status) in &refused {
            let answer = exchange(*addr, bytes.as_bytes()).await;
            assert!(answer.starts_with(status), "{case}: {answer}");
        }
        let two = exchange(t, refused[0].2.as_bytes()).await;
        assert!(two.contains("2 Host headers"), "the reason is given: {two}");
        assert_eq!(
            h2_host_disagrees(t).await,
            Some(403),
            "h2 :authority vs host"
        );
        // Positive control.
        let control = exchange(t, b"GET /ok/control HTTP/1.1\r\nHost: origin.test\r\n\r\n").await;
        assert!(control.starts_with("HTTP/1.1 200"), "control: {control}");
        assert_eq!(origin.settled().await, ["GET /ok/control"]);
        let denied: Vec<String> = h
            .records()
            .iter()
            .filter(|r| !r.allowed)
            .map(|r| r.url.clone())
            .collect();
        for case in ["two_hosts", "two_same_hosts", "host_vs_absolute", "h2_host"] {
            assert!(
                denied.iter().any(|u| u.ends_with(&format!("/ok/{case}"))),
                "{case} audited as denied: {denied:?}"
            );
        }
    });
}
