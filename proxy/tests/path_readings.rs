//! Encoded separators against real static file servers: with `path=/public/*`, no encoding of
//! the path may make Python's `http.server`, nginx or a Node static server (normalising like
//! serve-static on a WHATWG URL) serve `/private/secret.txt`, and the public files are still
//! served. Requests go through the real proxy as raw bytes, so no client normalises them.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "SECRET-7f3a private content";
const PUBLIC: &str = "PUBLIC-0c21 hello";

/// Paths a hostile client might send; each one reads as `/private/secret.txt` on some origin.
const CORPUS: &[&str] = &[
    "/public/..%2Fprivate%2Fsecret.txt",
    "/public/..%2fprivate/secret.txt",
    "/public/x%2F..%2F..%2Fprivate%2Fsecret.txt",
    "/public/..%5Cprivate%5Csecret.txt",
    "/public/..%5cprivate/secret.txt",
    "/public\\..\\private\\secret.txt",
    "/public/%2E%2E/private/secret.txt",
    "/public/.%2e/private/secret.txt",
    "/public/%2e%2e%2fprivate%2fsecret.txt",
    "/public/..%252Fprivate%252Fsecret.txt",
    "/public/%252E%252E/private/secret.txt",
    "/public//..//private/secret.txt",
    "/public/..;/private/secret.txt",
    "/public/..%3B/private/secret.txt",
    "/public;x/..;y/private/secret.txt",
    "/public/x/..%2F..%5C.%2E/private/secret.txt",
    "/public/%2e%2E%5Cprivate%2Fsecret.txt",
];

/// A directory tree with /public/hello.txt, /public/a b.txt and /private/secret.txt.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("public")).unwrap();
    std::fs::create_dir_all(dir.path().join("private")).unwrap();
    std::fs::write(dir.path().join("public/hello.txt"), PUBLIC).unwrap();
    std::fs::write(dir.path().join("public/a b.txt"), PUBLIC).unwrap();
    std::fs::write(dir.path().join("private/secret.txt"), SECRET).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on the port (the server process has started).
async fn wait_listening(port: u16, what: &str, child: &mut tokio::process::Child) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited before listening: {st}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// One raw HTTP/1.1 request in absolute form through the proxy; returns the whole reply.
async fn raw_get(h: &Harness, port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "GET http://{ORIGIN}:{port}{path} HTTP/1.1\r\nHost: {ORIGIN}:{port}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the corpus and the public controls against an origin on `port`; `log` is what the
/// origin wrote about the requests it handled.
async fn check_origin(name: &str, port: u16, log: impl Fn() -> String) {
    let h = Harness::new(&[&format!("domain={ORIGIN} path=/public/*")]).await;
    for path in ["/public/hello.txt", "/public/a%20b.txt"] {
        let reply = raw_get(&h, port, path).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.contains(PUBLIC),
            "{name}: the public file {path} must be served: {reply}"
        );
    }
    for path in CORPUS {
        let reply = raw_get(&h, port, path).await;
        assert!(
            !reply.contains(SECRET),
            "{name} served the private file for {path}: {reply}"
        );
    }
    // The origin's own log: it only ever handled the public requests (plus refusals of its
    // own), never a request it answered with the secret.
    let log = log();
    assert!(
        log.contains("hello.txt"),
        "{name}: the log does not show the public request: {log}"
    );
    for line in log.lines() {
        let served = line.contains("\" 200 ") || line.starts_with("SERVED ");
        assert!(
            !served
                || line.contains("hello.txt")
                || line.contains("a%20b.txt")
                || line.contains("a b.txt"),
            "{name} served something outside /public: {line}"
        );
    }
}

#[test]
fn python_http_server_never_serves_outside_public() {
    run(async {
        let root = tree();
        let port = free_port();
        let log = root.path().join("python.log");
        let mut child = tokio::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("this test needs python3");
        wait_listening(port, "python3 -m http.server", &mut child).await;
        check_origin("python http.server", port, || read(&log)).await;
    });
}

#[test]
fn nginx_never_serves_outside_public() {
    run(async {
        let root = tree();
        let port = free_port();
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().display();
        let conf = format!(
            "daemon off; master_process off; pid {t}/nginx.pid; error_log {t}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {t}/access.log;\n\
               client_body_temp_path {t}/body; proxy_temp_path {t}/proxy;\n\
               fastcgi_temp_path {t}/fcgi; uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {}; }}\n\
             }}\n",
            root.path().display()
        );
        let conf_path = tmp.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = tokio::process::Command::new("nginx")
            .arg("-p")
            .arg(tmp.path())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("this test needs nginx installed");
        wait_listening(port, "nginx", &mut child).await;
        let access = tmp.path().join("access.log");
        check_origin("nginx", port, || read(&access)).await;
    });
}

/// A static server in the style of Node's serve-static: the WHATWG URL parser (which turns
/// `\` into `/` and resolves `%2e` dot segments), `;` parameters dropped per segment,
/// `decodeURIComponent`, then `path.normalize` inside the root.
const NODE_STATIC: &str = r#"
const http = require('http'), fs = require('fs'), path = require('path');
const [root, port] = process.argv.slice(2);
http.createServer((req, res) => {
  let p;
  try {
    p = new URL(req.url, 'http://x').pathname;
    p = p.split('/').map(s => s.split(';')[0]).join('/');
    p = decodeURIComponent(p);
  } catch (e) { res.writeHead(400); return res.end('bad path'); }
  const file = path.join(root, path.normalize('/' + p));
  if (!file.startsWith(root + path.sep)) { res.writeHead(403); return res.end('outside'); }
  fs.readFile(file, (err, data) => {
    if (err) { console.log('MISS ' + p); res.writeHead(404); return res.end('not found'); }
    console.log('SERVED ' + path.relative(root, file).replace(/^/, '/'));
    res.writeHead(200); res.end(data);
  });
}).listen(Number(port), '127.0.0.1');
"#;

#[test]
fn node_static_server_never_serves_outside_public() {
    run(async {
        let root = tree();
        let port = free_port();
        let script = root.path().join("static.js");
        std::fs::write(&script, NODE_STATIC).unwrap();
        let log = root.path().join("node.log");
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .arg(root.path())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("this test needs node installed");
        wait_listening(port, "node static server", &mut child).await;
        check_origin("node static", port, || read(&log)).await;
    });
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
