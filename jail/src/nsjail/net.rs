//! The jail's network namespace: loopback, a default route into a veth pair that leads nowhere,
//! the policy routing that turns every TCP packet and every UDP packet to port 53 back in
//! through `lo`, the listening sockets, and the nftables ruleset (`nft`) that hands those to the
//! proxy and the DNS stub (TPROXY) and drops everything else leaving the namespace.
//!
//! Routing, v4 and v6 alike (in `ip` terms):
//!
//! ```text
//! ip rule add ipproto tcp lookup 100 pref 100
//! ip rule add ipproto udp dport 53 lookup 100 pref 101
//! ip route add local default dev lo table 100 src JAIL_ADDRESS
//! ```
//!
//! The `local` table is still looked up first, so the jail's loopback and own addresses are
//! reached as before; everything else of those protocols is "local" by table 100, and its
//! source is the jail's address on the dead-end device. Other packets (UDP to other ports,
//! ICMP, ...) take the default route into the veth pair and are dropped on the way out.
//!
//! Links, addresses and routes are made over rtnetlink by the helper itself (it holds
//! CAP_NET_ADMIN in the jail's user namespace, or in the host's for a jail without one); the
//! ruleset is loaded the same way over nf_tables netlink (`nft`). No program is started.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::socket::SockProtocol;
use socket2::{Domain, Protocol, Socket, Type};

use super::wire::SocketKind;
use crate::netlink::{self, Message, REQUEST_ACK};

/// Name of the veth end that carries the default routes (its peer is also inside the jail).
pub const ROUTE_DEV: &str = "bnd0";
/// The other end of the veth pair.
const PEER_DEV: &str = "bnd1";
/// Address (/32) of the jail's only non-loopback device (link-local: it names nothing outside).
pub const JAIL_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 253, 1);
/// IPv6 address (/128) of that device (ULA; nothing routes it).
pub const JAIL_V6: Ipv6Addr = Ipv6Addr::new(0xfd62, 0x6f75, 0x6e64, 0, 0, 0, 0, 1);

