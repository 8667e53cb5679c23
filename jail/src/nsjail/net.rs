//! The jail's network namespace: loopback, a default route into a veth pair that leads nowhere,
//! the listening sockets, and the nftables ruleset that sends all TCP to the proxy, DNS to the
//! stub and drops everything else leaving the namespace.
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
const RTN_UNICAST: u8 = 1;
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
    let v4 = IpAddr::V4(JAIL_V4);
    let v6 = IpAddr::V6(JAIL_V6);
    let routes = [
        (add_addr(v4, 32, index, 0), "adding the jail's IPv4 address"),
        (
            add_default_route(v4, index),
            "adding the IPv4 default route",
        ),
        (
            add_addr(v6, 128, index, IFA_F_NODAD),
            "adding the jail's IPv6 address",
        ),
        (
            add_default_route(v6, index),
            "adding the IPv6 default route",
        ),
    ];
    let answers = send(&sock, &routes)?;
    for (answer, what) in &answers[..2] {
        if let Err(e) = answer {
            return Err(format!("{what} in the jail's network namespace: {e}"));
        }
    }
    if let Some(e) = answers[2..].iter().find_map(|(a, _)| a.as_ref().err()) {
        tracing::debug!(error = %e, "IPv6 is not usable in the jail");
        return Ok(false);
    }
    Ok(true)
}

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
    s.bind(&addr.into())
        .map_err(|e| format!("binding {addr} inside the jail: {e}"))?;
    if ty == Type::STREAM {
        s.listen(1024)
            .map_err(|e| format!("listening on {addr}: {e}"))?;
    }
    Ok(s)
}

/// Sockets made inside the jail, each with what it is for.
pub type Sockets = Vec<(SocketKind, OwnedFd)>;

/// The sockets created inside the namespace: proxy TCP on 127.0.0.1 and ::1 at `proxy_port`
/// (0 picks one), DNS stub UDP and TCP on one free port. Returns them with the ports used.
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
    let d4 = bind(Domain::IPV4, Type::DGRAM, (lo4, 0).into())?;
    let dns = d4
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .ok_or("DNS socket has no port")?;
    out.push((SocketKind::DnsUdp, OwnedFd::from(d4)));
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
            &["ip", "-4", "route", "show", "table", "all"],
            &["ip", "-6", "route", "show", "table", "all"],
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
             addr add {JAIL_V6}/128 dev {ROUTE_DEV} nodad\n\
             route add ::/0 dev {ROUTE_DEV}\n"
        );
        let ips = in_new_netns(move || {
            run(&["ip", "-force", "-batch", "-"], &batch);
            settled()
        });
        assert_eq!(ours, ips);
        assert!(ours.contains("default dev bnd0"), "{ours}");
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
