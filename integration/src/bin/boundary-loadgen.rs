//! Load client for the soak test and the end-to-end benchmark; runs inside a jail or directly.
//!
//! Speaks HTTPS to `--name`:`--port` (HTTP/1.1 keep-alive, HTTP/2, WebSocket), trusting the CA
//! in `--ca` or `SSL_CERT_FILE` (what boundary sets in the jail). The TCP connection goes to
//! `--addr` when given, through `HTTPS_PROXY` with CONNECT when that is set (landjail,
//! mitmproxy), else to the name as resolved (inside an nsjail that is the stub's answer, which
//! the jail redirects to the proxy). Every mode prints one JSON object on stdout; errors are
//! counted and the first few are quoted, so the caller decides what is acceptable.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// What `/small` answers (see boundary-bench-upstream).
const SMALL_BODY: &[u8] = b"ok-small-body";

#[derive(Parser, Debug)]
struct Args {
    /// Origin name (SNI, Host, CONNECT target).
    #[arg(long, default_value = "bench.test")]
    name: String,
    /// Origin port.
    #[arg(long)]
    port: u16,
    /// Dial this IP instead of resolving the name (direct runs).
    #[arg(long)]
    addr: Option<String>,
    /// CONNECT to this authority instead of NAME:PORT (a proxy that cannot resolve NAME).
    #[arg(long)]
    connect_authority: Option<String>,
    /// PEM trust anchors; default $SSL_CERT_FILE.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Mixed load: CONNS connections held open at once, OPS operations in all.
    Soak {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 200_000)]
        ops: usize,
    },
    /// Small requests on keep-alive connections: requests/s, p50, p99.
    Rps {
        #[arg(long, default_value_t = 8)]
        conns: usize,
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
    },
    /// One large download: MB/s.
    Download {
        #[arg(long, default_value_t = 1 << 30)]
        bytes: usize,
    },
    /// New TLS connection per request: connections/s.
    Connect {
        #[arg(long, default_value_t = 4)]
        conc: usize,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Opens CONNS connections (one request each), prints a line, holds until FILE exists.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// h1 (HTTP/1.1 keep-alive) or h2.
        #[arg(long, default_value = "h1")]
        proto: String,
        #[arg(long)]
        hold_file: std::path::PathBuf,
    },
}

