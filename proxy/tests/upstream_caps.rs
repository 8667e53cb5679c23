//! Upstream caps (issue 12 item 9): requests in flight to one origin, and the connections that
//! carry them, never exceed the per-origin cap, whatever the client sends: parallel HTTP/1.1
//! connections and HTTP/2 streams wait for their turn instead of failing, a second client is
//! served while a flood goes on, and a request that waits longer than the idle timeout gets a
//! 503 saying so (nothing sent upstream, audited once). A client that never reads its answers
//! (HTTP/1.1 or HTTP/2 with its flow-control window at zero) loses them after the client stall
//! timeout, so it cannot hold an origin's places.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Notify;

/// Requests the origin is working on now, and the most it ever worked on at once.
#[derive(Default)]
struct Load {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// An origin that takes `delay` over every request and records its load.
async fn slow_origin(delay: Duration) -> (Origin, Arc<Load>) {
    let load = Arc::new(Load::default());
    let l = load.clone();
    let handler: Handler = Arc::new(move |_req: Request<Incoming>| {
        let l = l.clone();
        Box::pin(async move {
            let now = l.now.fetch_add(1, Ordering::SeqCst) + 1;
            l.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            l.now.fetch_sub(1, Ordering::SeqCst);
            Response::new(full("slow hello\n"))
        })
    });
    (Origin::start(None, Some(handler)).await, load)
}

#[test]
fn parallel_requests_wait_for_a_connection_under_the_per_origin_cap() {
    run(async {
        let (origin, load) = slow_origin(Duration::from_millis(100)).await;
        let h = Harness::with(&["domain=origin.test"], |c| c.upstream_per_origin = 4).await;
        let url = format!("http://{ORIGIN}:{}/slow", origin.port());
        let mut args = vec!["--parallel", "--parallel-max", "40", "--proxy"];
        let proxy = h.proxy_url();
        args.push(&proxy);
        for _ in 0..40 {
            args.push(&url);
        }
        let out = curl(&args).await;
        assert_eq!(out.statuses.len(), 40, "{out:?}");
        assert!(out.statuses.iter().all(|s| *s == 200), "{out:?}");
        let opened = origin.connections.load(Ordering::SeqCst);
        assert!(
            opened <= 4,
            "the origin saw {opened} connections; the cap is 4"
        );
        assert_eq!(
            load.most.load(Ordering::SeqCst),
            4,
            "the flood filled the cap"
        );
        assert_eq!(origin.seen().len(), 40);
    });
}

/// `streams` requests on one HTTP/2 connection (prior knowledge) to the proxy at `addr`;
/// returns how many were answered 200.
async fn h2_flood(addr: std::net::SocketAddr, streams: usize, done: Arc<AtomicUsize>) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // The first stream lets the proxy's SETTINGS (its stream cap) arrive before the flood.
    let mut ok = h2_get(client.clone(), "first").await as usize;
    let tasks: Vec<_> = (0..streams - 1)
        .map(|i| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let ok = h2_get(client, &format!("stream-{i}")).await;
                done.fetch_add(1, Ordering::SeqCst);
                ok
            })
        })
        .collect();
    for t in tasks {
        ok += t.await.unwrap() as usize;
    }
    ok
}

async fn h2_get(client: h2::client::SendRequest<bytes::Bytes>, tag: &str) -> bool {
    let mut client = client.ready().await.expect("connection ready");
    let req = Request::get(format!("http://origin.test/h2/{tag}"))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).expect("stream opens");
    let Ok(resp) = resp.await else { return false };
    let ok = resp.status() == 200;
    let mut body = resp.into_body();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    ok
}

