//! The jail's DNS stub, served by the parent on sockets created inside the jail.
//!
//! Default: every A query is answered with 6.6.6.6 and every AAAA query with 2001:db8::1 (what
//! the Go version answers; the connection to that address is diverted to the proxy anyway,
//! which routes by SNI/Host), other types get NOERROR with no answer. Nothing is ever forwarded,
//! so names cannot carry data out. With `--use-real-dns` the stub relays queries to the host's
//! resolvers instead, which does let a jailed process exfiltrate data in names.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::sync::Semaphore;

/// The address every A query is answered with.
pub const FAKE_V4: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);
/// The address every AAAA query is answered with.
pub const FAKE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const TTL: u32 = 60;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of boundary one jail may hold through the stub: each TCP connection is a descriptor
/// of boundary's, and each query being answered (relayed with `--use-real-dns`) a task and a
/// socket. Resolvers use one or two connections; a jail that opens more is refused (closed at
/// once, datagrams dropped) instead of filling boundary's descriptor table, which would stop
/// the proxy from accepting the jail's allowed requests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    tcp_connections: usize,
    queries_in_flight: usize,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 asks for
    /// seconds, not minutes).
    tcp_idle: Duration,
}

const LIMITS: Limits = Limits {
    tcp_connections: 32,
    queries_in_flight: 128,
    tcp_idle: Duration::from_secs(10),
};

/// Sockets the stub serves (created inside the jail).
#[derive(Debug, Default)]
pub struct DnsSockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

/// Answer locally, or relay to real resolvers.
#[derive(Debug, Clone)]
pub enum DnsMode {
    Answer,
    Forward(Vec<SocketAddr>),
}

/// Stops the stub's thread when dropped.
pub struct DnsHandle {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// `nameserver` addresses in resolv.conf text, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            // Scoped IPv6 (fe80::1%eth0) is not supported here; skip it.
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;

fn header_only(q: &[u8], rcode: u8) -> Vec<u8> {
    let opcode_rd = q[2] & 0x79; // opcode bits and RD
    vec![
        q[0],
        q[1],
        0x80 | opcode_rd,
        0x80 | rcode,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// The stub's answer to one query message, or `None` for something that must be ignored (too
/// short to answer, or itself a response).
pub fn answer(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (q[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Some(header_only(q, RCODE_NOTIMP));
    }
    let qdcount = u16::from_be_bytes([q[4], q[5]]);
    if qdcount != 1 {
        return Some(header_only(q, RCODE_FORMERR));
    }
    // The question: labels up to the root label (no compression in a question), type, class.
    let mut i = 12;
    let mut name_len = 0usize;
    loop {
        let Some(&len) = q.get(i) else {
            return Some(header_only(q, RCODE_FORMERR));
        };
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 || name_len + len as usize + 1 > 255 {
            return Some(header_only(q, RCODE_FORMERR));
        }
        name_len += len as usize + 1;
        i += 1 + len as usize;
    }
    if q.len() < i + 4 {
        return Some(header_only(q, RCODE_FORMERR));
    }
    let qtype = u16::from_be_bytes([q[i], q[i + 1]]);
    let qclass = u16::from_be_bytes([q[i + 2], q[i + 3]]);
    let question = &q[12..i + 4];
    let rdata: Option<Vec<u8>> = match (qtype, qclass) {
        (1, 1) => Some(FAKE_V4.octets().to_vec()),
        (28, 1) => Some(FAKE_V6.octets().to_vec()),
        _ => None,
    };
    let mut r = Vec::with_capacity(12 + question.len() + 28);
    r.extend_from_slice(&[q[0], q[1], 0x80 | (q[2] & 0x01), 0x80]);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(rdata.is_some() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if let Some(data) = rdata {
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    Some(r)
}

async fn forward_udp(query: &[u8], resolvers: &[SocketAddr]) -> Option<Vec<u8>> {
    for r in resolvers {
        let bind: SocketAddr = if r.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(r).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        loop {
            match tokio::time::timeout(FORWARD_TIMEOUT, sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 2 && buf[..2] == query[..2] => return Some(buf[..n].to_vec()),
                Ok(Ok(_)) => continue,
                _ => break,
            }
        }
    }
    None
}

async fn forward_tcp(query: &[u8], resolvers: &[SocketAddr]) -> Option<Vec<u8>> {
    for r in resolvers {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(r).await.ok()?;
            s.write_all(&(query.len() as u16).to_be_bytes())
                .await
                .ok()?;
            s.write_all(query).await.ok()?;
            let n = s.read_u16().await.ok()? as usize;
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await.ok()?;
            Some(buf)
        };
        if let Ok(Some(reply)) = tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

async fn respond(query: Vec<u8>, mode: &DnsMode, tcp: bool) -> Option<Vec<u8>> {
    match mode {
        DnsMode::Answer => answer(&query),
        DnsMode::Forward(resolvers) if query.len() >= 12 => {
            if tcp {
                forward_tcp(&query, resolvers).await
            } else {
                forward_udp(&query, resolvers).await
            }
        }
        DnsMode::Forward(_) => None,
    }
}

/// One datagram from `sock` into `buf`: its length, its sender, and the address it was sent
/// to (`IP_PKTINFO` / `IPV6_PKTINFO`; `None` when the socket does not say).
fn recv_query(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let from = msg.address.and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    });
    let from = from.ok_or_else(|| io::Error::other("a datagram without a sender address"))?;
    let to = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4PacketInfo(i) => {
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))))
        }
        ControlMessageOwned::Ipv6PacketInfo(i) => Some(IpAddr::V6(i.ipi6_addr.s6_addr.into())),
        _ => None,
    });
    Ok((msg.bytes, from, to))
}

