//! Test harness: a private network namespace per test, a proxy in-process, real origin servers
//! on loopback (plain and TLS, HTTP/1.1 and HTTP/2) and helpers to run real curl.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundary_audit::{AuditRecord, VecSink};
use boundary_proxy::rules::Policy;
use boundary_proxy::{CertificateAuthority, Proxy, ProxyConfig};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};

pub mod lenient;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type OriginBody = UnsyncBoxBody<Bytes, BoxError>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<OriginBody>> + Send>>
        + Send
        + Sync,
>;

/// Name the origins are reached by; `--resolve` maps it (and `other.test`) to 127.0.0.1.
pub const ORIGIN: &str = "origin.test";
pub const OTHER: &str = "other.test";

/// Runs a test inside a fresh network namespace (only a loopback interface), so nothing it
/// does can reach another machine, and a name that is not overridden fails to resolve.
pub fn run<F: Future<Output = ()>>(f: F) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        panic!("these tests need root (or CAP_SYS_ADMIN) to create a network namespace: unshare(CLONE_NEWNET) failed: {e}");
    }
    let st = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("these tests need iproute2 (`ip`) to bring up loopback in the test namespace");
    assert!(st.success(), "ip link set lo up failed");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

/// A test CA for origin servers (what a real origin's public CA is to the proxy).
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test origin CA");
        let ca = p.self_signed(&key).unwrap();
        let ca_path = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Self {
            dir,
            ca_path,
            ca,
            key,
        }
    }

    /// A server config for `names`, offering `alpn`.
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// What an origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A real HTTP server on 127.0.0.1 that counts connections and records requests.
pub struct Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Set by `/sse` just before it sends its last event.
    pub sse_last_sent: Arc<AtomicBool>,
}

impl Origin {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Starts an origin; TLS when `tls` is given, with `handler` (default routes if `None`).
    pub async fn start(tls: Option<Arc<ServerConfig>>, handler: Option<Handler>) -> Origin {
        Self::start_at("127.0.0.1:0".parse().unwrap(), tls, handler).await
    }

    /// Like `start`, on a chosen address.
    pub async fn start_at(
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        handler: Option<Handler>,
    ) -> Origin {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::start_on(listener, tls, handler)
    }

    /// Like `start`, on a listener made elsewhere (in another network namespace).
    pub fn start_on(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        handler: Option<Handler>,
    ) -> Origin {
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sse_last_sent = Arc::new(AtomicBool::new(false));
        let handler = handler.unwrap_or_else(|| default_routes(sse_last_sent.clone()));
        let (c, s) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let seen = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http1().max_headers(1000);
                    builder.http2().max_header_list_size(1 << 20);
                    match tls {
                        Some(cfg) => {
                            let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            connections,
            seen,
            sse_last_sent,
        }
    }
}

pub fn full(body: impl Into<Bytes>) -> OriginBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// `/echo*`: describes the request; `/big?n=BYTES`: streams that many bytes;
/// `/upload`: counts the request body; `/sse`: five events 200 ms apart; `/ws`: WebSocket echo;
/// `/status?code=N`: that status.
pub fn default_routes(sse_last_sent: Arc<AtomicBool>) -> Handler {
    Arc::new(move |mut req: Request<Incoming>| {
        let sse_last_sent = sse_last_sent.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path == "/big" {
                let n: u64 = query_param(&req, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let stream = futures_util::stream::unfold(n, move |left| {
                    let chunk = chunk.clone();
                    async move {
                        if left == 0 {
                            return None;
                        }
                        let take = left.min(chunk.len() as u64);
                        Some((
                            Ok::<_, BoxError>(Frame::data(chunk.slice(..take as usize))),
                            left - take,
                        ))
                    }
                });
                return Response::builder()
                    .header("content-length", n.to_string())
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap();
            }
            if path == "/upload" {
                let mut body = req.into_body();
                let mut total: u64 = 0;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Some(d) = f.data_ref() {
                                total += d.len() as u64;
                            }
                        }
                        Err(e) => return Response::new(full(format!("error: {e}"))),
                    }
                }
                return Response::new(full(format!("received {total} bytes")));
            }
            if path == "/sse" {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
                tokio::spawn(async move {
                    for i in 0..5 {
                        if i == 4 {
                            sse_last_sent.store(true, Ordering::SeqCst);
                        }
                        let ev = format!("id: {i}\ndata: event {i}\n\n");
                        if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|f| (f, rx))
                });
                return Response::builder()
                    .header("content-type", "text/event-stream")
                    .header("cache-control", "no-cache")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap();
            }
            if path == "/ws" {
                let key = req
                    .headers()
                    .get("sec-websocket-key")
                    .map(|k| k.as_bytes().to_vec())
                    .unwrap_or_default();
                let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    use futures_util::{SinkExt, StreamExt};
                    let Ok(upgraded) = on_upgrade.await else {
                        return;
                    };
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            break;
                        }
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
                return Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", accept)
                    .body(full(""))
                    .unwrap();
            }
            if path == "/many-headers" {
                let mut b = Response::builder();
                for i in 0..250 {
                    b = b.header(format!("x-h-{i}"), "v".repeat(50));
                }
                return b.body(full("many\n")).unwrap();
            }
            if path == "/status" {
                let code: u16 = query_param(&req, "code")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(200);
                return Response::builder()
                    .status(code)
                    .body(full(format!("status {code}\n")))
                    .unwrap();
            }
            let mut text = format!(
                "method: {}\nuri: {}\nversion: {:?}\n",
                req.method(),
                req.uri(),
                req.version()
            );
            for (k, v) in req.headers() {
                text.push_str(&format!("header: {}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
            Response::builder()
                .header("content-type", "text/plain")
                .header("x-origin", "yes")
                .header("connection", "keep-alive, x-origin-hop")
                .header("x-origin-hop", "must-not-pass")
                .header("keep-alive", "timeout=30")
                .body(full(text))
                .unwrap()
        })
    })
}

