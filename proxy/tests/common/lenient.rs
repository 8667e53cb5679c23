//! A deliberately lenient origin, written the way careless servers parse HTTP/1.1: it accepts
//! bare LF line ends, ignores the body of GET, HEAD, OPTIONS and TRACE (so any body bytes are
//! read as the next request), honours method and path override headers, answers `101` to any
//! `Upgrade` (and to any path containing `/switch`) and then keeps executing what it reads as
//! requests, and answers a path containing `/early` at once with 401 without reading its body
//! (stopping after the answer when the request says `Connection: close`, as Python's
//! `http.server` does). It records every request it
//! "executed", so a test can check that nothing ran that the proxy did not decide.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The recording origin on 127.0.0.1.
pub struct Lenient {
    pub addr: SocketAddr,
    /// `METHOD PATH` of every executed request, after overrides, in order.
    pub executed: Arc<Mutex<Vec<String>>>,
    /// Connections that hold unread bytes or are working on them.
    busy: Arc<AtomicUsize>,
}

impl Lenient {
    pub async fn start() -> Lenient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let executed = Arc::new(Mutex::new(Vec::new()));
        let busy = Arc::new(AtomicUsize::new(0));
        let (ex, b) = (executed.clone(), busy.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, ex.clone(), b.clone()));
            }
        });
        Lenient {
            addr,
            executed,
            busy,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What the origin executed, once every connection has read and processed all the bytes
    /// it was sent (so a request hidden in a body has had its chance to run).
    pub async fn settled(&self) -> Vec<String> {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.busy.load(Ordering::SeqCst) == 0 {
                break;
            }
        }
        self.executed.lock().unwrap().clone()
    }
}

/// One connection: parse, execute, answer, until EOF.
async fn serve(s: TcpStream, executed: Arc<Mutex<Vec<String>>>, busy: Arc<AtomicUsize>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut s = s;
    busy.fetch_add(1, Ordering::SeqCst);
    loop {
        // Take whatever is there without waiting; only when nothing is, count as idle.
        let mut chunk = [0u8; 8192];
        match s.try_read(&mut chunk) {
            Ok(0) => {
                while let Some(consumed) = execute_one(&buf, &executed, &mut s).await {
                    buf.drain(..consumed);
                }
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(consumed) = execute_one(&buf, &executed, &mut s).await {
                    buf.drain(..consumed);
                    continue;
                }
                busy.fetch_sub(1, Ordering::SeqCst);
                let ready = s.readable().await;
                busy.fetch_add(1, Ordering::SeqCst);
                if ready.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    busy.fetch_sub(1, Ordering::SeqCst);
}

/// Executes the first complete request in `buf`; returns how many bytes it used.
async fn execute_one(
    buf: &[u8],
    executed: &Mutex<Vec<String>>,
    s: &mut TcpStream,
) -> Option<usize> {
    let head_end = find(buf, b"\n\r\n")
        .map(|i| i + 3)
        .or_else(|| find(buf, b"\n\n").map(|i| i + 2))?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next()?.to_string();
    let mut parts = request_line.split_whitespace();
    let mut method = parts.next().unwrap_or("").to_string();
    let mut path = parts.next().unwrap_or("").to_string();
    let (mut length, mut chunked, mut upgrade, mut close) = (0usize, false, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        match name.as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "upgrade" => upgrade = Some(value),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "x-http-method-override" | "x-http-method" | "x-method-override" => method = value,
            "x-original-url" | "x-rewrite-url" => path = value,
            _ => {}
        }
    }
    let mut used = head_end;
    let bodyless = ["GET", "HEAD", "OPTIONS", "TRACE"].contains(&method.as_str());
    let early = path.contains("/early");
    if !bodyless && !early {
        if chunked {
            used += chunked_len(&buf[head_end..])?;
        } else {
            if buf.len() < head_end + length {
                return None;
            }
            used += length;
        }
    }
    executed.lock().unwrap().push(format!("{method} {path}"));
    if path.contains("/switch") {
        upgrade.get_or_insert_with(|| "made-up".to_string());
    }
    let answer = match (&upgrade, method.as_str()) {
        (Some(proto), _) => {
            format!("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {proto}\r\n\r\n")
        }
        (None, "HEAD") => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_string(),
        _ if early => "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno".to_string(),
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
    };
    let _ = s.write_all(answer.as_bytes()).await;
    if close {
        // Answered; nothing after it on this connection is read as a request.
        let _ = s.shutdown().await;
        return Some(buf.len());
    }
    Some(used)
}

/// Length of a chunked body at the start of `b` (lenient: bare LF, extensions ignored).
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let eol = find(&b[at..], b"\n")? + at;
        let line = String::from_utf8_lossy(&b[at..eol]);
        let size_text = line
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let size = usize::from_str_radix(&size_text, 16).unwrap_or(0);
        at = eol + 1;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let eol = find(&b[at..], b"\n")? + at;
                let empty = b[at..eol].iter().all(|c| *c == b'\r');
                at = eol + 1;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size;
        if b.len() < at {
            return None;
        }
        let eol = find(&b[at..], b"\n")? + at;
        at = eol + 1;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The executed requests that no rule allows (the tests hide them under `/forbidden/`).
pub fn forbidden(executed: &[String]) -> Vec<&String> {
    executed
        .iter()
        .filter(|e| e.contains("/forbidden/"))
        .collect()
}

/// Sends `bytes` on a fresh connection to `addr` (the proxy) and returns what comes back until
/// the proxy closes the connection or stays quiet for a moment.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_string()
}
