//! Upgrades and override headers (issue 12 items 2 and 4), against the lenient recording
//! origin: it answers 101 to any upgrade and then executes what it reads, and it runs the
//! method and path that override headers name.

mod common;

use common::lenient::{exchange, forbidden, Lenient};
use common::*;

#[test]
fn only_websocket_upgrades_become_pipes() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&["domain=origin.test path=/ok/*"]).await;
        let t = h.transparent(origin.addr).await;
        let cases = [
            ("GET", "made-up/1"),
            ("GET", "h2c"),
            ("GET", "TLS/1.0"),
            ("GET", "websocket, made-up"),
            ("POST", "websocket"),
        ];
        for (i, (method, token)) in cases.iter().enumerate() {
            let bytes = format!(
                "{method} /ok/up{i} HTTP/1.1\r\nHost: origin.test\r\nConnection: Upgrade\r\n\
                 Upgrade: {token}\r\nContent-Length: 0\r\n\r\n\
                 POST /forbidden/up{i} HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\r\n"
            );
            let answer = exchange(t, bytes.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{token}: {answer}");
            assert!(
                answer.contains("HTTP/1.1 403"),
                "{token}: the second request must be decided by the proxy: {answer}"
            );
        }
        // An origin that switches protocols unasked gets no pipe either.
        let answer = exchange(
            t,
            b"GET /ok/switch HTTP/1.1\r\nHost: origin.test\r\n\r\n\
              POST /forbidden/switch HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("switched protocols"), "{answer}");
        let executed = origin.settled().await;
        let leaked = forbidden(&executed);
        assert!(
            leaked.is_empty(),
            "undecided requests ran: {leaked:?} of {executed:?}"
        );
        assert!(
            executed.contains(&"GET /ok/up0".to_string()),
            "{executed:?}"
        );
        let denied = h.records().iter().filter(|r| !r.allowed).count();
        assert_eq!(denied, cases.len() + 1, "{:?}", h.records());
    });
}

#[test]
fn override_headers_must_be_allowed_too() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[
            "method=GET domain=origin.test path=/ok/*",
            "domain=other.test",
        ])
        .await;
        let t = h.transparent(origin.addr).await;
        let refused = [
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-HTTP-Method", "PUT"),
            ("X-Method-Override", "POST"),
            ("X-Original-URL", "/admin/users"),
            ("X-Rewrite-URL", "http://origin.test/admin"),
            ("X-Original-URL", "/ok/../admin"),
        ];
        for (name, value) in refused {
            let bytes =
                format!("GET /ok/a HTTP/1.1\r\nHost: origin.test\r\n{name}: {value}\r\n\r\n");
            let answer = exchange(t, bytes.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{name}: {answer}");
            assert!(
                answer.contains(&format!("the {} header", name.to_ascii_lowercase())),
                "{answer}"
            );
        }
        let allowed = [
            ("origin.test", "X-HTTP-Method-Override", "GET", "GET /ok/a"),
            ("origin.test", "X-Rewrite-URL", "/ok/b", "GET /ok/b"),
            (
                "other.test",
                "X-HTTP-Method-Override",
                "DELETE",
                "DELETE /ok/a",
            ),
        ];
        for (host, name, value, _) in allowed {
            let bytes = format!("GET /ok/a HTTP/1.1\r\nHost: {host}\r\n{name}: {value}\r\n\r\n");
            let answer = exchange(t, bytes.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "{name}: {value}: {answer}"
            );
        }
        let executed = origin.settled().await;
        let expected: Vec<String> = allowed.iter().map(|a| a.3.to_string()).collect();
        assert_eq!(
            executed, expected,
            "the origin ran only what the rules allow"
        );
        let records = h.records();
        assert_eq!(records.len(), refused.len() + allowed.len(), "{records:?}");
        assert_eq!(records.iter().filter(|r| r.allowed).count(), allowed.len());
    });
}

