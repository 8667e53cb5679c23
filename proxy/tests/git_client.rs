//! git over HTTPS through the proxy: clone and push against `git http-backend` served by a
//! real origin, and a clone refused by policy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("this test needs git installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `git http-backend` as a CGI for each request under `root`.
fn git_backend(root: PathBuf) -> Handler {
    Arc::new(move |req: Request<Incoming>| {
        let root = root.clone();
        Box::pin(async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let (ctype, encoding, protocol) = (
                header("content-type"),
                header("content-encoding"),
                header("git-protocol"),
            );
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut child = tokio::process::Command::new("git")
                .arg("http-backend")
                .env_clear()
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", &method)
                .env("PATH_INFO", &path)
                .env("QUERY_STRING", &query)
                .env("CONTENT_TYPE", &ctype)
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("HTTP_CONTENT_ENCODING", &encoding)
                .env("GIT_PROTOCOL", &protocol)
                .env("REMOTE_USER", "tester")
                .env("REMOTE_ADDR", "127.0.0.1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("git http-backend");
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&body).await.unwrap();
            drop(stdin);
            let out = child.wait_with_output().await.unwrap().stdout;
            let split = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, 4))
                .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
                .expect("CGI output without a header end");
            let head = String::from_utf8_lossy(&out[..split.0]).to_string();
            let mut resp = Response::builder();
            for line in head.lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                if k.eq_ignore_ascii_case("status") {
                    let code: u16 = v.trim()[..3].parse().unwrap();
                    resp = resp.status(code);
                } else {
                    resp = resp.header(k.trim(), v.trim());
                }
            }
            resp.body(full(Bytes::copy_from_slice(&out[split.0 + split.1..])))
                .unwrap()
        })
    })
}

async fn git_via_proxy(h: &Harness, dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .arg("-c")
        .arg(format!("http.proxy={}", h.proxy_url()))
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        // What boundary gives a jailed process (docs/interop.md §4).
        .env("GIT_SSL_CAINFO", &h.ca_cert)
        .output()
        .await
        .expect("this test needs git installed")
}

#[test]
fn git_clone_and_push_through_the_proxy() {
    run(async {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let seed = w.join("seed");
        std::fs::create_dir(&seed).unwrap();
        git(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("README"), "hello from the origin\n").unwrap();
        git(&seed, &["add", "README"]);
        git(
            &seed,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        );
        let root = w.join("srv");
        std::fs::create_dir(&root).unwrap();
        git(&root, &["clone", "-q", "--bare", "../seed", "repo.git"]);
        git(
            &root.join("repo.git"),
            &["config", "http.receivepack", "true"],
        );

        let h = Harness::new(&["domain=origin.test path=/repo.git/*"]).await;
        let origin = Origin::start(Some(h.origin_tls()), Some(git_backend(root.clone()))).await;
        let url = format!("https://{ORIGIN}:{}/repo.git", origin.port());

        let out = git_via_proxy(&h, w, &["clone", "-q", &url, "copy"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let readme = std::fs::read_to_string(w.join("copy/README")).unwrap();
        assert_eq!(readme, "hello from the origin\n");

        let copy = w.join("copy");
        std::fs::write(copy.join("NEW"), "pushed\n").unwrap();
        git(&copy, &["add", "NEW"]);
        git(
            &copy,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "second",
            ],
        );
        let out = git_via_proxy(&h, &copy, &["push", "-q", "origin", "main"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::process::Command::new("git")
            .args([
                "--git-dir",
                &root.join("repo.git").display().to_string(),
                "log",
                "--oneline",
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&log.stdout).contains("second"));
        let methods: Vec<String> = h.records().iter().map(|r| r.method.clone()).collect();
        assert!(methods.contains(&"POST".to_string()), "{methods:?}");
        assert!(h.records().iter().all(|r| r.allowed));

        // Another repository path is not allowed: git reports the 403.
        let other = format!("https://{ORIGIN}:{}/secret.git", origin.port());
        let out = git_via_proxy(&h, w, &["clone", "-q", &other, "nope"]).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("403"), "{err}");
    });
}