#[test]
fn a_flood_of_streams_and_connections_never_opens_more_than_the_cap_and_a_second_client_is_served()
{
    run(async {
        let cap = 4;
        let (origin, load) = slow_origin(Duration::from_millis(40)).await;
        let h = Harness::with(&["domain=origin.test"], |c| c.upstream_per_origin = cap).await;
        let t = h.transparent(origin.addr).await;
        let done = Arc::new(AtomicUsize::new(0));
        // Two HTTP/2 connections with 150 streams each (the proxy lets 100 run at once), and
        // 60 HTTP/1.1 connections from curl, 120 requests: all to one origin.
        let h2 = [
            tokio::spawn(h2_flood(t, 150, done.clone())),
            tokio::spawn(h2_flood(t, 150, done.clone())),
        ];
        let url = format!("http://{ORIGIN}:{}/h1", origin.port());
        let proxy = h.proxy_url();
        let mut args = vec!["--parallel", "--parallel-max", "60", "--proxy", &proxy];
        args.extend(std::iter::repeat_n(url.as_str(), 120));
        let h1 = tokio::spawn({
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            async move { curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
        });
        // Once the flood fills the cap, a second client asks the same origin once.
        while load.most.load(Ordering::SeqCst) < cap {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second_url = format!("http://{ORIGIN}:{}/second-client", origin.port());
        let second = curl(&["--proxy", &proxy, &second_url]).await;
        let flood_answered = done.load(Ordering::SeqCst);
        assert_eq!(second.status(), 200, "the second client: {second:?}");

        let h2_ok: usize = futures_util::future::join_all(h2)
            .await
            .into_iter()
            .map(Result::unwrap)
            .sum();
        let h1 = h1.await.unwrap();
        assert_eq!(h2_ok, 300, "every HTTP/2 stream of the flood was served");
        assert_eq!(h1.statuses.len(), 120, "{h1:?}");
        assert!(h1.statuses.iter().all(|s| *s == 200), "{h1:?}");
        assert!(
            flood_answered < 298,
            "the second client was served only after the flood ({flood_answered} of 298 streams)"
        );
        let opened = origin.connections.load(Ordering::SeqCst);
        assert!(
            opened <= cap,
            "the origin saw {opened} connections; the cap is {cap}"
        );
        assert_eq!(load.most.load(Ordering::SeqCst), cap);
        assert_eq!(origin.seen().len(), 300 + 120 + 1);
    });
}

#[test]
fn a_request_that_waits_out_the_idle_timeout_gets_a_503_and_nothing_goes_upstream() {
    run(async {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let r = r.clone();
            Box::pin(async move {
                if req.uri().path() == "/hold" {
                    // Answers at once, then holds the body (and so the place) until released:
                    // an origin still sending is not bounded by any timeout.
                    use http_body_util::BodyExt;
                    let body = futures_util::stream::once(async move {
                        r.notified().await;
                        Ok::<_, BoxError>(hyper::body::Frame::data(bytes::Bytes::from("done\n")))
                    });
                    return Response::new(http_body_util::StreamBody::new(body).boxed_unsync());
                }
                Response::new(full("done\n"))
            })
        });
        let origin = Origin::start(None, Some(handler)).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_per_origin = 1;
            c.idle_timeout = Duration::from_millis(500);
        })
        .await;
        let proxy = h.proxy_url();
        let base = format!("http://{ORIGIN}:{}", origin.port());
        let hold = tokio::spawn({
            let (proxy, url) = (proxy.clone(), format!("{base}/hold"));
            async move { curl(&["--proxy", &proxy, &url]).await }
        });
        while origin.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let late = curl(&["--proxy", &proxy, &format!("{base}/late")]).await;
        assert_eq!(late.status(), 503, "{late:?}");
        assert!(
            late.body.contains(&format!(
                "1 requests to origin.test:{} in flight",
                origin.port()
            )),
            "{}",
            late.body
        );
        release.notify_one();
        assert_eq!(hold.await.unwrap().status(), 200);
        // The late request never reached the origin, and each request was audited once.
        let seen: Vec<_> = origin.seen().iter().map(|s| s.uri.clone()).collect();
        assert_eq!(seen, vec!["/hold".to_string()]);
        let urls: Vec<_> = h.records().iter().map(|r| r.url.clone()).collect();
        assert_eq!(urls.len(), 2, "{urls:?}");
        // Once the first is done, the origin is reachable again.
        let again = curl(&["--proxy", &proxy, &format!("{base}/again")]).await;
        assert_eq!(again.status(), 200, "{again:?}");
    });
}

