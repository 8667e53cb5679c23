//! The jail's network namespace: loopback, a default route into a veth pair that leads nowhere,
//! the listening sockets, and the nftables ruleset that sends all TCP to the proxy, DNS to the
//! stub and drops everything else leaving the namespace.
//!
//! `ip` and `nft` are run as tools (Debian `iproute2`, `nftables`) with CAP_NET_ADMIN raised as
//! an ambient capability so they keep it across exec even though our uid in the user namespace
//! is not 0. Both are checked for at start so a missing one is a clear error, not a jail that
//! half works.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use socket2::{Domain, Protocol, Socket, Type};

use super::wire::SocketKind;

/// Name of the veth end that carries the default routes (its peer is also inside the jail).
pub const ROUTE_DEV: &str = "bnd0";
/// Address of the jail's only non-loopback device (link-local: it names nothing outside).
pub const JAIL_V4: &str = "169.254.253.1/32";
/// IPv6 address of that device (ULA; nothing routes it).
pub const JAIL_V6: &str = "fd62:6f75:6e64::1/128";

/// Capability numbers (linux/capability.h) the helper's tools keep.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

fn run_tool(tool: &Path, args: &[&str], input: &str) -> Result<(), String> {
    let mut cmd = Command::new(tool);
    // CAP_NET_RAW only where the helper holds it (in its own user namespace); a privileged
    // helper without one holds CAP_NET_ADMIN, all `ip` and `nft` need.
    let caps: &'static [u32] = if crate::sys::caps_permitted(rustix::thread::CapabilitySet::NET_RAW)
    {
        &[CAP_NET_ADMIN, CAP_NET_RAW]
    } else {
        &[CAP_NET_ADMIN]
    };
    // The caller's environment (LD_PRELOAD and the like) must not reach a capable tool.
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::sys::exec_with_ambient(&mut cmd, caps);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("writing to {}: {e}", tool.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}\ninput was:\n{input}",
            tool.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Loopback up, the veth pair, addresses and the IPv4/IPv6 default routes into it, in one
/// `ip -force -batch` (one program start fewer than a batch per family). Returns whether IPv6
/// is usable in the jail: it may be disabled on this host, and then only IPv6 lines fail and
/// no IPv6 path exists at all, which is fine; a failed IPv4 line fails the start.
pub fn setup_links(ip: &Path) -> Result<bool, String> {
    let v4 = format!(
        "link set lo up\n\
         link add {ROUTE_DEV} type veth peer name bnd1\n\
         link set bnd1 up\n\
         link set {ROUTE_DEV} up\n\
         addr add {JAIL_V4} dev {ROUTE_DEV}\n\
         route add default dev {ROUTE_DEV}\n"
    );
    let v6 = format!(
        "addr add {JAIL_V6} dev {ROUTE_DEV} nodad\n\
         route add ::/0 dev {ROUTE_DEV}\n"
    );
    match run_tool(ip, &["-force", "-batch", "-"], &format!("{v4}{v6}")) {
        Ok(()) => Ok(true),
        Err(e) => {
            let failed = failed_batch_lines(&e);
            let v4_lines = v4.lines().count();
            if failed.is_empty() || failed.iter().any(|&n| n <= v4_lines) {
                Err(e)
            } else {
                tracing::debug!(error = %e, "IPv6 is not usable in the jail");
                Ok(false)
            }
        }
    }
}

/// The line numbers `ip -force -batch -` reports as failed (`Command failed -:N`).
fn failed_batch_lines(output: &str) -> Vec<usize> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Command failed -:"))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
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

/// The ruleset: DNS (UDP and TCP port 53, any address) to the stub; TCP to the jail's own
/// loopback left alone; every other TCP connection, v4 and v6, to the proxy. On the way out
/// (postrouting, where the packet has its final interface) only loopback passes.
pub fn ruleset(proxy_port: u16, dns_port: u16) -> String {
    format!(
        "table inet boundary {{\n\
         \tchain redirect_out {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tmeta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns_port}\n\
         \t\tip daddr 127.0.0.0/8 return\n\
         \t\tip6 daddr ::1 return\n\
         \t\tmeta l4proto tcp redirect to :{proxy_port}\n\
         \t}}\n\
         \tchain leave {{\n\
         \t\ttype filter hook postrouting priority 100; policy drop;\n\
         \t\toifname \"lo\" accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Loads [`ruleset`] with `nft -f -`.
pub fn install_rules(nft: &Path, proxy_port: u16, dns_port: u16) -> Result<(), String> {
    run_tool(nft, &["-f", "-"], &ruleset(proxy_port, dns_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_ipv6_lines_leave_the_jail_without_ipv6() {
        let out = "Error: ipv6: IPv6 is disabled on this device.\nCommand failed -:7\n\
                   Error: IPv6 is disabled on nexthop device.\nCommand failed -:8";
        assert_eq!(failed_batch_lines(out), vec![7, 8]);
        assert_eq!(
            failed_batch_lines("Cannot find device\nCommand failed -:2"),
            vec![2]
        );
        assert!(failed_batch_lines("exit status 1, nothing else").is_empty());
    }

    #[test]
    fn ruleset_redirects_dns_before_the_loopback_exception() {
        let r = ruleset(8080, 5353);
        let dns = r.find("dport 53 redirect to :5353").expect("dns rule");
        let lo = r.find("127.0.0.0/8 return").expect("loopback exception");
        let tcp = r.find("tcp redirect to :8080").expect("tcp rule");
        assert!(dns < lo && lo < tcp, "{r}");
        assert!(r.contains("hook postrouting") && r.contains("policy drop"));
    }
}
