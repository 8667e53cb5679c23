//! `--pprof`: a loopback-only statistics endpoint, `GET /debug/stats`. The flag keeps the name
//! Coder's boundary uses (which serves Go pprof profiles there); ours serves plain-text process
//! figures (requests decided, open descriptors, memory, threads) that answer the question
//! pprof is used for here: is the proxy healthy and is anything leaking.

use std::sync::Arc;

use anyhow::{Context, Result};
use boundary_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Binds 127.0.0.1:port (never a public address) and serves until the task is dropped.
pub async fn serve(port: u16, proxy: Arc<Proxy>) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot bind the statistics endpoint on 127.0.0.1:{port}; choose another --pprof-port"))?;
    tracing::info!(%port, "statistics endpoint on http://127.0.0.1:{port}/debug/stats");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /debug/stats ") {
                    ("200 OK", figures(&proxy))
                } else {
                    ("404 Not Found", "try GET /debug/stats\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    }))
}

/// The figures, one `name value` per line.
fn figures(proxy: &Proxy) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    format!(
        "requests_decided {}\nopen_fds {}\nrss {}\nthreads {}\n",
        proxy.next_sequence_number(),
        fds,
        field("VmRSS:"),
        field("Threads:")
    )
}