/// How to reach the origin.
struct Target {
    name: String,
    port: u16,
    addr: Option<String>,
    proxy: Option<String>,
    authority: String,
    h1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(run(args))?;
    println!("{out}");
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value> {
    let ca = match &args.ca {
        Some(p) => p.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(Into::into)
            .context("no --ca and no SSL_CERT_FILE: which CA should the client trust?")?,
    };
    let pem = std::fs::read(&ca).with_context(|| format!("read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    let make = |alpn: &[&[u8]]| {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    let proxy = ["HTTPS_PROXY", "https_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .map(|v| {
            let v = v.trim_end_matches('/');
            v.strip_prefix("http://").unwrap_or(v).to_string()
        });
    let t = Arc::new(Target {
        authority: args
            .connect_authority
            .clone()
            .unwrap_or_else(|| format!("{}:{}", args.name, args.port)),
        name: args.name.clone(),
        port: args.port,
        addr: args.addr.clone(),
        proxy,
        h1: make(&[b"http/1.1"]),
        h2: make(&[b"h2"]),
    });
    match args.mode {
        Mode::Soak { conns, ops } => soak(t, conns, ops).await,
        Mode::Rps { conns, requests } => rps(t, conns, requests).await,
        Mode::Download { bytes } => download(t, bytes).await,
        Mode::Connect { conc, count } => connect(t, conc, count).await,
        Mode::Idle {
            conns,
            proto,
            hold_file,
        } => idle(t, conns, &proto, hold_file).await,
    }
}

impl Target {
    async fn tcp(&self) -> Result<TcpStream> {
        let tcp = if let Some(proxy) = &self.proxy {
            let mut s = TcpStream::connect(proxy.as_str())
                .await
                .with_context(|| format!("connect to proxy {proxy}"))?;
            let req = format!(
                "CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n",
                a = self.authority
            );
            s.write_all(req.as_bytes()).await?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).await? == 0 || head.len() > 8192 {
                    bail!("proxy closed during CONNECT");
                }
                head.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&head);
            if !line.starts_with("HTTP/1.1 200") && !line.starts_with("HTTP/1.0 200") {
                bail!("CONNECT refused: {}", line.lines().next().unwrap_or(""));
            }
            s
        } else if let Some(a) = &self.addr {
            TcpStream::connect((a.as_str(), self.port)).await?
        } else {
            TcpStream::connect((self.name.as_str(), self.port)).await?
        };
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    async fn tls(&self, h2: bool) -> Result<TlsStream<TcpStream>> {
        let tcp = self.tcp().await?;
        let name = ServerName::try_from(self.name.clone())?;
        let c = if h2 { &self.h2 } else { &self.h1 };
        c.connect(name, tcp).await.context("TLS handshake")
    }

    async fn h1(&self) -> Result<H1> {
        let io = TokioIo::new(self.tls(false).await?);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    async fn h2(&self) -> Result<H2> {
        let io = TokioIo::new(self.tls(true).await?);
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    fn request(&self, path: &str, absolute: bool) -> Request<Empty<Bytes>> {
        let uri = if absolute {
            format!("https://{}:{}{}", self.name, self.port, path)
        } else {
            path.to_string()
        };
        let mut b = Request::get(uri);
        if !absolute {
            b = b.header(http::header::HOST, format!("{}:{}", self.name, self.port));
        }
        b.body(Empty::new()).expect("valid request")
    }
}

/// Sends one GET and returns (status, body).
async fn get_h1(send: &mut H1, req: Request<Empty<Bytes>>) -> Result<(u16, Bytes)> {
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn get_h2(send: &mut H2, req: Request<Empty<Bytes>>) -> Result<(u16, Bytes)> {
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Per-run counters of the soak mode.
#[derive(Default)]
struct Tally {
    h1_ok: AtomicU64,
    h2_ok: AtomicU64,
    deny_ok: AtomicU64,
    ws_upgrades: AtomicU64,
    ws_messages_ok: AtomicU64,
    answered: AtomicU64,
    wrong: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut v = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 10 {
            v.push(what);
        }
    }
    fn check(&self, ok: bool, counter: &AtomicU64, what: impl FnOnce() -> String) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if ok {
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            self.wrong.fetch_add(1, Ordering::Relaxed);
            self.error(what());
        }
    }
}

/// The soak mix, by connection index modulo 10: 0-3 HTTP/1.1 allowed, 4-5 HTTP/2 allowed
/// (4 streams at a time), 6-7 WebSocket (upgrade, then messages), 8-9 HTTP/1.1 denied.
async fn soak(t: Arc<Target>, conns: usize, ops: usize) -> Result<serde_json::Value> {
    let tally = Arc::new(Tally::default());
    let barrier = Arc::new(tokio::sync::Barrier::new(conns));
    let per = ops / conns;
    let extra = ops % conns;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (t, tally, barrier) = (t.clone(), tally.clone(), barrier.clone());
        let n = per + usize::from(i < extra);
        tasks.push(tokio::spawn(async move {
            soak_worker(i % 10, &t, n, &tally, &barrier).await
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let errs = tally.first_errors.lock().unwrap().clone();
    Ok(json!({
        "conns": conns, "ops": ops, "seconds": secs,
        "h1_ok": g(&tally.h1_ok), "h2_ok": g(&tally.h2_ok), "deny_ok": g(&tally.deny_ok),
        "ws_upgrades": g(&tally.ws_upgrades), "ws_messages_ok": g(&tally.ws_messages_ok),
        "answered": g(&tally.answered), "wrong": g(&tally.wrong), "errors": g(&tally.errors),
        "reconnects": g(&tally.reconnects), "first_errors": errs,
    }))
}

async fn soak_worker(
    kind: usize,
    t: &Target,
    n: usize,
    tally: &Tally,
    barrier: &tokio::sync::Barrier,
) {
    match kind {
        0..=3 | 8..=9 => {
            let deny = kind >= 8;
            let conn = t.h1().await;
            barrier.wait().await;
            let mut send = match conn {
                Ok(s) => s,
                Err(e) => return tally.error(format!("h1 connect: {e:#}")),
            };
            let (path, want, counter) = if deny {
                ("/denied", 403, &tally.deny_ok)
            } else {
                ("/small", 200, &tally.h1_ok)
            };
            for _ in 0..n {
                if send.is_closed() {
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    send = match t.h1().await {
                        Ok(s) => s,
                        Err(e) => return tally.error(format!("h1 reconnect: {e:#}")),
                    };
                }
                match get_h1(&mut send, t.request(path, false)).await {
                    Ok((status, body)) => tally.check(
                        status == want && (deny || body.as_ref() == SMALL_BODY),
                        counter,
                        || format!("{path}: status {status}, {} body bytes", body.len()),
                    ),
                    Err(e) => tally.error(format!("{path}: {e:#}")),
                }
            }
        }
        4..=5 => {
            let conn = t.h2().await;
            barrier.wait().await;
            let send = match conn {
                Ok(s) => s,
                Err(e) => return tally.error(format!("h2 connect: {e:#}")),
            };
            let streams = 4;
            let jobs = (0..streams).map(|s| {
                let mut send = send.clone();
                let count = n / streams + usize::from(s < n % streams);
                async move {
                    for _ in 0..count {
                        match get_h2(&mut send, t.request("/small", true)).await {
                            Ok((status, body)) => tally.check(
                                status == 200 && body.as_ref() == SMALL_BODY,
                                &tally.h2_ok,
                                || format!("h2 /small: status {status}, {} body bytes", body.len()),
                            ),
                            Err(e) => tally.error(format!("h2 /small: {e:#}")),
                        }
                    }
                }
            });
            futures_util::future::join_all(jobs).await;
        }
        _ => {
            let conn = async {
                let tls = t.tls(false).await?;
                let url = format!("wss://{}:{}/ws", t.name, t.port);
                let (ws, _) = tokio_tungstenite::client_async(url, tls).await?;
                anyhow::Ok(ws)
            }
            .await;
            barrier.wait().await;
            let mut ws = match conn {
                Ok(ws) => ws,
                Err(e) => return tally.error(format!("ws connect: {e:#}")),
            };
            tally.answered.fetch_add(1, Ordering::Relaxed);
            tally.ws_upgrades.fetch_add(1, Ordering::Relaxed);
            for i in 1..n {
                let text = format!("message {i}");
                if let Err(e) = ws.send(Message::text(text.clone())).await {
                    return tally.error(format!("ws send: {e}"));
                }
                match ws.next().await {
                    Some(Ok(Message::Text(got))) if got.as_str() == text => {
                        tally.ws_messages_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        tally.wrong.fetch_add(1, Ordering::Relaxed);
                        return tally.error(format!("ws echo: {other:?}"));
                    }
                }
            }
            let _ = ws.close(None).await;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn rps(t: Arc<Target>, conns: usize, requests: usize) -> Result<serde_json::Value> {
    let errors = Arc::new(AtomicU64::new(0));
    let mut sends = Vec::new();
    for _ in 0..conns {
        let mut s = t.h1().await?;
        // Warm-up: the first request sets up the proxy's upstream connection.
        get_h1(&mut s, t.request("/small", false)).await?;
        sends.push(s);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut send) in sends.into_iter().enumerate() {
        let (t, errors) = (t.clone(), errors.clone());
        let n = requests / conns + usize::from(i < requests % conns);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                match get_h1(&mut send, t.request("/small", false)).await {
                    Ok((200, b)) if b.as_ref() == SMALL_BODY => {
                        lat.push(t0.elapsed().as_micros() as u64)
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for task in tasks {
        all.extend(task.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(json!({
        "requests": requests, "conns": conns, "seconds": secs,
        "rps": all.len() as f64 / secs,
        "p50_us": percentile(&all, 0.50), "p99_us": percentile(&all, 0.99),
        "errors": errors.load(Ordering::Relaxed),
    }))
}

async fn download(t: Arc<Target>, bytes: usize) -> Result<serde_json::Value> {
    let mut send = t.h1().await?;
    get_h1(&mut send, t.request("/small", false)).await?;
    let start = Instant::now();
    send.ready().await?;
    let resp = send
        .send_request(t.request(&format!("/bytes/{bytes}"), false))
        .await?;
    if resp.status() != 200 {
        bail!("download: status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            got += data.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if got != bytes {
        bail!("download: got {got} of {bytes} bytes");
    }
    Ok(json!({ "bytes": bytes, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs }))
}

async fn connect(t: Arc<Target>, conc: usize, count: usize) -> Result<serde_json::Value> {
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conc {
        let (t, errors) = (t.clone(), errors.clone());
        let n = count / conc + usize::from(i < count % conc);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let ok = async {
                    let mut s = t.h1().await?;
                    let (status, _) = get_h1(&mut s, t.request("/small", false)).await?;
                    anyhow::Ok(status == 200)
                }
                .await;
                if !matches!(ok, Ok(true)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    Ok(json!({
        "count": count, "seconds": secs, "errors": errors,
        "conns_per_s": (count as u64 - errors) as f64 / secs,
    }))
}

async fn idle(
    t: Arc<Target>,
    conns: usize,
    proto: &str,
    hold: std::path::PathBuf,
) -> Result<serde_json::Value> {
    if proto != "h1" && proto != "h2" {
        bail!("--proto must be h1 or h2, not {proto:?}");
    }
    // Each connection's sender: the connection task runs while it lives.
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(conns);
    let mut errors = 0u64;
    for _ in 0..conns {
        let req = t.request("/small", false);
        let one = if proto == "h1" {
            match t.h1().await {
                Ok(mut s) => get_h1(&mut s, req)
                    .await
                    .map(|r| (r, Box::new(s) as Box<_>)),
                Err(e) => Err(e),
            }
        } else {
            match t.h2().await {
                Ok(mut s) => get_h2(&mut s, req)
                    .await
                    .map(|r| (r, Box::new(s) as Box<_>)),
                Err(e) => Err(e),
            }
        };
        match one {
            Ok(((200, _), s)) => held.push(s),
            _ => errors += 1,
        }
    }
    eprintln!("IDLE_READY {}", held.len());
    let deadline = Instant::now() + Duration::from_secs(300);
    while !hold.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({ "conns": held.len(), "errors": errors }))
}