/// Link flags and kinds (linux/if.h, linux/rtnetlink.h, linux/veth.h).
const IFF_UP: u32 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_F_NODAD: u8 = 0x02;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_HOST: u8 = 254;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
/// Policy routing (linux/fib_rules.h).
const FR_ACT_TO_TBL: u8 = 1;
const FRA_PRIORITY: u16 = 6;
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
/// The routing table that makes every address local (`local default dev lo`).
const DIVERT_TABLE: u8 = 100;
/// The DNS stub's port in the jail: its replies must come from port 53, as the client asked.
pub const DNS_PORT: u16 = 53;
const CREATE_NEW: u16 = REQUEST_ACK | (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;

/// `struct ifinfomsg` naming no link by index, with `flags` to set.
fn ifinfomsg(flags: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[8..12].copy_from_slice(&flags.to_ne_bytes()); // ifi_flags
    b[12..16].copy_from_slice(&flags.to_ne_bytes()); // ifi_change: only those bits
    b
}

/// Brings the link called `name` up.
fn link_up(name: &str) -> Message {
    let mut m = Message::new(libc::RTM_NEWLINK, REQUEST_ACK, &ifinfomsg(IFF_UP));
    m.str(IFLA_IFNAME, name);
    m
}

/// Adds `addr/prefix` to link `index` (`ip addr add`: the local and the peer address alike).
fn add_addr(addr: IpAddr, prefix: u8, index: u32, flags: u8) -> Message {
    let (family, octets) = family_octets(addr);
    let mut body = vec![family, prefix, flags, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    let mut m = Message::new(libc::RTM_NEWADDR, CREATE_NEW, &body);
    m.attr(libc::IFA_LOCAL, &octets)
        .attr(libc::IFA_ADDRESS, &octets);
    m
}

/// Adds the default route of `addr`'s family out of link `index`, no gateway
/// (`ip route add default dev ...`).
fn add_default_route(addr: IpAddr, index: u32) -> Message {
    let (family, _) = family_octets(addr);
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type, flags }
    let mut body = vec![
        family,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_LINK,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut m = Message::new(libc::RTM_NEWROUTE, CREATE_NEW, &body);
    m.u32(libc::RTA_OIF, index);
    m
}

/// `ip rule add ipproto PROTO [dport PORT] lookup DIVERT_TABLE pref PRIORITY` for `addr`'s
/// family.
fn add_divert_rule(addr: IpAddr, proto: libc::c_int, dport: Option<u16>, priority: u32) -> Message {
    let (family, _) = family_octets(addr);
    // struct fib_rule_hdr { family, dst_len, src_len, tos, table, res1, res2, action, flags }
    let mut body = vec![family, 0, 0, 0, DIVERT_TABLE, 0, 0, FR_ACT_TO_TBL];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut m = Message::new(libc::RTM_NEWRULE, CREATE_NEW, &body);
    m.u32(FRA_PRIORITY, priority)
        .attr(FRA_IP_PROTO, &[proto as u8]);
    if let Some(port) = dport {
        // struct fib_rule_port_range { start, end }
        let mut range = port.to_ne_bytes().to_vec();
        range.extend_from_slice(&port.to_ne_bytes());
        m.attr(FRA_DPORT_RANGE, &range);
    }
    m
}

/// `ip route add local default dev lo table DIVERT_TABLE src addr`: every destination of
/// `addr`'s family is this host's, reached through loopback (link `lo_index`), from `addr`.
fn add_divert_route(addr: IpAddr, lo_index: u32) -> Message {
    let (family, octets) = family_octets(addr);
    let mut body = vec![
        family,
        0,
        0,
        0,
        DIVERT_TABLE,
        RTPROT_BOOT,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut m = Message::new(libc::RTM_NEWROUTE, CREATE_NEW, &body);
    m.u32(libc::RTA_OIF, lo_index)
        .attr(libc::RTA_PREFSRC, &octets);
    m
}

/// The rules and the route that turn TCP and DNS of `addr`'s family back in through `lo`.
fn divert(addr: IpAddr, lo_index: u32) -> [(Message, &'static str); 3] {
    [
        (
            add_divert_rule(addr, libc::IPPROTO_TCP, None, 100),
            "adding the policy rule for TCP (the kernel needs CONFIG_IP_MULTIPLE_TABLES)",
        ),
        (
            add_divert_rule(addr, libc::IPPROTO_UDP, Some(DNS_PORT), 101),
            "adding the policy rule for DNS over UDP",
        ),
        (
            add_divert_route(addr, lo_index),
            "adding the route that makes every address local",
        ),
    ]
}

fn family_octets(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    }
}

/// Sends the `(message, what it does)` pairs in one go and returns the kernel's answer to
/// each, with what it does.
fn send<'a>(
    sock: &OwnedFd,
    msgs: &[(Message, &'a str)],
) -> Result<Vec<(io::Result<()>, &'a str)>, String> {
    let only: Vec<Message> = msgs.iter().map(|(m, _)| m.clone()).collect();
    let answers = netlink::exchange(sock, &only)
        .map_err(|e| format!("rtnetlink in the jail's network namespace: {e}"))?;
    Ok(answers
        .into_iter()
        .zip(msgs)
        .map(|(a, (_, what))| (a.unwrap_or(Ok(())), *what))
        .collect())
}

/// Loopback up, the veth pair, addresses and the IPv4/IPv6 default routes into it, over
/// rtnetlink in this process (what `ip` would send, without starting it). Returns whether IPv6
/// is usable in the jail: it may be disabled on this host, and then only the IPv6 address and
/// route fail and no IPv6 path exists at all, which is fine; any other failure fails the start.
pub fn setup_links() -> Result<bool, String> {
    let sock = netlink::open(SockProtocol::NetlinkRoute)
        .map_err(|e| format!("opening an rtnetlink socket in the jail: {e}"))?;
    let mut veth = Message::new(libc::RTM_NEWLINK, CREATE_NEW, &ifinfomsg(0));
    veth.str(IFLA_IFNAME, ROUTE_DEV).nest(IFLA_LINKINFO, |m| {
        m.str(IFLA_INFO_KIND, "veth").nest(IFLA_INFO_DATA, |m| {
            m.nest(VETH_INFO_PEER, |m| {
                m.raw(&ifinfomsg(0));
                m.str(IFLA_IFNAME, PEER_DEV);
            });
        });
    });
    let links = [
        (link_up("lo"), "bringing loopback up"),
        (
            veth,
            "creating the veth pair (the kernel needs veth: CONFIG_VETH)",
        ),
        (link_up(PEER_DEV), "bringing the veth peer up"),
        (link_up(ROUTE_DEV), "bringing the veth device up"),
    ];
    for (answer, what) in send(&sock, &links)? {
        answer.map_err(|e| format!("{what} in the jail's network namespace: {e}"))?;
    }
    let index = nix::net::if_::if_nametoindex(ROUTE_DEV)
        .map_err(|e| format!("finding {ROUTE_DEV} in the jail's network namespace: {e}"))?;
    let lo = nix::net::if_::if_nametoindex("lo")
        .map_err(|e| format!("finding lo in the jail's network namespace: {e}"))?;
    let v4 = IpAddr::V4(JAIL_V4);
    let v6 = IpAddr::V6(JAIL_V6);
    let mut routes = vec![
        (add_addr(v4, 32, index, 0), "adding the jail's IPv4 address"),
        (
            add_default_route(v4, index),
            "adding the IPv4 default route",
        ),
    ];
    routes.extend(divert(v4, lo));
    let v4_steps = routes.len();
    routes.extend([
        (
            add_addr(v6, 128, index, IFA_F_NODAD),
            "adding the jail's IPv6 address",
        ),
        (
            add_default_route(v6, index),
            "adding the IPv6 default route",
        ),
    ]);
    routes.extend(divert(v6, lo));
    let answers = send(&sock, &routes)?;
    for (answer, what) in &answers[..v4_steps] {
        if let Err(e) = answer {
            return Err(format!("{what} in the jail's network namespace: {e}"));
        }
    }
    // Without an IPv6 rule or route, IPv6 TCP and DNS take the default route into the veth
    // pair and are dropped: nothing leaves, and the jail has no IPv6.
    if let Some(e) = answers[v4_steps..]
        .iter()
        .find_map(|(a, _)| a.as_ref().err())
    {
        tracing::debug!(error = %e, "IPv6 is not usable in the jail");
        return Ok(false);
    }
    Ok(true)
}

/// A socket bound to `addr` (and listening, for TCP) that the `divert` chain may hand packets
/// for other addresses: `IP_TRANSPARENT` (which also covers an IPv6 socket) lets the kernel
/// give it those, and lets it answer from the address the client asked for.
fn bind(domain: Domain, ty: Type, addr: SocketAddr) -> Result<Socket, String> {
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(domain, ty, Some(proto)).map_err(|e| format!("socket for {addr}: {e}"))?;
    if domain == Domain::IPV6 {
        s.set_only_v6(true)
            .map_err(|e| format!("IPV6_V6ONLY on {addr}: {e}"))?;
    }
    if ty == Type::STREAM {
        s.set_reuse_address(true)
            .map_err(|e| format!("SO_REUSEADDR on {addr}: {e}"))?;
    }
    s.set_ip_transparent(true).map_err(|e| {
        format!("IP_TRANSPARENT on {addr} (needs CAP_NET_ADMIN in the jail's namespace): {e}")
    })?;
    bind_maybe_low(&s, addr).map_err(|e| format!("binding {addr} inside the jail: {e}"))?;
    if ty == Type::STREAM {
        s.listen(1024)
            .map_err(|e| format!("listening on {addr}: {e}"))?;
    }
    Ok(s)
}

/// The namespace's lowest port anyone may bind (`net.ipv4.ip_unprivileged_port_start`, for
/// IPv4 and IPv6 alike).
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Binds `addr`. A helper without a user namespace holds CAP_NET_ADMIN but not
/// CAP_NET_BIND_SERVICE, so a port below the namespace's unprivileged start (the DNS stub's
/// 53) is refused; CAP_NET_ADMIN may change that start in the jail's own namespace, so the
/// helper lowers it for this bind and puts it back at once (the target never runs with it).
fn bind_maybe_low(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    match s.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let was = std::fs::read_to_string(UNPRIVILEGED_PORT_START)?;
            std::fs::write(UNPRIVILEGED_PORT_START, addr.port().to_string())?;
            let bound = s.bind(&addr.into());
            std::fs::write(UNPRIVILEGED_PORT_START, was.trim())?;
            bound
        }
        other => other,
    }
}

/// Sockets made inside the jail, each with what it is for.
pub type Sockets = Vec<(SocketKind, OwnedFd)>;

/// The sockets created inside the namespace: proxy TCP on 127.0.0.1 and ::1 at `proxy_port`
/// (0 picks one), DNS stub UDP and TCP on port 53 (a reply must come from the port the client
/// sent to). Returns them with the ports used.
pub fn create_sockets(proxy_port: u16, ipv6: bool) -> Result<(Sockets, u16, u16), String> {
    let lo4 = Ipv4Addr::LOCALHOST;
    let lo6 = Ipv6Addr::LOCALHOST;
    let mut out = Vec::new();
    let p4 = bind(Domain::IPV4, Type::STREAM, (lo4, proxy_port).into())?;
    let proxy = p4
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or("proxy listener has no port")?;
    out.push((SocketKind::ProxyTcp, OwnedFd::from(p4)));
    if ipv6 {
        let p6 = bind(Domain::IPV6, Type::STREAM, (lo6, proxy).into())?;
        out.push((SocketKind::ProxyTcp, OwnedFd::from(p6)));
    }
    let dns = DNS_PORT;
    out.push((
        SocketKind::DnsUdp,
        OwnedFd::from(bind(Domain::IPV4, Type::DGRAM, (lo4, dns).into())?),
    ));
    out.push((
        SocketKind::DnsTcp,
        OwnedFd::from(bind(Domain::IPV4, Type::STREAM, (lo4, dns).into())?),
    ));
    if ipv6 {
        out.push((
            SocketKind::DnsUdp,
            OwnedFd::from(bind(Domain::IPV6, Type::DGRAM, (lo6, dns).into())?),
        ));
        out.push((
            SocketKind::DnsTcp,
            OwnedFd::from(bind(Domain::IPV6, Type::STREAM, (lo6, dns).into())?),
        ));
    }
    Ok((out, proxy, dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::testns::{in_new_netns, run};

    /// Links, addresses and routes, without what comes from the veth pair's random MAC
    /// addresses (their own and the IPv6 link-local addresses made of them).
    fn read_back() -> String {
        let links = run(&["ip", "-o", "link", "show"], "");
        let links: Vec<&str> = links
            .lines()
            .map(|l| l.split(" link/").next().unwrap_or(l))
            .collect();
        let mut out = links.join("\n");
        out.push('\n');
        let addrs = run(&["ip", "-o", "addr", "show"], "");
        let addrs: Vec<&str> = addrs
            .lines()
            .filter(|l| !l.contains("inet6 fe80::"))
            .collect();
        out.push_str(&addrs.join("\n"));
        for cmd in [
            &["ip", "-4", "route", "show", "table", "all"][..],
            &["ip", "-6", "route", "show", "table", "all"],
            &["ip", "-4", "rule", "show"],
            &["ip", "-6", "rule", "show"],
        ] {
            out.push('\n');
            out.push_str(&run(cmd, ""));
        }
        out
    }

    /// [`read_back`] once the veth pair's carrier is up on both ends: the kernel brings it up
    /// and adds the routes that follow from it a moment after the request (link watch), on its
    /// own schedule whoever made the link.
    fn settled() -> String {
        for _ in 0..100 {
            let now = read_back();
            let up = |dev: &str| {
                now.lines()
                    .any(|l| l.contains(&format!(": {dev}@")) && l.contains("state UP"))
            };
            if up(ROUTE_DEV) && up(PEER_DEV) {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the veth pair never came up:\n{}", read_back());
    }

    #[test]
    fn links_addresses_and_routes_are_what_ip_made() {
        let ours = in_new_netns(|| {
            assert!(setup_links().unwrap(), "IPv6 is usable on this host");
            settled()
        });
        // What boundary ran before issue 15.
        let batch = format!(
            "link set lo up\n\
             link add {ROUTE_DEV} type veth peer name {PEER_DEV}\n\
             link set {PEER_DEV} up\n\
             link set {ROUTE_DEV} up\n\
             addr add {JAIL_V4}/32 dev {ROUTE_DEV}\n\
             route add default dev {ROUTE_DEV}\n\
             rule add ipproto tcp lookup 100 pref 100\n\
             rule add ipproto udp dport 53 lookup 100 pref 101\n\
             route add local default dev lo table 100 src {JAIL_V4}\n\
             addr add {JAIL_V6}/128 dev {ROUTE_DEV} nodad\n\
             route add ::/0 dev {ROUTE_DEV}\n"
        );
        // IPv6 rules need `ip -6`.
        let batch6 = "rule add ipproto tcp lookup 100 pref 100\n\
                      rule add ipproto udp dport 53 lookup 100 pref 101\n"
            .to_string();
        let route6 = format!("route add local ::/0 dev lo table 100 src {JAIL_V6}\n");
        let ips = in_new_netns(move || {
            run(&["ip", "-force", "-batch", "-"], &batch);
            run(&["ip", "-6", "-force", "-batch", "-"], &batch6);
            run(&["ip", "-force", "-batch", "-"], &route6);
            settled()
        });
        assert_eq!(ours, ips);
        assert!(ours.contains("default dev bnd0"), "{ours}");
        assert!(
            ours.contains("local default dev lo table 100")
                && ours.contains("ipproto udp dport 53 lookup 100"),
            "{ours}"
        );
    }

    #[test]
    fn without_ipv6_the_links_are_made_and_only_ipv6_is_left_out() {
        let (ipv6, state) = in_new_netns(|| {
            // New devices of this namespace get IPv6 disabled, as on a host that turned it off.
            std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1").unwrap();
            (setup_links().unwrap(), settled())
        });
        assert!(!ipv6, "{state}");
        assert!(
            state.contains("169.254.253.1/32") && state.contains("default dev bnd0"),
            "{state}"
        );
        assert!(!state.contains("fd62:"), "{state}");
    }

    #[test]
    fn a_second_veth_of_the_same_name_is_an_error_naming_the_step() {
        let e = in_new_netns(|| {
            setup_links().unwrap();
            setup_links().unwrap_err()
        });
        assert!(
            e.contains("creating the veth pair") && e.contains("exists"),
            "{e}"
        );
    }
}

/// The whole network set-up (links, routing, sockets, ruleset) in a new namespace: TCP and DNS
/// to addresses nobody has reach the jail's own sockets with their addresses kept, and no
/// packet is tracked (issue 15: the NAT redirect this replaced turned conntrack on for every
/// packet of the jail).
#[cfg(test)]
mod diverted {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::time::Duration;

    use super::*;
    use crate::dns::{self, DnsMode, DnsSockets};
    use crate::netlink::testns::in_new_netns;

    /// An A query for `bench.test` with id 0x4242.
    fn query() -> Vec<u8> {
        let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["bench", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// The next connection `listener` accepts, within 5 s (a connection that went elsewhere
    /// fails the test instead of hanging it).
    fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
        listener.set_nonblocking(true).unwrap();
        for _ in 0..500 {
            match listener.accept() {
                Ok((s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return (s, peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("nothing reached {:?}", listener.local_addr());
    }

    fn connect(to: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn conntrack_count() -> String {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn tcp_and_dns_to_any_address_reach_the_jail_s_sockets_unchanged_and_untracked() {
        let report = in_new_netns(|| {
            assert!(setup_links().unwrap(), "IPv6 is usable on this host");
            let (sockets, proxy, dns_port) = create_sockets(0, true).unwrap();
            super::super::nft::install(proxy, dns_port).unwrap();
            let mut proxies = Vec::new();
            let mut stub = DnsSockets::default();
            for (kind, fd) in sockets {
                match kind {
                    SocketKind::ProxyTcp => proxies.push(TcpListener::from(fd)),
                    SocketKind::DnsUdp => stub.udp.push(std::net::UdpSocket::from(fd)),
                    SocketKind::DnsTcp => stub.tcp.push(TcpListener::from(fd)),
                    _ => unreachable!(),
                }
            }
            let _stub = dns::spawn(stub, DnsMode::Answer).unwrap();
            let mut out = Vec::new();
            for (listener, dst, jail) in [
                (&proxies[0], "192.0.2.7:443", IpAddr::V4(JAIL_V4)),
                (&proxies[1], "[2001:db8::7]:8443", IpAddr::V6(JAIL_V6)),
            ] {
                let dst: SocketAddr = dst.parse().unwrap();
                let mut client = connect(dst);
                let (mut accepted, peer) = accept(listener);
                // The proxy's socket has the address the client asked for; the client's is
                // the jail's own.
                assert_eq!(accepted.local_addr().unwrap(), dst);
                assert_eq!(peer, client.local_addr().unwrap());
                assert_eq!(peer.ip(), jail);
                accepted.write_all(b"hello").unwrap();
                let mut got = [0u8; 5];
                client.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"hello");

                // DNS to the same address over UDP, from a connected socket (it takes a reply
                // only from where it sent), and over TCP.
                let resolver = SocketAddr::new(dst.ip(), 53);
                let any: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                    .parse()
                    .unwrap();
                let udp = UdpSocket::bind(any).unwrap();
                udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                udp.connect(resolver).unwrap();
                udp.send(&query()).unwrap();
                let mut answer = [0u8; 512];
                let n = udp.recv(&mut answer).unwrap();
                assert!(n > 12 && answer[..2] == [0x42, 0x42], "{:?}", &answer[..n]);
                let mut tcp = connect(resolver);
                let q = query();
                tcp.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
                tcp.write_all(&q).unwrap();
                let mut len = [0u8; 2];
                tcp.read_exact(&mut len).unwrap();
                let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
                tcp.read_exact(&mut answer).unwrap();
                assert_eq!(answer[..2], [0x42, 0x42]);
                out.push(format!("{dst} ok"));
            }
            // Positive control: the jail's loopback is reached as such, not diverted.
            let own = TcpListener::bind("127.0.0.1:0").unwrap();
            let _c = connect(own.local_addr().unwrap());
            let (a, _) = accept(&own);
            assert_eq!(a.local_addr().unwrap(), own.local_addr().unwrap());
            (out, conntrack_count())
        });
        assert_eq!(report.0.len(), 2, "{report:?}");
        assert_eq!(
            report.1, "0",
            "connections in the jail were tracked: {report:?}"
        );
    }
}
