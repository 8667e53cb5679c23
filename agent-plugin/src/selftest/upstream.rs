//! The selftest's embedded upstream: HTTP and HTTPS on loopback where the proxy runs (the far
//! host's near namespace, if there is one), with a CA of its own that the proxy is told to
//! trust (`--upstream-ca-file`). It answers every request with [`MARKER`] and the path.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use boundary_farhost::FarHost;
use boundary_proxy::CertificateAuthority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HOST, MARKER};

/// A running upstream; stops when dropped.
pub(super) struct Upstream {
    pub http_port: u16,
    pub https_port: u16,
    pub ca: CertificateAuthority,
    _rt: tokio::runtime::Runtime,
}

impl Upstream {
    /// Creates the CA under `dir` and starts both listeners.
    pub(super) fn start(dir: &Path, far: Option<&FarHost>) -> Result<Upstream> {
        let ca = CertificateAuthority::load_or_create(&dir.join("upstream-ca"))
            .context("creating the selftest upstream's CA")?;
        let mut tls = ca
            .mint(HOST)
            .context("minting the selftest upstream's certificate")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let bind = || -> std::io::Result<(TcpListener, TcpListener)> {
            Ok((
                TcpListener::bind("127.0.0.1:0")?,
                TcpListener::bind("127.0.0.1:0")?,
            ))
        };
        let (http_l, https_l) = match far {
            Some(f) => f.in_near(bind)??,
            None => bind()?,
        };
        let http_port = http_l.local_addr()?.port();
        let https_port = https_l.local_addr()?.port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the selftest's runtime")?;
        let _g = rt.enter();
        http_l.set_nonblocking(true)?;
        https_l.set_nonblocking(true)?;
        let http_l = tokio::net::TcpListener::from_std(http_l)?;
        let https_l = tokio::net::TcpListener::from_std(https_l)?;
        rt.spawn(async move {
            while let Ok((s, _)) = http_l.accept().await {
                tokio::spawn(answer(s));
            }
        });
        rt.spawn(async move {
            while let Ok((s, _)) = https_l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        answer(tls).await;
                    }
                });
            }
        });
        drop(_g);
        Ok(Upstream {
            http_port,
            https_port,
            ca,
            _rt: rt,
        })
    }
}

/// Answers one HTTP/1.1 request with the marker and the path, then closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let body = format!("{MARKER} {path}\n");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}
