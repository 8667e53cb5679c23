//! Running out of file descriptors makes accept fail for a while; the proxy keeps its listener
//! and serves again once descriptors are free. Own binary: the limit is process-wide.

mod common;

use common::*;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

#[test]
fn proxy_survives_descriptor_exhaustion() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        setrlimit(Resource::RLIMIT_NOFILE, open_now + 16, hard).unwrap();
        // Connect until this process has no descriptor left; the proxy's accepts fail too.
        let mut held = Vec::new();
        for _ in 0..64 {
            match tokio::net::TcpStream::connect(h.addr).await {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        assert!(
            std::fs::File::open("/proc/self/status").is_err(),
            "the descriptor limit was not reached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(held);
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            &format!("http://{ORIGIN}:{}/echo", origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
    });
}