/// Opens one HTTP/2 stream to `/big` with a stream window of zero (the client never sends
/// WINDOW_UPDATE), waits for the response head and keeps the stream open without reading.
async fn h2_never_reads(
    addr: std::net::SocketAddr,
) -> (h2::client::SendRequest<bytes::Bytes>, h2::RecvStream) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("connection ready");
    let req = Request::get("http://origin.test/big?n=10000000")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).expect("stream opens");
    let resp = resp.await.expect("response head");
    assert_eq!(resp.status(), 200);
    (client, resp.into_body())
}

#[test]
fn a_client_that_never_reads_loses_its_answers_after_the_stall_timeout() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_per_origin = 2;
            c.client_stall_timeout = Duration::from_millis(300);
            c.idle_timeout = Duration::from_secs(5);
        })
        .await;
        let proxy = h.proxy_url();
        let base = format!("http://{ORIGIN}:{}", origin.port());
        // Both places: one HTTP/1.1 connection that never reads a 10 MB answer, one HTTP/2
        // stream whose window stays at zero.
        let mut h1 = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let head = format!("GET {base}/big?n=10000000 HTTP/1.1\r\nHost: {ORIGIN}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut h1, head.as_bytes())
            .await
            .unwrap();
        let t = h.transparent(origin.addr).await;
        let (_h2, mut h2_body) = h2_never_reads(t).await;
        // The second client gets its answer once the stalled ones are ended (before, it waited
        // out the idle timeout for a 503).
        let second = curl(&["--proxy", &proxy, &format!("{base}/echo/second")]).await;
        assert_eq!(second.status(), 200, "{second:?}");
        assert!(origin.seen().iter().any(|s| s.uri == "/echo/second"));
        // The stalled HTTP/2 stream was reset, not finished.
        let _ = h2_body.flow_control().release_capacity(0);
        let mut got = 0;
        let end = loop {
            match h2_body.data().await {
                Some(Ok(chunk)) => {
                    got += chunk.len();
                    let _ = h2_body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert!(
            end.is_some() && got < 10_000_000,
            "the stream ended with {end:?} after {got} bytes"
        );
    });
}

#[test]
fn a_request_body_that_never_comes_loses_its_place_after_the_stall_timeout() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_per_origin = 1;
            c.client_stall_timeout = Duration::from_millis(300);
            c.idle_timeout = Duration::from_secs(5);
        })
        .await;
        let proxy = h.proxy_url();
        let base = format!("http://{ORIGIN}:{}", origin.port());
        // The only place: an upload that declares 100 kB and sends nothing of it.
        let mut held = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let head = format!(
            "POST {base}/upload HTTP/1.1\r\nHost: {ORIGIN}\r\nContent-Length: 100000\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut held, head.as_bytes())
            .await
            .unwrap();
        while origin.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Before the stall timeout, this waited out the idle timeout for a 503.
        let second = curl(&["--proxy", &proxy, &format!("{base}/echo/second")]).await;
        assert_eq!(second.status(), 200, "{second:?}");
        assert!(origin.seen().iter().any(|s| s.uri == "/echo/second"));
    });
}

#[test]
fn an_origin_that_never_answers_gets_a_504_and_frees_its_place() {
    run(async {
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            Box::pin(async move {
                if req.uri().path() == "/never" {
                    std::future::pending::<()>().await;
                }
                Response::new(full("answered\n"))
            })
        });
        let origin = Origin::start(None, Some(handler)).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.upstream_per_origin = 1;
            c.idle_timeout = Duration::from_secs(1);
        })
        .await;
        let proxy = h.proxy_url();
        let base = format!("http://{ORIGIN}:{}", origin.port());
        // Before, this waited as long as the origin kept the connection (here: forever).
        let never = curl(&[
            "--max-time",
            "30",
            "--proxy",
            &proxy,
            &format!("{base}/never"),
        ])
        .await;
        assert_eq!(never.status(), 504, "{never:?}");
        assert!(never.body.contains("did not answer"), "{}", never.body);
        // Its place (the only one) is free again.
        let next = curl(&["--proxy", &proxy, &format!("{base}/next")]).await;
        assert_eq!(next.status(), 200, "{next:?}");
    });
}
