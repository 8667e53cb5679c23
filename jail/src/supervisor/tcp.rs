//! TCP decisions of the supervisor: which destinations a jailed `connect()` may reach in
//! landjail (the proxy, and loopback servers of the jail itself), and which addresses a jailed
//! listener may listen on (loopback only, so nothing outside the host reaches a jailed server).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

use tracing::{info, warn};

use super::diag::{self, InetListener};

/// Parses an AF_INET/AF_INET6 address the way the kernel does (length checks included).
pub(crate) fn parse_inet(addr: &[u8]) -> Result<SocketAddr, i32> {
    if addr.len() < 2 {
        return Err(libc::EINVAL);
    }
    let family = u16::from_ne_bytes([addr[0], addr[1]]) as i32;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    if addr.len() < 16 {
        return Err(libc::EINVAL);
    }
    let port = u16::from_be_bytes([addr[2], addr[3]]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]);
            Ok(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&addr[8..24]);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => Err(libc::EINVAL),
    }
}

/// Whether `dest` is one of the proxy's listeners (IPv4-mapped IPv6 counts as IPv4).
pub(crate) fn allowed(dest: SocketAddr, proxy: &HashSet<SocketAddr>) -> bool {
    let canon = match dest {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => dest,
        },
        v4 => v4,
    };
    proxy.contains(&canon)
}

pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Whether a listener would take a connection to `dest` (same address or a wildcard; an
/// IPv6 wildcard may be dual-stack, so it counts for IPv4 too).
pub(crate) fn listener_matches(l: &InetListener, dest: SocketAddr) -> bool {
    if l.port != dest.port() {
        return false;
    }
    let dest_ip = match dest.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match (l.ip, dest_ip) {
        (IpAddr::V4(a), IpAddr::V4(d)) => a == d || a.is_unspecified(),
        (IpAddr::V6(a), IpAddr::V4(d)) => a.is_unspecified() || a.to_ipv4_mapped() == Some(d),
        (IpAddr::V6(a), IpAddr::V6(d)) => a == d || a.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Allows a loopback destination only when every socket listening there is the jail's own.
///
/// The listeners are asked of the kernel (`sock_diag`, [`diag::tcp_listeners`]) from the
/// supervisor's network namespace, which is the target's: landjail keeps the host's network
/// namespace and its filter refuses new ones. A query that fails refuses the connect.
pub(crate) fn local_listener_is_jails(
    dest: SocketAddr,
    jail_listeners: &Mutex<HashSet<u64>>,
    tid: u32,
) -> Result<(), i32> {
    let matching = loopback_listeners(dest).map_err(|e| {
        warn!(%dest, tid, error = %e, "landjail: refused a loopback connect: cannot list the listeners there (sock_diag)");
        libc::EACCES
    })?;
    if matching.is_empty() {
        return Err(libc::ECONNREFUSED);
    }
    let set = jail_listeners.lock().unwrap_or_else(|p| p.into_inner());
    if matching.iter().all(|l| set.contains(&l.inode)) {
        Ok(())
    } else {
        let owners: Vec<u32> = matching
            .iter()
            .filter(|l| !set.contains(&l.inode))
            .map(|l| l.uid)
            .collect();
        info!(%dest, tid, listener_uids = ?owners, "landjail: refused a connect to a loopback service outside the jail");
        Err(libc::EACCES)
    }
}

/// The listening sockets that would take a connection to `dest`: IPv4 and IPv6 listeners on
/// its port for an IPv4 destination (an IPv6 wildcard may be dual-stack), IPv6 ones for IPv6.
fn loopback_listeners(dest: SocketAddr) -> std::io::Result<Vec<InetListener>> {
    let sock = diag::open()?;
    let families: &[i32] = match dest.ip() {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => &[libc::AF_INET6],
        _ => &[libc::AF_INET, libc::AF_INET6],
    };
    let mut out = Vec::new();
    for &family in families {
        out.extend(
            diag::tcp_listeners(&sock, family, dest.port())?
                .into_iter()
                .filter(|l| listener_matches(l, dest)),
        );
    }
    Ok(out)
}

/// Whether a jailed socket bound to `local` may listen: only on loopback (127.0.0.0/8, ::1, and
/// IPv4-mapped loopback on an IPv6 socket). An unbound socket reports the wildcard address
/// (`listen()` would bind it to every address), so it is refused too; so is `::` even with
/// `IPV6_V6ONLY`, which still takes connections from every IPv6 address of the host.
pub(crate) fn may_listen_on(local: SocketAddr) -> bool {
    is_loopback(local.ip())
}

/// Refuses (with the log line) a listen on a non-loopback address.
pub(crate) fn check_listen(local: SocketAddr, tid: u32) -> Result<(), i32> {
    if may_listen_on(local) {
        Ok(())
    } else {
        warn!(
            %local, tid,
            "landjail: refused listen() on a non-loopback address: jailed servers are reachable from this host only; bind 127.0.0.1 or ::1"
        );
        Err(libc::EACCES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_loopback_destinations() {
        let l = |ip: &str, port| InetListener {
            ip: ip.parse().unwrap(),
            port,
            inode: 1,
            uid: 0,
        };
        let d: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(listener_matches(&l("0.0.0.0", 80), d));
        assert!(listener_matches(&l("127.0.0.1", 80), d));
        assert!(listener_matches(&l("::", 80), d));
        assert!(!listener_matches(&l("127.0.0.2", 80), d));
        assert!(!listener_matches(&l("127.0.0.1", 81), d));
        assert!(!listener_matches(&l("::1", 80), d));
        let d6: SocketAddr = "[::1]:80".parse().unwrap();
        assert!(listener_matches(&l("::1", 80), d6));
        assert!(!listener_matches(&l("127.0.0.1", 80), d6));
    }

    #[test]
    fn only_the_proxy_listeners_are_allowed() {
        let p: HashSet<SocketAddr> = ["127.0.0.1:8080", "[::1]:8080"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(allowed("127.0.0.1:8080".parse().unwrap(), &p));
        assert!(allowed("[::ffff:127.0.0.1]:8080".parse().unwrap(), &p));
        assert!(allowed("[::1]:8080".parse().unwrap(), &p));
        assert!(!allowed("127.0.0.2:8080".parse().unwrap(), &p));
        assert!(!allowed("10.0.0.1:8080".parse().unwrap(), &p));
        assert!(!allowed("127.0.0.1:8081".parse().unwrap(), &p));
        assert!(!allowed("0.0.0.0:8080".parse().unwrap(), &p));
    }

    #[test]
    fn short_or_foreign_addresses_are_rejected_like_the_kernel_does() {
        let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&[0, 80, 127, 0, 0, 1]);
        assert_eq!(parse_inet(&a), Err(libc::EINVAL));
        a.extend_from_slice(&[0; 8]);
        assert_eq!(parse_inet(&a), Ok("127.0.0.1:80".parse().unwrap()));
        let mut b = a.clone();
        b[0..2].copy_from_slice(&(libc::AF_APPLETALK as u16).to_ne_bytes());
        assert_eq!(parse_inet(&b), Err(libc::EAFNOSUPPORT));
        // Any length the target may pass, however short, is an error and never a panic.
        for n in 0..a.len() {
            assert!(parse_inet(&a[..n]).is_err(), "length {n}");
        }
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.resize(23, 0);
        assert_eq!(parse_inet(&v6), Err(libc::EINVAL));
        v6.push(0);
        assert!(parse_inet(&v6).is_ok());
    }

    #[test]
    fn listeners_are_loopback_only() {
        for ok in [
            "127.0.0.1:80",
            "127.1.2.3:0",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(may_listen_on(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "0.0.0.0:80",
            "0.0.0.0:0",
            "[::]:80",
            "[::ffff:0.0.0.0]:80",
            "10.0.0.1:80",
            "[fe80::1]:80",
            "[::ffff:10.0.0.1]:80",
            "192.168.1.1:8080",
        ] {
            assert!(!may_listen_on(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn a_loopback_listener_is_reachable_only_when_it_is_the_jails() {
        use std::os::unix::fs::MetadataExt;
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let l = std::net::TcpListener::bind(addr).unwrap();
            let dest = l.local_addr().unwrap();
            let ino = std::fs::File::from(std::os::fd::OwnedFd::from(l.try_clone().unwrap()))
                .metadata()
                .unwrap()
                .ino();
            let jail = Mutex::new(HashSet::new());
            assert_eq!(local_listener_is_jails(dest, &jail, 0), Err(libc::EACCES));
            jail.lock().unwrap().insert(ino);
            assert_eq!(local_listener_is_jails(dest, &jail, 0), Ok(()));
            drop(l);
            assert_eq!(
                local_listener_is_jails(dest, &jail, 0),
                Err(libc::ECONNREFUSED)
            );
        }
    }
}
