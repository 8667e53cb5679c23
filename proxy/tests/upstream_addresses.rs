//! Upstream addresses: an allowed name that resolves to loopback or to the link-local metadata
//! address is refused with a 403 and a denied audit record, unless `--resolve` maps it there,
//! a rule names the IP literal, or `upstream_allow_local` is set; a resolver that changes its
//! answer cannot slip loopback in. Names are resolved by a DNS server this test runs on the
//! address `/etc/resolv.conf` names, inside the test's own network namespace.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;

/// The first nameserver glibc will ask (127.0.0.1 when none is configured).
fn nameserver() -> Ipv4Addr {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|a| a.trim().parse().ok())
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

/// Adds `ip` to the loopback interface of the test's namespace.
fn add_address(ip: Ipv4Addr) {
    if ip.is_loopback() {
        return;
    }
    let st = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .status()
        .expect("these tests need iproute2");
    assert!(st.success(), "ip addr add {ip} failed");
}

type Answer = Arc<dyn Fn(&str, usize) -> Option<Ipv4Addr> + Send + Sync>;

/// A DNS server on the configured nameserver's address: `answer(name, nth A query for this
/// name)` gives the A record; AAAA queries get no records. Returns the A-query counter.
async fn dns(answer: Answer) -> Arc<AtomicUsize> {
    let ns = nameserver();
    add_address(ns);
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(ns), 53))
        .await
        .expect("bind the test DNS server on port 53 (needs root in the test namespace)");
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Some((name, qtype, qend)) = question(&buf[..n]) else {
                continue;
            };
            let mut reply = Vec::with_capacity(qend + 16);
            reply.extend_from_slice(&buf[..2]); // id
            reply.extend_from_slice(&[0x81, 0x80, 0, 1]); // response, recursion; 1 question
            let addr = if qtype == 1 {
                count.fetch_add(1, Ordering::SeqCst);
                let nth = seen.entry(name.clone()).or_default();
                *nth += 1;
                answer(&name, *nth)
            } else {
                None
            };
            let rcode_nx = qtype == 1 && addr.is_none();
            if rcode_nx {
                reply[3] = 0x83; // NXDOMAIN
            }
            reply.extend_from_slice(&[0, u8::from(addr.is_some()), 0, 0, 0, 0]);
            reply.extend_from_slice(&buf[12..qend]);
            if let Some(a) = addr {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                reply.extend_from_slice(&a.octets());
            }
            let _ = sock.send_to(&reply, peer).await;
        }
    });
    queries
}

