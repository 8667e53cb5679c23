//! Proxy cost on loopback, direct vs through the proxy (HTTPS via CONNECT, TLS intercepted):
//! requests/s and p50/p99 latency of small requests on keep-alive connections, MB/s of a large
//! download, and the time to mint a leaf for a new host.
//!
//! Run: `cargo bench -p boundary-proxy --bench proxy` (release build, one run, prints a
//! Markdown table). Everything stays on 127.0.0.1; names resolve through `--resolve`.
//!
//! `PROXY_BENCH_REQUESTS=N` runs only N small requests through the proxy on one keep-alive
//! connection (after one warm-up request) and prints nothing else: for counting instructions
//! per request with callgrind, whose figures repeat whatever else the machine runs. Two runs
//! with different N, the difference of their totals divided by the difference of N:
//! `valgrind --tool=callgrind target/release/deps/proxy-* --bench` (see BENCHMARKS.md).
//! With `PROXY_BENCH_DIRECT=1` the requests go straight to the origin: the difference is
//! what the proxy adds.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundary_audit::NullSink;
use boundary_proxy::rules::Policy;
use boundary_proxy::{CertificateAuthority, Proxy, ProxyConfig};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
const HOST: &str = "origin.bench";
const CONNS: usize = 8;
const REQUESTS_PER_CONN: usize = 2_500;
const SEQUENTIAL_REQUESTS: usize = 5_000;
const DOWNLOAD: u64 = 1 << 30;

struct Origin {
    addr: SocketAddr,
    ca_pem: String,
}

