//! Shared harness of the proxy fuzz targets (`clienthello`, `http_head`): one real
//! `boundary_proxy::Proxy` is started on a loopback listener (in a private network namespace,
//! so an allowed request can only reach the harness's own upstream), and each input is written
//! to a fresh connection, the write half shut, and the answer read until the proxy closes. A
//! proxy panic aborts the process (libFuzzer reports it); a connection the proxy neither answers
//! nor closes within the deadline counts as a hang and aborts too.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use boundary_audit::NullSink;
use boundary_proxy::rules::Policy;
use boundary_proxy::{CertificateAuthority, Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// The upstream allowed requests reach: `allowed.test:18080` resolves to it.
const UPSTREAM_PORT: u16 = 18080;
/// Longer than every proxy timeout below, so only a real hang trips it.
const DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    rt: Runtime,
    proxy: SocketAddr,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // A panic anywhere (a proxy task included) must end the run, not just the task.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect(
            "the proxy fuzz targets need root (CAP_SYS_ADMIN) for a private network namespace",
        );
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run `ip link set lo up` (install iproute2)");
        assert!(up.success(), "ip link set lo up failed");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = std::env::temp_dir().join(format!("boundary-fuzz-ca-{}", std::process::id()));
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir).expect("fuzz CA"));
        let policy = Policy::parse(&[
            "domain=allowed.test",
            "method=GET domain=*.wild.test path=/ok/*",
        ])
        .expect("fuzz policy");
        let mut config = ProxyConfig::new(Arc::new(policy));
        for host in ["allowed.test", "a.wild.test"] {
            config
                .resolve
                .insert(host.into(), "127.0.0.1".parse().unwrap());
        }
        config.idle_timeout = Duration::from_secs(2);
        config.connect_timeout = Duration::from_secs(1);
        config.handshake_timeout = Duration::from_secs(2);
        let proxy = Proxy::new(config, ca, Arc::new(NullSink)).expect("proxy");
        let addr = rt.block_on(async {
            let upstream = TcpListener::bind(("127.0.0.1", UPSTREAM_PORT))
                .await
                .expect("upstream");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = upstream.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    });
                }
            });
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("proxy listener");
            let addr = l.local_addr().unwrap();
            tokio::spawn(proxy.serve(l));
            addr
        });
        Harness { rt, proxy: addr }
    })
}

/// Sends `bytes` on a new connection and reads until the proxy closes; aborts on a hang.
pub fn exchange(bytes: &[u8]) {
    let h = harness();
    let outcome = h.rt.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let mut s = TcpStream::connect(h.proxy)
                .await
                .expect("connect to the proxy");
            // The proxy may close before reading everything: write errors are fine.
            let _ = s.write_all(bytes).await;
            let _ = s.shutdown().await;
            let mut sink = vec![0u8; 16384];
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
    });
    if outcome.is_err() {
        eprintln!("the proxy neither answered nor closed within {DEADLINE:?}");
        std::process::abort();
    }
}