/// Rules compare methods exactly, but frameworks upper-case an override header's value before
/// running it, so `delete` in the header must be allowed as `DELETE` as well.
#[test]
fn an_override_method_is_decided_as_frameworks_run_it() {
    run(async {
        let origin = Lenient::start().await;
        let request =
            "GET /a HTTP/1.1\r\nHost: origin.test\r\nX-HTTP-Method-Override: delete\r\n\r\n";
        let h = Harness::new(&["method=GET,delete domain=origin.test"]).await;
        let t = h.transparent(origin.addr).await;
        let answer = exchange(t, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("DELETE /a"), "{answer}");
        // Positive control: once the rule allows DELETE too, the same request goes through.
        let h = Harness::new(&["method=GET,delete,DELETE domain=origin.test"]).await;
        let t = h.transparent(origin.addr).await;
        let answer = exchange(t, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}

/// An origin may honour only one of two override headers (Express reads the method header
/// and not `X-Original-URL`), so a path header must not make an unallowed method override
/// pass, nor a method header an unallowed path override: every pair with the request's own
/// method or path is decided too. WebDAV's `Destination` names the path a `MOVE` or `COPY`
/// writes: decided like a path header, and another host is refused. Headers naming the host
/// must name the decided one; `_` in a header name counts as `-`.
#[test]
fn each_override_header_is_decided_with_the_request_s_own_method_and_path() {
    run(async {
        let origin = Lenient::start().await;
        let h = Harness::new(&[
            "method=GET,POST domain=origin.test path=/api/*",
            "domain=origin.test path=/ok/*",
        ])
        .await;
        let t = h.transparent(origin.addr).await;
        let refused = [
            // An origin honouring only the method header runs DELETE /api/x.
            "POST /api/x HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\
             X-HTTP-Method-Override: DELETE\r\nX-Original-URL: /ok/a\r\n\r\n",
            // An origin honouring only the path header runs DELETE /api/x.
            "DELETE /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             X-HTTP-Method-Override: GET\r\nX-Original-URL: /api/x\r\n\r\n",
            // A WebDAV origin moves /ok/a to /admin/owned.
            "MOVE /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             Destination: http://origin.test/admin/owned\r\n\r\n",
            "COPY /ok/a HTTP/1.1\r\nHost: origin.test\r\nDestination: /admin/owned\r\n\r\n",
            // ... or onto another host it serves.
            "COPY /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             Destination: http://elsewhere.test/ok/b\r\n\r\n",
            // CGI front ends (PHP) read `_` as `-`.
            "POST /api/x HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\
             X_HTTP_Method_Override: DELETE\r\n\r\n",
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\nX_Original_URL: /admin\r\n\r\n",
            "POST /api/x HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\
             X.HTTP.Method.Override: DELETE\r\n\r\n",
            // The host an origin behind a proxy reads.
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\nX-Forwarded-Host: elsewhere.test\r\n\r\n",
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             X-Forwarded-Host: origin.test, elsewhere.test\r\n\r\n",
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             Forwarded: for=192.0.2.1;host=elsewhere.test\r\n\r\n",
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\nX_Forwarded_Host: elsewhere.test\r\n\r\n",
            // The path a proxy in front of the origin says it was asked for.
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\nX-Forwarded-Uri: /admin\r\n\r\n",
        ];
        for request in refused {
            let answer = exchange(t, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{request}\n{answer}");
        }
        // Positive controls: the same shapes with everything allowed go through.
        let allowed = [
            "POST /ok/a HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\n\
             X-HTTP-Method-Override: DELETE\r\nX-Original-URL: /ok/b\r\n\r\n",
            "MOVE /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             Destination: http://origin.test/ok/b\r\n\r\n",
            "GET /ok/a HTTP/1.1\r\nHost: origin.test\r\n\
             X-Forwarded-Host: Origin.test:8080\r\nForwarded: host=\"origin.test\"\r\n\r\n",
        ];
        for request in allowed {
            let answer = exchange(t, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{request}\n{answer}");
        }
        assert_eq!(
            origin.settled().await.len(),
            allowed.len(),
            "a refused request reached the origin"
        );
    });
}
