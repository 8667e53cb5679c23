//! Clients other than curl: Python's urllib (with strict X.509 verification, which rejects
//! sloppy certificates) and Node's https, through the proxy to real origins.

mod common;

use common::*;

fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

async fn run_client(cmd: &str, args: &[String]) -> (String, String) {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("this test needs {cmd} installed: {e}"));
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn python_urllib_with_strict_verification() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let plain = Origin::start(None, None).await;
        let ca = h.ca_cert.display().to_string();
        for (url, want) in [
            (format!("https://{ORIGIN}:{}/echo", tls.port()), "200"),
            (format!("http://{ORIGIN}:{}/echo", plain.port()), "200"),
            (format!("https://{ORIGIN}:{}/secret", tls.port()), "403"),
        ] {
            let (stdout, stderr) = run_client(
                "python3",
                &[script("fetch.py"), h.proxy_url(), ca.clone(), url.clone()],
            )
            .await;
            assert!(
                stdout.starts_with(want),
                "{url}: stdout {stdout:?} stderr {stderr}"
            );
            if want == "403" {
                assert!(stdout.contains("Request Blocked by Boundary"));
            }
        }
    });
}

#[test]
fn node_https_through_connect() {
    run(async {
        let h = Harness::new(&["domain=origin.test path=/echo"]).await;
        let tls = Origin::start(Some(h.origin_tls()), None).await;
        let ca = h.ca_cert.display().to_string();
        for (path, want) in [("/echo", "200"), ("/secret", "403")] {
            let (stdout, stderr) = run_client(
                "node",
                &[
                    script("fetch.js"),
                    "127.0.0.1".into(),
                    h.addr.port().to_string(),
                    ORIGIN.into(),
                    tls.port().to_string(),
                    path.into(),
                    ca.clone(),
                ],
            )
            .await;
            assert!(
                stdout.starts_with(want),
                "{path}: stdout {stdout:?} stderr {stderr}"
            );
        }
        // A refused CONNECT: Node sees the 403 on the CONNECT itself.
        let (stdout, stderr) = run_client(
            "node",
            &[
                script("fetch.js"),
                "127.0.0.1".into(),
                h.addr.port().to_string(),
                OTHER.into(),
                tls.port().to_string(),
                "/".into(),
                ca.clone(),
            ],
        )
        .await;
        assert!(
            stdout.starts_with("403"),
            "stdout {stdout:?} stderr {stderr}"
        );
    });
}
