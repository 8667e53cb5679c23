//! Random and truncated input on the proxy port: every connection gets an answer or a clean
//! close, nothing panics, nothing hangs, and the proxy keeps serving afterwards.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `input`, half-closes, and reads until the proxy answers or closes.
async fn poke(addr: std::net::SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(input).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no answer and no close for input {:?}",
        String::from_utf8_lossy(input)
    );
    out
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn random_and_truncated_input_never_hangs_or_kills_the_proxy() {
    // A panic in a spawned connection task would not fail the test by itself: count them.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::with(&["domain=origin.test"], |c| {
            c.handshake_timeout = Duration::from_secs(1);
            c.idle_timeout = Duration::from_secs(2);
        })
        .await;
        let t = h.transparent(origin.addr).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let valid = format!(
            "GET http://{ORIGIN}:{}/echo HTTP/1.1\r\nHost: {ORIGIN}:{}\r\n\r\n",
            origin.port(),
            origin.port()
        );
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        // Every prefix of a valid request, and of a CONNECT.
        for i in 0..valid.len() {
            inputs.push(valid.as_bytes()[..i].to_vec());
        }
        let connect = b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n";
        for i in (0..connect.len()).step_by(5) {
            inputs.push(connect[..i].to_vec());
        }
        // Random bytes, random bytes that look like TLS, and random header soup.
        for _ in 0..60 {
            let len = rng.gen_range(1..2048);
            let mut junk = vec![0u8; len];
            rng.fill_bytes(&mut junk);
            inputs.push(junk.clone());
            junk[0] = 0x16;
            inputs.push(junk.clone());
            let mut hdr = b"GET / HTTP/1.1\r\n".to_vec();
            for _ in 0..rng.gen_range(0..20) {
                let n = rng.gen_range(0..64);
                hdr.extend((0..n).map(|_| rng.gen_range(0x20u8..0x7f)));
                hdr.extend_from_slice(b"\r\n");
            }
            hdr.extend_from_slice(b"\r\n");
            inputs.push(hdr);
        }
        for input in &inputs {
            poke(h.addr, input).await;
            poke(t, input).await;
        }
        // Still alive and correct.
        let out = curl(&[
            "--proxy",
            &h.proxy_url(),
            &format!("http://{ORIGIN}:{}/echo", origin.port()),
        ])
        .await;
        assert_eq!(out.status(), 200, "{out:?}");
    });
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a connection task panicked"
    );
}

/// A jailed process that opens connections and sends long request heads it never finishes
/// must not make the proxy hold each one until the idle timeout: past the head limit the
/// proxy answers 431 and closes at once, while a long head that fits is still forwarded.
#[test]
fn an_overlong_unfinished_request_head_is_refused_not_held() {
    run(async {
        let origin = Origin::start(None, None).await;
        let h = Harness::new(&["domain=origin.test"]).await;
        let port = origin.port();
        let head = |pad: usize, end: &str| {
            format!(
                "GET http://{ORIGIN}:{port}/echo HTTP/1.1\r\nHost: {ORIGIN}:{port}\r\n\
                 X-Pad: {}{end}",
                "a".repeat(pad)
            )
        };
        // 48 KiB of header: a long cookie or token; forwarded.
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(head(48 * 1024, "\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("no answer to a 48 KiB head")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
        assert_eq!(
            origin.seen().len(),
            1,
            "the long head did not reach the origin"
        );

        // 80 KiB and never finished, the connection kept open by the client: the proxy must
        // answer and close without waiting for the rest (the idle timeout is minutes).
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(head(80 * 1024, "").as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the proxy held an unfinished 80 KiB request head");
        // The proxy stops reading at the limit, so the kernel may reset the connection for
        // the unread rest and drop the 431 before it is read: a reset also ends it.
        match read {
            Ok(_) => {
                let text = String::from_utf8_lossy(&out);
                assert!(text.starts_with("HTTP/1.1 431"), "{text:.200}");
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert_eq!(
            origin.seen().len(),
            1,
            "the overlong head reached the origin"
        );
    });
}
