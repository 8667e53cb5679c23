//! Escape probes run inside a jail by `boundary selftest` (`argv[1]` = `__boundary-probe`).
//!
//! Each probe tries one way out at the system-call level and prints one line, a
//! [`ProbeResult`] (`#<index> <kind> <word> <detail>`), where `<word>` is what happened, not a verdict:
//! `connected`, `sent`, `reply`, `created`, `changed`, `read`, `signalled`, `entered`,
//! `injected` mean the operation worked; `refused` means the kernel said no (the errno is in
//! the detail). The selftest decides what each outcome means for the backend in use. Probes never send to
//! anything but the addresses they are given. Several probes may be given, separated by `;`.
//!
//! The `tcp` probe optionally writes a request and prints the response bytes (escaped), so the
//! caller can speak any protocol through it without this crate knowing that protocol.

mod result;
mod unix;

pub use result::{probe_args, NotAResult, ProbeResult};

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

mod kernel;
mod seccomp;

/// `argv[1]` that selects the probes.
pub const PROBE_ARG: &str = "__boundary-probe";

const TIMEOUT: Duration = Duration::from_secs(4);

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
fn tcp(args: &[String]) -> Result<String, String> {
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
fn udp(args: &[String]) -> Result<String, String> {
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
fn icmp(args: &[String]) -> Result<String, String> {
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
fn raw(_: &[String]) -> Result<String, String> {
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

fn nl_socket(proto: SockProtocol) -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .map_err(io::Error::from)
}

fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len + 3);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn nlattr(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(data);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

/// Sends `msg` and returns the first error code the kernel acknowledges (0 = success).
fn nl_exchange(sock: &OwnedFd, msg: &[u8]) -> io::Result<i32> {
    sendto(
        sock.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(4000u16))? == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"));
    }
    let mut data = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut data, MsgFlags::empty())?;
    data.truncate(n);
    let mut off = 0;
    while off + 16 <= data.len() {
        let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4")) as usize;
        let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into().expect("2"));
        if ty == libc::NLMSG_ERROR as u16 && off + 20 <= data.len() {
            return Ok(i32::from_ne_bytes(
                data[off + 16..off + 20].try_into().expect("4"),
            ));
        }
        if len < 16 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(0)
}

fn errno_text(code: i32) -> String {
    io::Error::from_raw_os_error(-code).to_string()
}

/// `netlink`: ask rtnetlink to delete an address that does not exist on `lo` (EPERM without
/// CAP_NET_ADMIN; EADDRNOTAVAIL with it, which means the change would have been allowed).
fn netlink(_: &[String]) -> Result<String, String> {
    let sock = match nl_socket(SockProtocol::NetlinkRoute) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    let mut payload = vec![libc::AF_INET as u8, 32, 0, 0];
    payload.extend_from_slice(&1u32.to_ne_bytes());
    payload.extend(nlattr(libc::IFA_LOCAL, &[10, 254, 254, 254]));
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let msg = nlmsg(libc::RTM_DELADDR, flags, 1, &payload);
    match nl_exchange(&sock, &msg) {
        Ok(0) => Ok("changed (address deleted)".into()),
        Ok(code) if code == -libc::EPERM => Ok(format!("refused: {}", errno_text(code))),
        Ok(code) => Ok(format!(
            "changed: permitted, kernel said {}",
            errno_text(code)
        )),
        Err(e) => Ok(format!("refused send: {e}")),
    }
}

/// `nft`: ask nf_tables to delete a table that does not exist (EPERM without CAP_NET_ADMIN;
/// ENOENT with it, which means the ruleset could have been changed).
fn nft(_: &[String]) -> Result<String, String> {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    const NFTA_TABLE_NAME: u16 = 1;
    let sock = match nl_socket(SockProtocol::NetlinkNetFilter) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    // struct nfgenmsg { family, version, res_id (be16) }
    let genmsg = |family: u8, res: u16| {
        let mut g = vec![family, 0];
        g.extend_from_slice(&res.to_be_bytes());
        g
    };
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nlmsg(
        NFNL_MSG_BATCH_BEGIN,
        req,
        1,
        &genmsg(0, NFNL_SUBSYS_NFTABLES),
    );
    let mut del = genmsg(1 /* NFPROTO_INET */, 0);
    del.extend(nlattr(NFTA_TABLE_NAME, b"boundary_selftest_absent\0"));
    batch.extend(nlmsg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        req | libc::NLM_F_ACK as u16,
        2,
        &del,
    ));
    batch.extend(nlmsg(
        NFNL_MSG_BATCH_END,
        req,
        3,
        &genmsg(0, NFNL_SUBSYS_NFTABLES),
    ));
    match nl_exchange(&sock, &batch) {
        Ok(0) => Ok("changed (table deleted)".into()),
        Ok(code) if code == -libc::EPERM => Ok(format!("refused: {}", errno_text(code))),
        Ok(code) => Ok(format!(
            "changed: permitted, kernel said {}",
            errno_text(code)
        )),
        Err(e) => Ok(format!("refused send: {e}")),
    }
}

