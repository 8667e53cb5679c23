//! Idle HTTP/1.1 client connections are parked (hyper's buffers and connection state freed,
//! only the socket and the TLS session kept) and resumed by the client's next byte (issue 15,
//! memory per idle connection). A parked connection must come back as the same keep-alive
//! connection: large request and response bodies and a WebSocket upgrade after parking, a
//! request head split across the park, and a request body still arriving after its answer
//! (the connection is in the middle of a message and must not be parked) all behave as on a
//! connection that never idled. HTTP/2 connections are not parked and keep working. After a
//! burst of parked (or closed) connections the proxy calls its memory release hook (boundary's
//! is `malloc_trim`), and not for fewer.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// Well past the proxy's park delay (250 ms), also on a loaded machine.
const PAST_PARK: Duration = Duration::from_millis(1600);

fn parked_now(h: &Harness) -> i64 {
    h.proxy.metrics().0.client_connections_parked()
}

/// Waits (up to 20 s) until `want` client connections are parked.
async fn until_parked(h: &Harness, want: i64) {
    for _ in 0..400 {
        if parked_now(h) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {want} parked client connection(s), the proxy has {}",
        parked_now(h)
    );
}

fn request(method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", ORIGIN)
        .body(Full::new(body))
        .unwrap()
}

fn origin_dst(origin: &Origin) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), origin.port())
}

#[test]
fn http1_parks_when_idle_and_resumes_with_large_bodies_and_a_websocket() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(origin_dst(&origin)).await;
        let tls = h.tls_connect(t, ORIGIN, &[b"http/1.1"]).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());

        let resp = send
            .send_request(request("GET", "/echo", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        until_parked(&h, 1).await;

        // A large request body on the parked connection.
        let upload = Bytes::from(vec![b'u'; 4 << 20]);
        let resp = send
            .send_request(request("POST", "/upload", upload))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"received 4194304 bytes");
        until_parked(&h, 1).await;

        // A large response body.
        let n = 16u64 << 20;
        let resp = send
            .send_request(request("GET", &format!("/big?n={n}"), Bytes::new()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len() as u64, n);
        assert!(body.iter().all(|b| *b == b'x'));
        until_parked(&h, 1).await;

        // A WebSocket upgrade, then messages both ways.
        let mut req = request("GET", "/ws", Bytes::new());
        for (k, v) in [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            req.headers_mut().insert(k, v.parse().unwrap());
        }
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let upgraded = hyper::upgrade::on(resp).await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Client,
            None,
        )
        .await;
        ws.send(Message::Text("after parking".into()))
            .await
            .unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Text("after parking".into()));
        let big = vec![7u8; 1 << 20];
        ws.send(Message::Binary(big.clone())).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Binary(big));
        // An upgraded connection is a pipe, never parked.
        tokio::time::sleep(PAST_PARK).await;
        assert_eq!(parked_now(&h), 0);
        ws.close(None).await.unwrap();

        let seen: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(seen.len(), 4, "{seen:?}");
    });
}

#[test]
fn http2_is_not_parked_and_keeps_working_after_idling() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(origin_dst(&origin)).await;
        let tls = h.tls_connect(t, ORIGIN, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(request("GET", "/echo", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(PAST_PARK * 2).await;
        assert_eq!(parked_now(&h), 0, "an HTTP/2 connection was parked");

        let upload = Bytes::from(vec![b'u'; 4 << 20]);
        let resp = send
            .send_request(request("POST", "/upload", upload))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"received 4194304 bytes");
        let n = 16u64 << 20;
        let resp = send
            .send_request(request("GET", &format!("/big?n={n}"), Bytes::new()))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len() as u64, n);
    });
}