/// (lowercase name, qtype, end of the question section) of a DNS query.
fn question(msg: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

/// An origin whose every reply closes the connection, so each request needs a new upstream
/// connection (and so a new resolution, on code that resolves when connecting).
/// A listener on `far` in a second network namespace, joined to the test's by a veth pair
/// (the test's side gets `near`): an address that is not one of the test host's own, as a
/// real origin's is not. The listener keeps that namespace alive.
fn listener_beyond_veth(near: Ipv4Addr, far: Ipv4Addr) -> tokio::net::TcpListener {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (l_tx, l_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        go_rx.recv().unwrap();
        l_tx.send(std::net::TcpListener::bind((far, 0)).unwrap())
            .unwrap();
    });
    let ns = format!("/proc/{}/ns/net", tid_rx.recv().unwrap());
    let sh = |script: String| {
        let st = std::process::Command::new("sh")
            .args(["-ec", &script])
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    sh(format!(
        "ip link add bnd-near type veth peer name bnd-far netns {ns}; \
         ip addr add {near}/24 dev bnd-near; ip link set bnd-near up; \
         nsenter --net={ns} sh -ec 'ip link set lo up; ip addr add {far}/24 dev bnd-far; \
         ip link set bnd-far up'"
    ));
    go_tx.send(()).unwrap();
    let l = l_rx.recv().unwrap();
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

async fn closing_origin(addr: SocketAddr) -> Origin {
    closing_origin_on(tokio::net::TcpListener::bind(addr).await.unwrap())
}

fn closing_origin_on(listener: tokio::net::TcpListener) -> Origin {
    let handler: Handler = Arc::new(|_req: Request<Incoming>| {
        Box::pin(async move {
            Response::builder()
                .header("connection", "close")
                .body(full("hello from the origin\n"))
                .unwrap()
        })
    });
    Origin::start_on(listener, None, Some(handler))
}

async fn get(h: &Harness, url: &str) -> Curl {
    curl(&["--proxy", &h.proxy_url(), url]).await
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
    run(async {
        dns(Arc::new(|name, _| {
            (name == "inside.test").then_some(Ipv4Addr::LOCALHOST)
        }))
        .await;
        let origin = Origin::start(None, None).await;
        let url = format!("http://inside.test:{}/echo", origin.port());

        let h = Harness::new(&["domain=inside.test"]).await;
        let out = get(&h, &url).await;
        assert_eq!(out.status(), 403, "{out:?}");
        assert!(
            out.body.contains("loopback") && out.body.contains("--upstream-allow-local"),
            "the 403 says why and what to do: {}",
            out.body
        );
        assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
        let records = h.records();
        assert_eq!(records.len(), 1, "audited exactly once: {records:?}");
        assert!(!records[0].allowed, "audited as denied: {:?}", records[0]);
        assert_eq!(records[0].url, url);

        // Positive controls: --resolve mapping the name there, and the relax key.
        let h = Harness::with(&["domain=inside.test"], |c| {
            c.resolve
                .insert("inside.test".into(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        })
        .await;
        assert_eq!(get(&h, &url).await.status(), 200);
        let h = Harness::with(&["domain=inside.test"], |c| c.upstream_allow_local = true).await;
        assert_eq!(get(&h, &url).await.status(), 200);
        assert!(origin.connections.load(Ordering::SeqCst) >= 2);
        assert!(h.records().iter().all(|r| r.allowed));
    });
}

#[test]
fn the_metadata_address_is_refused_by_name_and_as_a_literal() {
    run(async {
        let meta = Ipv4Addr::new(169, 254, 169, 254);
        add_address(meta);
        dns(Arc::new(move |name, _| {
            (name == "meta.test").then_some(meta)
        }))
        .await;
        let origin = Origin::start_at(SocketAddr::new(meta.into(), 0), None, None).await;
        let port = origin.port();

        let h = Harness::new(&["domain=meta.test", "domain=*"]).await;
        for url in [
            format!("http://meta.test:{port}/latest/meta-data/"),
            format!("http://169.254.169.254:{port}/latest/meta-data/"),
            format!("http://[::ffff:169.254.169.254]:{port}/latest/meta-data/"),
            format!("http://[::ffff:a9fe:a9fe]:{port}/latest/meta-data/"),
        ] {
            let out = get(&h, &url).await;
            assert_eq!(out.status(), 403, "{url}: {out:?}");
            assert!(out.body.contains("metadata"), "{url}: {}", out.body);
        }
        assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
        assert!(h.records().iter().all(|r| !r.allowed), "{:?}", h.records());
        assert_eq!(h.records().len(), 4);

        // A rule naming the literal allows it (the positive control for the counter).
        let h = Harness::new(&["domain=169.254.169.254"]).await;
        let out = get(&h, &format!("http://169.254.169.254:{port}/echo")).await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_rebinding_resolver_cannot_reach_loopback() {
    run(async {
        // First answer: an ordinary address (another host's, beyond a veth pair); every
        // later answer: 127.0.0.1.
        let public = Ipv4Addr::new(192, 0, 2, 10);
        let far = listener_beyond_veth(Ipv4Addr::new(192, 0, 2, 9), public);
        let queries = dns(Arc::new(move |name, nth| {
            (name == "rebind.test").then_some(if nth == 1 {
                public
            } else {
                Ipv4Addr::LOCALHOST
            })
        }))
        .await;
        let outside = closing_origin_on(far);
        let port = outside.port();
        let inside = closing_origin(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)).await;

        let h = Harness::new(&["domain=rebind.test"]).await;
        let url = format!("http://rebind.test:{port}/");
        let mut served = 0;
        for _ in 0..5 {
            let out = get(&h, &url).await;
            assert!(matches!(out.status(), 200 | 403), "{out:?}");
            served += usize::from(out.status() == 200);
        }
        assert!(
            queries.load(Ordering::SeqCst) >= 1,
            "the test resolver was asked"
        );
        assert!(served >= 1, "the first answer is served");
        assert!(outside.connections.load(Ordering::SeqCst) >= 1);
        assert_eq!(
            inside.connections.load(Ordering::SeqCst),
            0,
            "a rebound answer reached loopback"
        );
    });
}

/// An address assigned to one of the host's own interfaces (not loopback, not link-local)
/// reaches services bound to `0.0.0.0` on the host just as loopback does: refused the same
/// way, by name, as a literal and in its IPv6-mapped spelling.
#[test]
fn the_host_s_own_interface_addresses_are_refused() {
    run(async {
        let own = Ipv4Addr::new(198, 51, 100, 7);
        add_address(own);
        dns(Arc::new(move |name, _| (name == "own.test").then_some(own))).await;
        let origin = Origin::start_at(SocketAddr::new(own.into(), 0), None, None).await;
        let port = origin.port();

        let h = Harness::new(&["domain=own.test", "domain=*"]).await;
        for url in [
            format!("http://own.test:{port}/echo"),
            format!("http://198.51.100.7:{port}/echo"),
            format!("http://3325256711:{port}/echo"),
            format!("http://[::ffff:198.51.100.7]:{port}/echo"),
        ] {
            let out = get(&h, &url).await;
            assert_eq!(out.status(), 403, "{url}: {out:?}");
            assert!(out.body.contains("this host's own"), "{url}: {}", out.body);
        }
        assert_eq!(origin.connections.load(Ordering::SeqCst), 0);
        assert!(h.records().iter().all(|r| !r.allowed), "{:?}", h.records());

        // A rule naming the literal allows it (the positive control for the counter).
        let h = Harness::new(&["domain=198.51.100.7"]).await;
        let out = get(&h, &format!("http://198.51.100.7:{port}/echo")).await;
        assert_eq!(out.status(), 200, "{out:?}");
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);
    });
}
