//! An HTTPS origin for the soak test and the end-to-end benchmark, on 127.0.0.1 only.
//!
//! Makes a CA of its own and a leaf for `--name` (written as `ca.pem` in `--dir`, for
//! `--upstream-ca-file`), serves HTTP/1.1 and HTTP/2 (ALPN) over TLS, and prints
//! `READY <port>` once listening. Routes: `/small` answers [`SMALL_BODY`]; `/bytes/N` streams N
//! bytes; `/ws` is a WebSocket echo; anything else is 404. A connection with no traffic for
//! `--idle-close` seconds is closed gracefully, so a proxy's pooled upstream connections go
//! away once the load stops and its descriptor count can come back to where it started.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

/// Body of `/small` (13 bytes).
const SMALL_BODY: &[u8] = b"ok-small-body";
/// Chunk size of `/bytes/N` bodies.
const CHUNK: usize = 256 * 1024;

#[derive(Parser, Debug)]
struct Args {
    /// Directory for ca.pem.
    #[arg(long)]
    dir: PathBuf,
    /// Name the leaf certificate is for.
    #[arg(long, default_value = "bench.test")]
    name: String,
    /// Port to listen on (0 = any).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Close connections idle this many seconds.
    #[arg(long, default_value_t = 5)]
    idle_close: u64,
}

type Body = BoxBody<Bytes, Infallible>;

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let tls = Arc::new(tls_config(&args)?);
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("bind 127.0.0.1")?;
    println!("READY {}", listener.local_addr()?.port());
    let idle = Duration::from_secs(args.idle_close.max(1));
    let start = Instant::now();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
        tokio::spawn(async move {
            let last = Arc::new(AtomicU64::new(0));
            let io = Tracked {
                inner: tcp,
                last: last.clone(),
                start,
            };
            let Ok(stream) = acceptor.accept(io).await else {
                return;
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                hyper::service::service_fn(handle),
            );
            tokio::pin!(conn);
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = tick.tick() => {
                        let quiet = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                        if !closing && quiet > idle.as_millis() as u64 {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
}

fn tls_config(args: &Args) -> Result<rustls::ServerConfig> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "boundary bench upstream CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let mut leaf_params = rcgen::CertificateParams::new(vec![args.name.clone()])?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, args.name.clone());
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
    std::fs::create_dir_all(&args.dir)?;
    std::fs::write(args.dir.join("ca.pem"), ca.pem()).context("write ca.pem")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/small" {
        return Ok(Response::new(
            Full::new(Bytes::from_static(SMALL_BODY)).boxed(),
        ));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let Ok(total) = n.parse::<usize>() else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let frames = (0..total.div_ceil(CHUNK)).map(move |i| {
            let len = (total - i * CHUNK).min(CHUNK);
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))));
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, total.into());
        return Ok(resp);
    }
    if path == "/ws" {
        return Ok(websocket(req));
    }
    Ok(status(StatusCode::NOT_FOUND))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = code;
    r
}

/// Answers the upgrade and echoes every text or binary message until the peer closes.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(StatusCode::BAD_REQUEST);
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut r = status(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, "websocket".parse().unwrap());
    h.insert(http::header::CONNECTION, "Upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    r
}

/// A stream that notes when it last moved bytes (milliseconds since `start`).
struct Tracked<S> {
    inner: S,
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
