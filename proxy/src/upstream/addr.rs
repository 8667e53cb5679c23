//! Which upstream addresses the proxy refuses by default, and the answers it pinned when it
//! checked them.
//!
//! Rules name hosts, not addresses: an allowed name that resolves to `127.0.0.1` would reach
//! every port of the host's loopback, one resolving to `169.254.169.254` the cloud metadata
//! service. So the addresses a request would connect to are checked after resolution, and the
//! connector then connects to exactly the checked answer (the pin) instead of resolving again,
//! so a resolver that changes its answer (DNS rebinding) cannot slip a local address in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why `ip` is refused as an upstream address by default, or `None` when it is not.
pub fn local_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if o[0] == 0 {
        Some("unspecified (\"this host\", 0.0.0.0/8)")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("link-local (the cloud metadata service)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata service (Alibaba Cloud)")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata service (AWS, IPv6)")
    } else if let Some(v4) = embedded_v4(ip) {
        v4_reason(v4)
    } else {
        None
    }
}

/// `Some` when `ip` (or the IPv4 address inside it) is assigned to one of this host's network
/// interfaces: a service bound to `0.0.0.0` on the host (a Docker bridge's gateway, the
/// workspace's own apps) answers there as it does on loopback. Read from the interface list
/// each time (addresses come and go), so only on fresh resolutions and for a destination on
/// the proxy's own port, never per request. Also what tells whether such a destination is the
/// proxy itself (`ConnectorSettings::is_self`).
pub fn host_reason(ip: IpAddr) -> Option<&'static str> {
    let wanted = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        // Cannot tell: refuse rather than reach the host by its own address.
        return Some("possibly this host's own (its interface list could not be read)");
    };
    let mine = list.filter_map(|i| i.address).any(|a| {
        a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(wanted)
            || a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(wanted)
    });
    mine.then_some("this host's own (assigned to one of its interfaces)")
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 well-known-prefix (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let head_zero = s[..5].iter().all(|x| *x == 0);
    if head_zero && (s[5] == 0xffff || s[5] == 0) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

/// How long a checked answer is reused when deciding, before the name is resolved again.
const FRESH: Duration = Duration::from_secs(10);
/// Names kept; beyond it stale pins are dropped (and all of them if none is stale).
const MAX_PINS: usize = 4096;

/// A checked answer and when it was checked.
type Pin = (Vec<SocketAddr>, Instant);

/// The last checked answer for each `name:port`, which the connector uses instead of asking
/// the resolver again.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    map: Mutex<HashMap<(String, u16), Pin>>,
}

impl Pins {
    /// The pinned answer, whatever its age (it was checked when pinned).
    pub(crate) fn get(&self, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(host.to_string(), port)).map(|(a, _)| a.clone())
    }

    /// Whether a pin younger than [`FRESH`] exists.
    pub(crate) fn is_fresh(&self, host: &str, port: u16) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(host.to_string(), port))
            .is_some_and(|(_, at)| at.elapsed() < FRESH)
    }

    pub(crate) fn put(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PINS {
            map.retain(|_, (_, at)| at.elapsed() < FRESH);
            if map.len() >= MAX_PINS {
                map.clear();
            }
        }
        map.insert((host.to_string(), port), (addrs, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::local_reason;
    use std::net::IpAddr;

    #[test]
    fn local_addresses_and_their_disguises_are_refused() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "169.254.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(local_reason(ip).is_some(), "{a} must be refused");
        }
        for a in [
            "192.0.2.10",
            "10.1.2.3",
            "100.100.100.100",
            "8.8.8.8",
            "2001:db8::1",
            "fd00::1",
            "::ffff:192.0.2.1",
            "fec0::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(local_reason(ip), None, "{a} is not local");
        }
    }
}