/// Sends `reply` to `to` from the address `asked` (the one the query was sent to: in nsjail
/// any address, handed to the stub's transparent socket unchanged, and the client takes an
/// answer only from where it asked), or from the socket's own address when `asked` is `None`.
fn send_reply(
    sock: &tokio::net::UdpSocket,
    reply: &[u8],
    to: SocketAddr,
    asked: Option<IpAddr>,
) -> io::Result<usize> {
    let iov = [IoSlice::new(reply)];
    let fd = sock.as_raw_fd();
    let flags = MsgFlags::MSG_DONTWAIT;
    let sent = match (asked, to) {
        (Some(IpAddr::V4(a)), SocketAddr::V4(to)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
            sendmsg(fd, &iov, &cmsg, flags, Some(&SockaddrIn::from(to)))
        }
        (Some(IpAddr::V6(a)), SocketAddr::V6(to)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                ipi6_ifindex: 0,
            };
            let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
            sendmsg(fd, &iov, &cmsg, flags, Some(&SockaddrIn6::from(to)))
        }
        _ => return sock.try_send_to(reply, to),
    };
    Ok(sent?)
}

async fn serve_udp(sock: tokio::net::UdpSocket, mode: DnsMode, limits: Limits) {
    let sock = Arc::new(sock);
    let in_flight = Arc::new(Semaphore::new(limits.queries_in_flight));
    let mut buf = vec![0u8; 65535];
    loop {
        let received = sock
            .async_io(Interest::READABLE, || recv_query(&sock, &mut buf))
            .await;
        let (n, from, asked) = match received {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("dns stub udp: {e}");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // As a busy resolver does: the client asks again.
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, mode) = (sock.clone(), mode.clone());
        tokio::spawn(async move {
            if let Some(reply) = respond(query, &mode, false).await {
                let sent = sock
                    .async_io(Interest::WRITABLE, || {
                        send_reply(&sock, &reply, from, asked)
                    })
                    .await;
                if let Err(e) = sent {
                    tracing::debug!("dns stub udp: answering {from}: {e}");
                }
            }
            drop(permit);
        });
    }
}