async fn start_origin() -> Origin {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec![HOST.to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body: UnsyncBoxBody<Bytes, BoxError> = if req.uri().path() == "/big" {
                        let chunk = Bytes::from(vec![b'x'; 256 * 1024]);
                        let s = futures_util::stream::unfold(DOWNLOAD, move |left| {
                            let chunk = chunk.clone();
                            async move {
                                (left > 0).then(|| {
                                    let n = left.min(chunk.len() as u64);
                                    (
                                        Ok::<_, BoxError>(Frame::data(chunk.slice(..n as usize))),
                                        left - n,
                                    )
                                })
                            }
                        });
                        StreamBody::new(s).boxed_unsync()
                    } else {
                        Full::new(Bytes::from_static(b"hello, bench\n"))
                            .map_err(|n| match n {})
                            .boxed_unsync()
                    };
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Origin {
        addr,
        ca_pem: ca.pem(),
    }
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[derive(Clone)]
struct Route {
    /// Some(proxy) = CONNECT through it; None = straight to the origin.
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

async fn open(route: &Route) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let mut tcp = TcpStream::connect(route.proxy.unwrap_or(route.origin))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    if route.proxy.is_some() {
        let port = route.origin.port();
        tcp.write_all(
            format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
    }
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let tls = tokio_rustls::TlsConnector::from(route.tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn get(
    tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    port: u16,
    path: &str,
) -> u64 {
    tx.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", format!("{HOST}:{port}"))
        .body(Empty::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            n += d.len() as u64;
        }
    }
    n
}

struct Latency {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Process CPU time (all threads: client, proxy, origin) per request.
    cpu_per_req: Duration,
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

async fn small_requests(route: &Route, conns: usize, per_conn: usize) -> Latency {
    let mut txs = Vec::new();
    for _ in 0..conns {
        let mut tx = open(route).await;
        get(&mut tx, route.origin.port(), "/small").await; // warm
        txs.push(tx);
    }
    let start = Instant::now();
    let cpu = cpu_time();
    let tasks: Vec<_> = txs
        .into_iter()
        .map(|mut tx| {
            let port = route.origin.port();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_conn);
                for _ in 0..per_conn {
                    let t = Instant::now();
                    get(&mut tx, port, "/small").await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_per_req = (cpu_time() - cpu) / all.len() as u32;
    all.sort();
    Latency {
        rps: all.len() as f64 / secs,
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
        cpu_per_req,
    }
}

/// MB/s and process CPU seconds per GB.
async fn download(route: &Route) -> (f64, f64) {
    let mut tx = open(route).await;
    let start = Instant::now();
    let cpu = cpu_time();
    let n = get(&mut tx, route.origin.port(), "/big").await;
    assert_eq!(n, DOWNLOAD);
    let cpu = (cpu_time() - cpu).as_secs_f64();
    (
        n as f64 / 1e6 / start.elapsed().as_secs_f64(),
        cpu / (n as f64 / 1e9),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run passes nothing and
    // should stay quick, so only the real bench run does the work.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let origin = start_origin().await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("origin-ca.pem");
        std::fs::write(&ca_file, &origin.ca_pem).unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir.path().join("ca")).unwrap());
        let mut config = ProxyConfig::new(Arc::new(
            Policy::parse(&[format!("domain={HOST}")]).unwrap(),
        ));
        config
            .resolve
            .insert(HOST.into(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        config.upstream_ca_file = Some(ca_file);
        let proxy = Proxy::new(config, ca.clone(), Arc::new(NullSink)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        tokio::spawn(proxy.serve(listener));

        let direct = Route {
            proxy: None,
            origin: origin.addr,
            tls: client_tls(&origin.ca_pem),
        };
        let proxied = Route {
            proxy: Some(proxy_addr),
            origin: origin.addr,
            tls: client_tls(&std::fs::read_to_string(ca.cert_path()).unwrap()),
        };

        if let Some(n) = std::env::var("PROXY_BENCH_REQUESTS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            // `PROXY_BENCH_DIRECT=1`: the same requests straight to the origin, so the
            // difference of the two counts is the proxy's part.
            let (route, how) = if std::env::var_os("PROXY_BENCH_DIRECT").is_some() {
                (&direct, "straight to the origin")
            } else {
                (&proxied, "through the proxy")
            };
            let p = small_requests(route, 1, n).await;
            println!("{n} requests {how}, {:.0}/s", p.rps);
            return;
        }
        let d1 = small_requests(&direct, 1, SEQUENTIAL_REQUESTS).await;
        let p1 = small_requests(&proxied, 1, SEQUENTIAL_REQUESTS).await;
        let dn = small_requests(&direct, CONNS, REQUESTS_PER_CONN).await;
        let pn = small_requests(&proxied, CONNS, REQUESTS_PER_CONN).await;
        let dd = download(&direct).await;
        let pd = download(&proxied).await;

        let mut mints = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            ca.mint(&format!("host{i}.bench")).unwrap();
            mints.push(t.elapsed());
        }
        mints.sort();
        let t = Instant::now();
        for _ in 0..10_000 {
            ca.server_config("host-cached.bench").unwrap();
        }
        let cached = t.elapsed() / 10_000;

        println!("| measurement | direct | through proxy | ratio / added |");
        println!("|---|---|---|---|");
        for (name, d, p) in [
            ("small HTTPS GET, 1 keep-alive conn", &d1, &p1),
            ("small HTTPS GET, 8 keep-alive conns", &dn, &pn),
        ] {
            println!(
                "| {name}: requests/s | {:.0} | {:.0} | {:.2} |",
                d.rps,
                p.rps,
                p.rps / d.rps
            );
            println!(
                "| {name}: p50 ms | {} | {} | +{} |",
                ms(d.p50),
                ms(p.p50),
                ms(p.p50.saturating_sub(d.p50))
            );
            println!(
                "| {name}: p99 ms | {} | {} | +{} |",
                ms(d.p99),
                ms(p.p99),
                ms(p.p99.saturating_sub(d.p99))
            );
            println!(
                "| {name}: process CPU µs/request | {:.1} | {:.1} | +{:.1} |",
                d.cpu_per_req.as_secs_f64() * 1e6,
                p.cpu_per_req.as_secs_f64() * 1e6,
                (p.cpu_per_req.as_secs_f64() - d.cpu_per_req.as_secs_f64()) * 1e6
            );
        }
        let ((dd, dcpu), (pd, pcpu)) = (dd, pd);
        println!(
            "| 1 GiB HTTPS download MB/s | {dd:.0} | {pd:.0} | {:.2} |",
            pd / dd
        );
        println!(
            "| 1 GiB HTTPS download: process CPU s/GB | {dcpu:.2} | {pcpu:.2} | +{:.2} |",
            pcpu - dcpu
        );
        println!(
            "| cores available | {} | | |",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        println!(
            "| leaf mint (new host) ms, p50 / p99 | | {} / {} | |",
            ms(mints[mints.len() / 2]),
            ms(mints[mints.len() * 99 / 100])
        );
        println!(
            "| cached leaf lookup µs | | {:.2} | |",
            cached.as_secs_f64() * 1e6
        );
    });
}
