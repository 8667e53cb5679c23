//! HTTP/2 stream cap (issue 12 item 9): one client connection may not have more than
//! `MAX_CONCURRENT_STREAMS` streams open at once, and a flood beyond waits instead of failing.

mod common;

use common::*;

#[test]
fn a_stream_flood_waits_within_the_advertised_cap() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        let t = h.transparent(origin.addr).await;
        let tcp = tokio::net::TcpStream::connect(t).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        // One request first, so the proxy's SETTINGS (with its stream cap) have arrived before
        // the flood, as they have for any client past its first round trip; a client that opens
        // streams before reading them gets REFUSED_STREAM for those beyond the cap (retryable).
        let mut first = client.clone().ready().await.expect("connection ready");
        let req = http::Request::get("http://origin.test/echo/first")
            .body(())
            .unwrap();
        let (resp, _) = first.send_request(req, true).expect("stream opens");
        assert_eq!(resp.await.expect("an answer").status(), 200);
        // Three times the cap the proxy should advertise (100, as browsers and gRPC use).
        let flood = 300;
        let tasks: Vec<_> = (0..flood)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut client = client.ready().await.expect("connection ready");
                    let req = http::Request::get(format!("http://origin.test/echo/{i}"))
                        .body(())
                        .unwrap();
                    let (resp, _) = client.send_request(req, true).expect("stream opens");
                    let resp = resp.await.expect("an answer, not a refused stream");
                    assert_eq!(resp.status(), 200);
                    let mut body = resp.into_body();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.unwrap();
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let advertised = client.current_max_send_streams();
        assert!(
            (1..=100).contains(&advertised),
            "SETTINGS_MAX_CONCURRENT_STREAMS: a client connection may open {advertised} streams at once"
        );
        let allowed = h.records().iter().filter(|r| r.allowed).count();
        assert_eq!(allowed, flood + 1, "every stream of the flood was served");
    });
}