/// Reads one HTTP/1.1 response with a Content-Length body: (head, body).
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_request_head_split_across_the_park_is_served_whole() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/ok/*"]).await;
        let origin = Origin::start(None, None).await;
        let t = h.transparent(origin_dst(&origin)).await;
        let mut s = TcpStream::connect(t).await.unwrap();
        s.write_all(b"GET /ok/first HTTP/1.1\r\nHost: origin.test\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("uri: /ok/first"), "{body}");
        until_parked(&h, 1).await;

        // Half a head: the proxy resumes on its first byte and parks again with the rest of
        // it unparsed in hyper's buffer, which must be put back in front of the stream.
        s.write_all(b"GET /ok/second HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(PAST_PARK * 2).await;
        s.write_all(b"st: origin.test\r\n\r\n").await.unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("uri: /ok/second"), "{body}");
    });
}

#[test]
fn a_request_body_still_arriving_after_its_answer_is_not_taken_for_requests() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/ok/*"]).await;
        let origin = Origin::start(None, None).await;
        let t = h.transparent(origin_dst(&origin)).await;
        let mut s = TcpStream::connect(t).await.unwrap();
        // The rest of the body reads like a request: were the connection parked while the
        // body is still arriving, a fresh HTTP/1.1 connection would parse it as one.
        let rest = b"GET /ok/smuggled HTTP/1.1\r\nHost: origin.test\r\n\r\n";
        let head = format!(
            "POST /denied HTTP/1.1\r\nHost: origin.test\r\nContent-Length: {}\r\n\r\n0123456789",
            10 + rest.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        // The proxy drains the body in the background; the connection idles meanwhile.
        tokio::time::sleep(PAST_PARK * 2).await;
        assert_eq!(parked_now(&h), 0, "parked in the middle of a request body");
        s.write_all(rest).await.unwrap();
        s.write_all(b"GET /ok/after HTTP/1.1\r\nHost: origin.test\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.contains("uri: /ok/after"), "{body}");
        let seen: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(seen, ["/ok/after"]);
        let decided: Vec<_> = h.records().iter().map(|r| r.allowed).collect();
        assert_eq!(decided, [false, true]);
        until_parked(&h, 1).await;
    });
}

/// Times the proxy of `a_burst_of_parked_connections_gives_freed_memory_back` released memory.
static RELEASES: AtomicUsize = AtomicUsize::new(0);

fn count_release() {
    RELEASES.fetch_add(1, Ordering::SeqCst);
}

/// A keep-alive HTTP/1.1 connection through the proxy that has served one request.
async fn one_request_then_idle(
    h: &Harness,
    origin: &Origin,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let t = h.transparent(origin_dst(origin)).await;
    let tls = h.tls_connect(t, ORIGIN, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(request("GET", "/echo", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    send
}

#[test]
fn a_burst_of_parked_connections_gives_freed_memory_back() {
    run(async {
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.release_memory = Some(count_release)
        })
        .await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let mut held = Vec::new();
        // One short of a burst: nothing is released, however long they stay parked.
        for _ in 0..63 {
            held.push(one_request_then_idle(&h, &origin).await);
        }
        until_parked(&h, 63).await;
        tokio::time::sleep(PAST_PARK + Duration::from_secs(1)).await;
        assert_eq!(
            RELEASES.load(Ordering::SeqCst),
            0,
            "63 parked connections are not a burst: nothing should have been released"
        );
        // The 64th completes the burst: the hook runs about a second later.
        held.push(one_request_then_idle(&h, &origin).await);
        until_parked(&h, 64).await;
        for _ in 0..400 {
            if RELEASES.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            RELEASES.load(Ordering::SeqCst) > 0,
            "64 parked connections should have made the proxy release freed memory"
        );
        // The parked connections still serve requests.
        let resp = held[0]
            .send_request(request("GET", "/echo", Bytes::new()))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    });
}

/// Times the proxy of `a_burst_of_closed_connections_gives_freed_memory_back` released memory.
static RELEASES_AFTER_CLOSES: AtomicUsize = AtomicUsize::new(0);

fn count_release_after_closes() {
    RELEASES_AFTER_CLOSES.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_burst_of_closed_connections_gives_freed_memory_back() {
    run(async {
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.release_memory = Some(count_release_after_closes)
        })
        .await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        // HTTP/2 connections are never parked: only their closing counts.
        for _ in 0..64 {
            let t = h.transparent(origin_dst(&origin)).await;
            let tls = h.tls_connect(t, ORIGIN, &[b"h2"]).await;
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            let resp = send
                .send_request(request("GET", "/echo", Bytes::new()))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
            drop(send);
            conn.await.unwrap().unwrap();
        }
        assert_eq!(parked_now(&h), 0, "an HTTP/2 connection was parked");
        for _ in 0..400 {
            if RELEASES_AFTER_CLOSES.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            RELEASES_AFTER_CLOSES.load(Ordering::SeqCst) > 0,
            "64 closed connections should have made the proxy release freed memory"
        );
    });
}