/// The proxy under test, with its CA, audit sink and the origin PKI it trusts.
pub struct Harness {
    pub proxy: Arc<Proxy>,
    pub sink: VecSink,
    pub ca_dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub pki: Pki,
    /// The explicit listener (`serve`).
    pub addr: SocketAddr,
}

impl Harness {
    /// A proxy allowing `rules`, with `origin.test` and `other.test` resolving to 127.0.0.1.
    pub async fn new(rules: &[&str]) -> Harness {
        Self::with(rules, |_| {}).await
    }

    pub async fn with(rules: &[&str], tweak: impl FnOnce(&mut ProxyConfig)) -> Harness {
        let pki = Pki::new();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(ca_dir.path()).unwrap());
        let ca_cert = ca.cert_path().to_path_buf();
        let policy = Arc::new(Policy::parse(rules).expect("test rules parse"));
        let mut config = ProxyConfig::new(policy);
        for name in [ORIGIN, OTHER, "Mixed.Test"] {
            config
                .resolve
                .insert(name.to_ascii_lowercase(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        config.upstream_ca_file = Some(pki.ca_path.clone());
        config.connect_timeout = Duration::from_secs(2);
        config.handshake_timeout = Duration::from_secs(2);
        tweak(&mut config);
        let sink = VecSink::new();
        let proxy = Proxy::new(config, ca, Arc::new(sink.clone())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.clone().serve(listener));
        Harness {
            proxy,
            sink,
            ca_dir,
            ca_cert,
            pki,
            addr,
        }
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A listener that hands every connection to the proxy as if netfilter had redirected it
    /// from `original_dst`. Returns the listener's address.
    pub async fn transparent(&self, original_dst: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.proxy.add_listen_addr(addr);
        let proxy = self.proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(proxy.clone().handle_connection(s, Some(original_dst)));
            }
        });
        addr
    }

    pub fn records(&self) -> Vec<AuditRecord> {
        self.sink.records()
    }

    /// Origin TLS config for `origin.test` (h2 and http/1.1).
    pub fn origin_tls(&self) -> Arc<ServerConfig> {
        self.pki
            .server_config(&[ORIGIN, OTHER], &[b"h2", b"http/1.1"])
    }

    /// A rustls client config trusting the proxy's CA.
    pub fn client_tls(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca_cert).unwrap();
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// TLS to the proxy through `addr` (a transparent listener), as a client of `sni`.
    pub async fn tls_connect(
        &self,
        addr: SocketAddr,
        sni: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        tokio_rustls::TlsConnector::from(self.client_tls(alpn))
            .connect(name, tcp)
            .await
            .unwrap()
    }
}

/// Output of one curl run.
#[derive(Debug)]
pub struct Curl {
    /// One status per transfer, in order.
    pub statuses: Vec<u16>,
    pub body: String,
    pub stderr: String,
}

impl Curl {
    pub fn status(&self) -> u16 {
        self.statuses[0]
    }
}

/// Runs real curl with `args` (plus `-sS` and a status marker per transfer).
pub async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n@@STATUS %{http_code}@@\n",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("these tests need curl installed");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut statuses = Vec::new();
    let mut body = String::new();
    for part in stdout.split("@@STATUS ") {
        if let Some((code, rest)) = part.split_once("@@\n") {
            statuses.push(code.trim().parse().unwrap_or(0));
            body.push_str(rest);
        } else {
            body.push_str(part);
        }
    }
    Curl {
        statuses,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}
