//! HTTP/2 end to end (curl --http2, a hyper h2 client with many streams on one connection) and
//! gRPC unary + bidirectional streaming with a tonic server and client, through the proxy.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use futures_util::Stream;
use http::uri::PathAndQuery;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codec::ProstCodec;

#[test]
fn curl_http2_through_connect_and_transparent() {
    run(async {
        let h = Harness::new(&["domain=origin.test"]).await;
        let h2_origin = Origin::start(Some(h.origin_tls()), None).await;
        let h1_origin =
            Origin::start(Some(h.pki.server_config(&[ORIGIN], &[b"http/1.1"])), None).await;
        for origin in [&h2_origin, &h1_origin] {
            let out = curl(&[
                "-v",
                "--http2",
                "--proxy",
                &h.proxy_url(),
                "--cacert",
                &h.ca_cert.display().to_string(),
                &format!("https://{ORIGIN}:{}/echo?via=connect", origin.port()),
            ])
            .await;
            assert_eq!(out.status(), 200, "{out:?}");
            assert!(
                out.stderr.contains("< HTTP/2 200"),
                "client leg not h2: {}",
                out.stderr
            );
        }
        assert_eq!(h2_origin.seen()[0].version, Version::HTTP_2);
        assert_eq!(h1_origin.seen()[0].version, Version::HTTP_11);

        let t = h.transparent(h2_origin.addr).await;
        let out = curl(&[
            "-v",
            "--http2",
            "--cacert",
            &h.ca_cert.display().to_string(),
            "--connect-to",
            &format!("{ORIGIN}:{}:127.0.0.1:{}", h2_origin.port(), t.port()),
            &format!("https://{ORIGIN}:{}/echo?via=transparent", h2_origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert!(out.stderr.contains("< HTTP/2 200"));
        // An h2 response must not carry connection-specific headers from the origin.
        assert!(!out.stderr.to_ascii_lowercase().contains("< keep-alive"));
    });
}

#[test]
fn plain_http2_prior_knowledge_and_h2c_upgrade_attempts() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        let origin = Origin::start(None, None).await;
        let t = h.transparent(origin.addr).await;
        let connect_to = format!("{ORIGIN}:{}:127.0.0.1:{}", origin.port(), t.port());
        let url = format!("http://{ORIGIN}:{}/echo", origin.port());
        // Cleartext HTTP/2 with prior knowledge, redirected transparently.
        let out = curl(&[
            "-v",
            "--http2-prior-knowledge",
            "--connect-to",
            &connect_to,
            &url,
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert!(out.stderr.contains("< HTTP/2 200"), "{}", out.stderr);
        // `Upgrade: h2c` is not passed on; the request is still answered over HTTP/1.1.
        let out = curl(&["-v", "--http2", "--connect-to", &connect_to, &url]).await;
        assert_eq!(out.status(), 200, "{out:?}");
        let seen = origin.seen();
        assert!(seen.iter().all(|s| s.headers.get("upgrade").is_none()));
        assert!(seen
            .iter()
            .all(|s| s.headers.get("http2-settings").is_none()));
        let denied = curl(&[
            "--http2-prior-knowledge",
            "--connect-to",
            &connect_to,
            &format!("http://{ORIGIN}:{}/secret", origin.port()),
        ])
        .await;
        assert_eq!(denied.status(), 403);
        assert_eq!(h.records().len(), 3);
    });
}

#[test]
fn hyper_h2_client_streams_are_decided_one_by_one() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo/*"]).await;
        let origin = Origin::start(Some(h.origin_tls()), None).await;
        let t = h.transparent(origin.addr).await;
        let tls = h.tls_connect(t, ORIGIN, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        // One request first: the pool learns by ALPN that the origin speaks h2 only once a
        // connection exists; concurrent first requests would each open their own.
        let mut warm = tx.clone();
        let req = Request::get(format!("https://{ORIGIN}:{}/echo/warm", origin.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        assert_eq!(warm.send_request(req).await.unwrap().status(), 200);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut tx = tx.clone();
            let port = origin.port();
            tasks.push(tokio::spawn(async move {
                let path = if i % 4 == 0 { "/other" } else { "/echo/x" };
                let req = Request::get(format!("https://{ORIGIN}:{port}{path}?i={i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                tx.ready().await.unwrap();
                let resp = tx.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (i, status, String::from_utf8_lossy(&body).to_string())
            }));
        }
        for t in tasks {
            let (i, status, body) = t.await.unwrap();
            if i % 4 == 0 {
                assert_eq!(status, 403, "{body}");
                assert!(body.contains("Request Blocked by Boundary"));
            } else {
                assert_eq!(status, 200, "{body}");
                assert!(body.contains(&format!("i={i}")));
            }
        }
        let recs = h.records();
        assert_eq!(recs.len(), 21);
        assert_eq!(recs.iter().filter(|r| r.allowed).count(), 16);
        // All 16 allowed streams shared one upstream HTTP/2 connection.
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);

        // :authority naming another host than the SNI is a mismatch.
        let tls = h.tls_connect(t, ORIGIN, &[b"h2"]).await;
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://{OTHER}:{}/echo/x", origin.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 403);
    });
}

// ---- gRPC ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, tonic::Status>> + Send>>;

struct UnaryEcho;

impl tonic::server::UnaryService<EchoRequest> for UnaryEcho {
    type Response = EchoReply;
    type Future = BoxFut<Result<tonic::Response<EchoReply>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner().message;
            if m == "fail" {
                return Err(tonic::Status::not_found("no such thing"));
            }
            Ok(tonic::Response::new(EchoReply {
                message: format!("echo: {m}"),
            }))
        })
    }
}

struct BidiEcho;

impl tonic::server::StreamingService<EchoRequest> for BidiEcho {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFut<Result<tonic::Response<ReplyStream>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<EchoRequest>>) -> Self::Future {
        Box::pin(async move {
            let inbound = req.into_inner();
            let out = futures_util::stream::unfold(inbound, |mut s| async move {
                match s.message().await {
                    Ok(Some(m)) => Some((
                        Ok(EchoReply {
                            message: format!("echo: {}", m.message),
                        }),
                        s,
                    )),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), s)),
                }
            });
            Ok(tonic::Response::new(Box::pin(out) as ReplyStream))
        })
    }
}

fn grpc_handler() -> Handler {
    Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let resp = match req.uri().path() {
                "/test.Echo/Unary" => {
                    let mut g =
                        tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
                    g.unary(UnaryEcho, req).await
                }
                "/test.Echo/Bidi" => {
                    let mut g =
                        tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
                    g.streaming(BidiEcho, req).await
                }
                _ => {
                    return http::Response::builder()
                        .status(404)
                        .body(full(""))
                        .unwrap()
                }
            };
            resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
        })
    })
}

/// A tonic transport over one hyper HTTP/2 connection.
#[derive(Clone)]
struct H2Channel(hyper::client::conn::http2::SendRequest<tonic::body::BoxBody>);

impl tower_service::Service<Request<tonic::body::BoxBody>> for H2Channel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFut<Result<Self::Response, Self::Error>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Request<tonic::body::BoxBody>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

#[test]
fn grpc_unary_and_bidi_streaming_through_the_proxy() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/test.Echo/Unary,/test.Echo/Bidi"]).await;
        let origin = Origin::start(Some(h.origin_tls()), Some(grpc_handler())).await;
        let t = h.transparent(origin.addr).await;
        let tls = h.tls_connect(t, ORIGIN, &[b"h2"]).await;
        let (tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let origin_uri: http::Uri = format!("https://{ORIGIN}:{}", origin.port())
            .parse()
            .unwrap();
        let mut grpc = tonic::client::Grpc::with_origin(H2Channel(tx), origin_uri);

        grpc.ready().await.unwrap();
        let reply = grpc
            .unary(
                tonic::Request::new(EchoRequest {
                    message: "hello".into(),
                }),
                PathAndQuery::from_static("/test.Echo/Unary"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "echo: hello");

        // A gRPC error status travels back intact.
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(EchoRequest {
                    message: "fail".into(),
                }),
                PathAndQuery::from_static("/test.Echo/Unary"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "no such thing");

        // Bidirectional: each reply arrives before the next request is sent.
        let (req_tx, req_rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
        let outbound = futures_util::stream::unfold(req_rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        grpc.ready().await.unwrap();
        let send_first = req_tx.send(EchoRequest {
            message: "m0".into(),
        });
        let (resp, _) = tokio::join!(
            grpc.streaming(
                tonic::Request::new(outbound),
                PathAndQuery::from_static("/test.Echo/Bidi"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            ),
            send_first
        );
        let mut inbound = resp.unwrap().into_inner();
        assert_eq!(
            inbound.message().await.unwrap().unwrap().message,
            "echo: m0"
        );
        for i in 1..5 {
            req_tx
                .send(EchoRequest {
                    message: format!("m{i}"),
                })
                .await
                .unwrap();
            let r = inbound.message().await.unwrap().unwrap();
            assert_eq!(r.message, format!("echo: m{i}"));
        }
        drop(req_tx);
        // End of stream with grpc-status OK in the trailers.
        assert!(inbound.message().await.unwrap().is_none());
        let trailers = inbound.trailers().await.unwrap().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");

        // A method no rule allows is denied: gRPC clients see PermissionDenied (HTTP 403).
        grpc.ready().await.unwrap();
        let denied = grpc
            .unary(
                tonic::Request::new(EchoRequest {
                    message: "x".into(),
                }),
                PathAndQuery::from_static("/test.Echo/Secret"),
                ProstCodec::<EchoRequest, EchoReply>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

        let recs = h.records();
        let urls: Vec<&str> = recs.iter().map(|r| r.url.as_str()).collect();
        let p = origin.port();
        assert_eq!(
            urls,
            vec![
                format!("https://origin.test:{p}/test.Echo/Unary"),
                format!("https://origin.test:{p}/test.Echo/Unary"),
                format!("https://origin.test:{p}/test.Echo/Bidi"),
                format!("https://origin.test:{p}/test.Echo/Secret"),
            ]
        );
        assert!(recs.iter().all(|r| r.method == "POST"));
    });
}