async fn serve_tcp_conn(mut s: tokio::net::TcpStream, mode: DnsMode, idle: Duration) {
    loop {
        let query = async {
            let n = s.read_u16().await?;
            let mut query = vec![0u8; n as usize];
            s.read_exact(&mut query).await?;
            Ok::<_, std::io::Error>(query)
        };
        let Ok(Ok(query)) = tokio::time::timeout(idle, query).await else {
            return;
        };
        let Some(reply) = respond(query, &mode, true).await else {
            return;
        };
        if s.write_all(&(reply.len() as u16).to_be_bytes())
            .await
            .is_err()
            || s.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

async fn serve_tcp(l: tokio::net::TcpListener, mode: DnsMode, limits: Limits) {
    let open = Arc::new(Semaphore::new(limits.tcp_connections));
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    tracing::debug!(
                        "dns stub: refused a TCP connection, {} open",
                        limits.tcp_connections
                    );
                    continue;
                };
                let mode = mode.clone();
                tokio::spawn(async move {
                    serve_tcp_conn(s, mode, limits.tcp_idle).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of descriptors (or memory): say so, and do not spin on the error.
                tracing::warn!("dns stub: accepting a TCP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves `sockets` on a thread of its own (independent of the caller's runtime) until the
/// returned handle is dropped.
pub fn spawn(sockets: DnsSockets, mode: DnsMode) -> std::io::Result<DnsHandle> {
    for s in &sockets.udp {
        s.set_nonblocking(true)?;
        // The address each query was sent to, so the answer comes from it.
        if s.local_addr()?.is_ipv4() {
            setsockopt(s, sockopt::Ipv4PacketInfo, &true)?;
        } else {
            setsockopt(s, sockopt::Ipv6RecvPacketInfo, &true)?;
        }
    }
    for l in &sockets.tcp {
        l.set_nonblocking(true)?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("boundary-dns".into())
        .spawn(move || {
            rt.block_on(async move {
                for s in sockets.udp {
                    match tokio::net::UdpSocket::from_std(s) {
                        Ok(s) => drop(tokio::spawn(serve_udp(s, mode.clone(), LIMITS))),
                        Err(e) => tracing::error!("dns stub: {e}"),
                    }
                }
                for l in sockets.tcp {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => drop(tokio::spawn(serve_tcp(l, mode.clone(), LIMITS))),
                        Err(e) => tracing::error!("dns stub: {e}"),
                    }
                }
                let _ = stop_rx.await;
            });
        })?;
    Ok(DnsHandle { _stop: stop_tx })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn a_and_aaaa_get_the_fixed_addresses() {
        let q = query("example.com", 1);
        let r = answer(&q).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[6, 6, 6, 6]);
        let r6 = answer(&query("example.com", 28)).unwrap();
        assert_eq!(&r6[r6.len() - 16..], &FAKE_V6.octets());
    }

    /// A jail opening connections to the stub and holding them silent: past the cap they are
    /// closed at once, a silent one is closed after the idle time, and a query is answered
    /// throughout on a connection within the cap (the positive control).
    #[test]
    fn the_stub_holds_a_bounded_number_of_tcp_connections_and_none_forever() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let start = |tcp_idle| async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let limits = Limits {
                    tcp_connections: 4,
                    queries_in_flight: 4,
                    tcp_idle,
                };
                tokio::spawn(serve_tcp(l, DnsMode::Answer, limits));
                addr
            };
            let ask = |mut c: tokio::net::TcpStream| async move {
                let q = query("example.com", 1);
                c.write_all(&(q.len() as u16).to_be_bytes()).await?;
                c.write_all(&q).await?;
                let n = c.read_u16().await?;
                let mut r = vec![0u8; n as usize];
                c.read_exact(&mut r).await?;
                Ok::<_, std::io::Error>((c, r))
            };
            // Closed by the stub (EOF or reset) well before the 60 s idle time below: the
            // 5 s only keeps a broken stub from hanging the test.
            let closed = |mut c: tokio::net::TcpStream| async move {
                let mut b = [0u8; 1];
                let got = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await;
                matches!(got, Ok(Ok(0)) | Ok(Err(_)))
            };

            // The cap, with an idle time too long to matter here.
            let addr = start(Duration::from_secs(60)).await;
            let first = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (first, r) = ask(first).await.unwrap();
            assert_eq!(&r[r.len() - 4..], &[6, 6, 6, 6]);
            let mut held = vec![first];
            for _ in 0..3 {
                held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            }
            let extra = tokio::net::TcpStream::connect(addr).await.unwrap();
            assert!(closed(extra).await, "a fifth connection was kept open");
            // Positive control: a place freed is taken again and answered.
            drop(held.pop());
            let mut answered = None;
            for _ in 0..50 {
                // Until the stub has seen the close (the same runtime, so at once in practice).
                tokio::time::sleep(Duration::from_millis(20)).await;
                let again = tokio::net::TcpStream::connect(addr).await.unwrap();
                if let Ok((_, r)) = ask(again).await {
                    answered = Some(r);
                    break;
                }
            }
            let r = answered.expect("a freed place was not taken again");
            assert_eq!(&r[r.len() - 4..], &[6, 6, 6, 6]);

            // The idle time: a silent connection does not stay forever.
            let addr = start(Duration::from_millis(300)).await;
            let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
            assert!(closed(silent).await, "a silent connection was kept open");
        });
    }

    #[test]
    fn other_types_are_noerror_and_empty() {
        for t in [15u16, 16, 255, 65] {
            let r = answer(&query("example.com", t)).unwrap();
            assert_eq!(r[3] & 0x0f, 0);
            assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0, "type {t}");
        }
    }

    #[test]
    fn malformed_queries_never_panic() {
        let q = query("a.b", 1);
        for cut in 0..q.len() {
            let _ = answer(&q[..cut]);
        }
        let mut bad = q.clone();
        bad[12] = 0xc0; // compression pointer in the question
        assert_eq!(answer(&bad).unwrap()[3] & 0x0f, RCODE_FORMERR);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(answer(&resp).is_none(), "responses are ignored");
    }

    #[test]
    fn resolv_conf_nameservers() {
        let list = parse_resolv_conf(
            "# x\nnameserver 10.0.0.2\nsearch a\nnameserver ::1\nnameserver fe80::1%eth0\n",
        );
        assert_eq!(
            list,
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