/// `read PATH`: read a file.
/// `read PATH`: read a file. A leading `$NAME` is the jailed environment's variable (so the
/// selftest can ask for "the CA the jail was told to trust": `$SSL_CERT_DIR/ca-key.pem`).
fn read(args: &[String]) -> Result<String, String> {
    let raw = args.first().ok_or("missing path")?;
    let path = &expand_env(raw)?;
    let mut buf = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
        Ok(0) => Ok(format!("refused: {path} reads as empty")),
        Ok(n) => Ok(format!("read {n} bytes from {path}")),
        Err(e) => Ok(format!("refused: {path}: {e}")),
    }
}

fn expand_env(raw: &str) -> Result<String, String> {
    let Some(rest) = raw.strip_prefix('$') else {
        return Ok(raw.to_string());
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let value = std::env::var(&rest[..end])
        .map_err(|_| format!("{} is not set in the jail", &rest[..end]))?;
    Ok(format!("{value}{}", &rest[end..]))
}

/// `unix PATH`: connect to a Unix stream socket and write a byte.
fn unix(args: &[String]) -> Result<String, String> {
    let path = args.first().ok_or("missing path")?;
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(mut s) => match s.write_all(b"\0") {
            Ok(()) => Ok(format!("connected to {path}")),
            Err(e) => Ok(format!("connected to {path} but write failed: {e}")),
        },
        Err(e) => Ok(format!("refused: {path}: {e}")),
    }
}

/// `procs HOSTPID`: which processes are visible, and whether HOSTPID is one of them.
fn procs(args: &[String]) -> Result<String, String> {
    let host_pid = args.first().ok_or("missing pid")?;
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| format!("refused /proc: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let host_visible = pids.iter().any(|p| p.to_string() == *host_pid);
    let comm1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    Ok(format!(
        "visible={} host_pid_visible={host_visible} pid1={}",
        pids.len(),
        comm1.trim()
    ))
}

/// `signal PID`: send SIGCONT (harmless) to PID.
fn signal(args: &[String]) -> Result<String, String> {
    let pid: i32 = args
        .first()
        .ok_or("missing pid")?
        .parse()
        .map_err(|_| "bad pid")?;
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    ) {
        Ok(()) => Ok(format!("signalled {pid}")),
        Err(e) => Ok(format!("refused: kill {pid}: {e}")),
    }
}

/// `setns PATH`: join the network namespace at PATH.
fn setns(args: &[String]) -> Result<String, String> {
    let path = args.first().ok_or("missing path")?;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(format!("refused open {path}: {e}")),
    };
    match nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
        Ok(()) => Ok(format!("entered {path}")),
        Err(e) => Ok(format!("refused setns {path}: {e}")),
    }
}

fn one(kind: &str, args: &[String]) -> Result<String, String> {
    match kind {
        "tcp" => tcp(args),
        "udp" => udp(args),
        "icmp" => icmp(args),
        "raw" => raw(args),
        "netlink" => netlink(args),
        "nft" => nft(args),
        "read" => read(args),
        "unix" => unix(args),
        "procs" => procs(args),
        "signal" => signal(args),
        "setns" => setns(args),
        k if seccomp::KINDS.contains(&k) => seccomp::one(k, args),
        "listen" => unix::listen(args),
        k if kernel::KINDS.contains(&k) => kernel::one(k, args),
        _ => Err(format!("unknown probe {kind}")),
    }
}

/// Runs the probes in `args` (after argv[1]); exit code 0 unless a probe was malformed.
pub(crate) fn main(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut code = 0;
    let mut out = io::stdout().lock();
    for (i, group) in args.split(|a| a == ";").enumerate() {
        let Some((kind, rest)) = group.split_first() else {
            continue;
        };
        let line = match one(kind, rest) {
            Ok(text) => ProbeResult::from_text(i, kind, &text),
            Err(e) => {
                code = 2;
                ProbeResult::from_text(i, kind, &format!("error {e}"))
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    code
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
