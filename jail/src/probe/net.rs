//! Network probes: `tcp`, `udp`, `icmp` and `raw`, and the escaping of request and response
//! bytes on the probe's command line and in its result line.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub(super) const TIMEOUT: Duration = Duration::from_secs(4);

fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(4096) {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b'\\' => out.push(b'\\'),
                b'x' if i + 4 <= b.len() && s.is_char_boundary(i + 4) => {
                    match u8::from_str_radix(&s[i + 2..i + 4], 16) {
                        Ok(v) => out.push(v),
                        Err(_) => out.extend_from_slice(&b[i..i + 4]),
                    }
                    i += 4;
                    continue;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `HOST` may be a name, an IP literal, or a link-local IPv6 literal scoped with `%IFNAME`.
fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Some((ip, ifname)) = host.split_once('%') {
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| io::Error::other("bad scoped IPv6 address"))?;
        let index = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        return Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
            ip, port, 0, index,
        )));
    }
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))
}

fn port(s: Option<&String>) -> Result<u16, String> {
    s.ok_or("missing port")?
        .parse()
        .map_err(|_| "bad port".to_string())
}

/// `tcp HOST PORT [REQUEST]`: connect, send the (escaped) request, print the response.
pub(super) fn tcp(args: &[String]) -> Result<String, String> {
    let host = args.first().ok_or("missing host")?;
    let addr = resolve(host, port(args.get(1))?).map_err(|e| format!("refused resolve: {e}"))?;
    let mut s = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused connect {addr}: {e}")),
    };
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut out = format!("connected {addr}");
    if let Some(req) = args.get(2) {
        if let Err(e) = s.write_all(&unescape(req)) {
            return Ok(format!("{out} write-error: {e}"));
        }
        let mut resp = Vec::new();
        let _ = s.take(1 << 20).read_to_end(&mut resp);
        out.push_str(&format!(" response={}", escape(&resp)));
    }
    Ok(out)
}

/// `udp ADDR PORT [PAYLOAD]`: send one datagram (escaped payload), wait briefly for an answer.
pub(super) fn udp(args: &[String]) -> Result<String, String> {
    let addr = resolve(args.first().ok_or("missing address")?, port(args.get(1))?)
        .map_err(|e| format!("bad address: {e}"))?;
    let ip = addr.ip();
    let bind: SocketAddr = if ip.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    let payload = args
        .get(2)
        .map(|p| unescape(p))
        .unwrap_or_else(|| b"boundary-selftest".to_vec());
    if let Err(e) = s.send_to(&payload, addr) {
        return Ok(format!("refused send to {addr}: {e}"));
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 512];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Ok(format!("reply from {from}: {}", escape(&buf[..n]))),
        Err(_) => Ok(format!("sent to {addr}, no reply")),
    }
}

/// `icmp ADDR`: an echo request over a raw socket, else over the unprivileged ICMP datagram
/// socket.
pub(super) fn icmp(args: &[String]) -> Result<String, String> {
    let ip: IpAddr = args
        .first()
        .ok_or("missing address")?
        .parse()
        .map_err(|_| "bad address")?;
    let (domain, proto, echo) = if ip.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128u8)
    };
    let mut packet = [echo, 0, 0, 0, 0x12, 0x34, 0, 1];
    if ip.is_ipv4() {
        let sum = !(u16::from_be_bytes([packet[0], packet[1]]) as u32
            + u16::from_be_bytes([packet[4], packet[5]]) as u32
            + 1) as u16;
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let sock = match Socket::new(domain, Type::RAW, Some(proto)) {
        Ok(s) => s,
        Err(raw_err) => match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => s,
            Err(e) => return Ok(format!("refused raw: {raw_err}; datagram: {e}")),
        },
    };
    let to = SockAddr::from(SocketAddr::new(ip, 0));
    match sock.send_to(&packet, &to) {
        Ok(_) => Ok(format!("sent echo to {ip}")),
        Err(e) => Ok(format!("refused send to {ip}: {e}")),
    }
}

/// `raw`: a raw IP socket and a packet socket.
pub(super) fn raw(_: &[String]) -> Result<String, String> {
    let ip = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    );
    let packet = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from((libc::ETH_P_ALL as u16).to_be() as i32)),
    );
    Ok(match (ip, packet) {
        (Err(a), Err(b)) => format!("refused raw-ip: {a}; packet: {b}"),
        (Ok(_), _) => "created raw IP socket".to_string(),
        (_, Ok(_)) => "created packet socket".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_requests() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x00\xff";
        assert_eq!(unescape(&escape(req)), req);
    }
}
