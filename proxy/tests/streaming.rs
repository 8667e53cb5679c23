//! Streams that must not be buffered: WebSocket (upgrade then raw bytes both ways) and SSE
//! (events arrive one by one while the origin is still sending).

mod common;

use std::process::Stdio;
use std::sync::atomic::Ordering;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn connect_tunnel(h: &Harness, host: &str, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

async fn echo_round_trips<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..5 {
        ws.send(Message::Text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got, Message::Text(format!("hello {i}")));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::Binary(big.clone())).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got, Message::Binary(big));
    ws.close(None).await.unwrap();
}

#[test]
fn websocket_echo_through_connect_and_transparent_tls() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/ws"]).await;
        let plain = Origin::start(None, None).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;

        // ws:// inside a CONNECT tunnel.
        let s = connect_tunnel(&h, ORIGIN, plain.port()).await;
        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{ORIGIN}:{}/ws", plain.port()), s)
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        echo_round_trips(&mut ws).await;

        // wss:// inside a CONNECT tunnel (what a client with HTTPS_PROXY does).
        let s = connect_tunnel(&h, ORIGIN, tls.port()).await;
        let name = rustls_pki_types::ServerName::try_from(ORIGIN).unwrap();
        let stream = tokio_rustls::TlsConnector::from(h.client_tls(&[b"http/1.1"]))
            .connect(name, s)
            .await
            .unwrap();
        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("wss://{ORIGIN}:{}/ws", tls.port()), stream)
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        echo_round_trips(&mut ws).await;

        // wss:// redirected transparently: TLS intercepted, upgrade forwarded over HTTP/1.1.
        let t = h.transparent(tls.addr).await;
        let stream = h.tls_connect(t, ORIGIN, &[b"http/1.1"]).await;
        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("wss://{ORIGIN}:{}/ws", tls.port()), stream)
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        echo_round_trips(&mut ws).await;

        // A denied upgrade is a 403, never a 101.
        let stream = h.tls_connect(t, ORIGIN, &[b"http/1.1"]).await;
        let err = tokio_tungstenite::client_async(
            format!("wss://{ORIGIN}:{}/not-ws", tls.port()),
            stream,
        )
        .await
        .unwrap_err();
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
            other => panic!("expected HTTP 403, got {other:?}"),
        }

        let recs = h.records();
        let urls: Vec<&str> = recs.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            vec![
                format!("http://origin.test:{}/ws", plain.port()),
                format!("https://origin.test:{}/ws", tls.port()),
                format!("https://origin.test:{}/ws", tls.port()),
                format!("https://origin.test:{}/not-ws", tls.port()),
            ]
        );
    });
}

/// Runs curl -N on `args` and checks that the first SSE event arrives before the origin has
/// sent the last one, then that all five arrive in order.
async fn sse_one_by_one(origin: &Origin, args: &[&str]) {
    origin.sse_last_sent.store(false, Ordering::SeqCst);
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30"])
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("these tests need curl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(data) = line.strip_prefix("data: ") {
            if events.is_empty() {
                assert!(
                    !origin.sse_last_sent.load(Ordering::SeqCst),
                    "the first event only arrived after the origin sent the last: buffered"
                );
            }
            events.push(data.to_string());
        }
    }
    assert!(child.wait().await.unwrap().success());
    assert_eq!(
        events,
        (0..5).map(|i| format!("event {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn sse_events_arrive_one_by_one() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/sse"]).await;
        let plain = Origin::start(None, None).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let proxy = h.proxy_url();
        let ca = h.ca_cert.display().to_string();
        let plain_url = format!("http://{ORIGIN}:{}/sse", plain.port());
        sse_one_by_one(&plain, &["--proxy", &proxy, &plain_url]).await;
        let tls_url = format!("https://{ORIGIN}:{}/sse", tls.port());
        sse_one_by_one(&tls, &["--proxy", &proxy, "--cacert", &ca, &tls_url]).await;
        sse_one_by_one(
            &tls,
            &["--http2", "--proxy", &proxy, "--cacert", &ca, &tls_url],
        )
        .await;
        assert_eq!(h.records().len(), 3);
    });
}
