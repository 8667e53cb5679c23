//! The selftest's probe table as data: what each row probes, for which jail, and what result
//! proves the jail holds. The runner (`mod.rs`) fills in this run's values ([`Arg`]) and
//! judges each [`ProbeResult`] with the row's [`Expect`]; the rows of the other files
//! (`seccomp.rs`, `unix.rs`, `kernel.rs`) are tables of the same type.

use std::net::IpAddr;
use std::path::PathBuf;

use boundary_jail::probe::ProbeResult;

use super::{BLOCKED, HOST, MARKER};

/// Which runs a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum When {
    Always,
    Nsjail,
    Landjail,
    /// Only when the selftest made a far host (as root).
    FarHost,
    /// Only when boundary runs as root (the jailed command would be uid 0 for host files).
    Root,
    /// nsjail, or landjail run by root.
    NsjailOrRoot,
}

/// One probe argument: a literal, or a value of this run that the runner fills in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg {
    Lit(&'static str),
    /// The far host's IPv4 / IPv6 address (or the stand-ins used without one).
    Far4,
    Far6,
    /// Where a jailed client sends plain HTTP for the embedded upstream: host, then port (the
    /// upstream itself under nsjail, the proxy under landjail).
    HttpHost,
    HttpPort,
    /// A GET for this path on the embedded upstream, in the form the jail type needs.
    HttpGet(&'static str),
    /// A GET sent straight to `Far4` / `Far6` on this port.
    Direct4(u16),
    Direct6(u16),
    /// A DNS query (type A, `selftest.example`).
    DnsQuery,
    /// The stand-in for the Coder agent's audit socket.
    AuditSocket,
    /// A Unix socket the selftest serves under this name in its temporary directory.
    HostSocket(&'static str),
    /// A datagram socket of this name in the selftest's directory, bound by the runner; nothing
    /// reads it.
    HostDatagram(&'static str),
    /// The selftest's own pid, a process outside the jail.
    Me,
    /// The selftest's own network namespace (`/proc/<me>/ns/net`).
    MyNetns,
    /// The far host's near namespace.
    NearNetns,
    /// Each of these paths.
    Paths(&'static [&'static str]),
    /// The control files of the cgroup the selftest runs in; a row with none is left out.
    OwnCgroups,
}

/// What result proves the row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// The kernel or the jail said no.
    Refused,
    /// The proxy answered with its 403 page.
    Intercepted,
    /// The upstream's answer came through the proxy.
    Allowed,
    /// The proxy's 403 page, and nothing of the upstream's.
    Denied,
    /// The DNS stub answered (with its fixed 6.6.6.6).
    DnsStub,
    /// The file was read.
    Read,
    /// The selftest's own process is not among those visible.
    Invisible,
    /// Shown, never a failure.
    Info,
}

impl Expect {
    /// Whether `r` is what this row wants.
    pub(super) fn holds(self, r: &ProbeResult) -> bool {
        let (w, d) = (r.word.as_str(), r.detail.as_str());
        let blocked = w == "connected" && d.contains(" 403 ") && d.contains(BLOCKED);
        match self {
            Expect::Refused => r.refused(),
            Expect::Intercepted => blocked,
            Expect::Allowed => w == "connected" && d.contains(" 200 ") && d.contains(MARKER),
            Expect::Denied => blocked && !d.contains(MARKER),
            Expect::DnsStub => w == "reply" && d.contains("\\x06\\x06\\x06\\x06"),
            Expect::Read => w == "read",
            Expect::Invisible => w.starts_with("visible=") && d.contains("host_pid_visible=false"),
            Expect::Info => true,
        }
    }
}

/// One row: a named probe, the runs it belongs to, its arguments and its expectation.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProbeSpec {
    pub name: &'static str,
    pub when: When,
    pub kind: &'static str,
    pub args: &'static [Arg],
    pub expect: Expect,
}

pub(super) const fn row(
    name: &'static str,
    when: When,
    kind: &'static str,
    args: &'static [Arg],
    expect: Expect,
) -> ProbeSpec {
    ProbeSpec {
        name,
        when,
        kind,
        args,
        expect,
    }
}

use Arg::*;
use Expect::*;
use When::*;

/// The network, file, socket, process and namespace rows (before the other files' rows).
#[rustfmt::skip]
pub(super) const NETWORK_AND_HOST: &[ProbeSpec] = &[
    row("allowed HTTP request passes", Always, "tcp", &[HttpHost, HttpPort, HttpGet("/allowed")], Allowed),
    row("denied HTTP request gets 403 with the text", Always, "tcp", &[HttpHost, HttpPort, HttpGet("/denied")], Denied),
    row("direct TCP to an IP:port is intercepted", Nsjail, "tcp", &[Far4, Lit("9"), Direct4(9)], Intercepted),
    row("direct TCP to an IP:port is refused", Landjail, "tcp", &[Far4, Lit("9"), Direct4(9)], Refused),
    row("direct TCP over IPv6 is intercepted", Nsjail, "tcp", &[Far6, Lit("443"), Direct6(443)], Intercepted),
    row("direct TCP over IPv6 is refused", Landjail, "tcp", &[Far6, Lit("443"), Direct6(443)], Refused),
    row("UDP DNS to a public resolver is answered by the stub", Nsjail, "udp", &[Far4, Lit("53"), DnsQuery], DnsStub),
    row("UDP DNS to a public resolver is refused", Landjail, "udp", &[Far4, Lit("53"), DnsQuery], Refused),
    row("UDP to port 443 (QUIC) is blocked", Always, "udp", &[Far4, Lit("443")], Refused),
    row("UDP over IPv6 is blocked", Always, "udp", &[Far6, Lit("443")], Refused),
    row("ICMP echo is blocked", Always, "icmp", &[Far4], Refused),
    row("ICMPv6 echo is blocked", Always, "icmp", &[Far6], Refused),
    row("raw and packet sockets are refused", Always, "raw", &[], Refused),
    row("netlink (route) changes are refused", Always, "netlink", &[], Refused),
    row("nftables changes are refused", Always, "nft", &[], Refused),
    // The CA the jail was told to trust, wherever boundary put it (landjail: a per-run CA
    // whose key never stays on disk), resolved by the probe from the jailed environment.
    row("the CA private key is unreadable", Always, "read", &[Lit("$SSL_CERT_DIR/ca-key.pem")], Refused),
    row("the CA certificate is readable", Always, "read", &[Lit("$SSL_CERT_FILE")], Read),
    row("the audit socket is unreachable", Always, "unix", &[AuditSocket], Refused),
    row("host processes cannot be signalled", Always, "signal", &[Me], Refused),
    row("setns into another namespace is refused", Always, "setns", &[MyNetns], Refused),
];

/// The rows after the other files' rows.
#[rustfmt::skip]
pub(super) const PROCESSES: &[ProbeSpec] = &[
    row("host processes are visible (landjail has no PID namespace)", Landjail, "procs", &[Me], Info),
    row("host processes are invisible", Nsjail, "procs", &[Me], Invisible),
    row("setns into the far host's neighbour is refused", FarHost, "setns", &[NearNetns], Refused),
];

/// This run's values for the [`Arg`] placeholders.
pub(super) struct Values {
    pub landjail: bool,
    pub far_host: bool,
    /// The selftest runs as root.
    pub root: bool,
    pub far4: IpAddr,
    pub far6: IpAddr,
    /// The embedded upstream's plain HTTP port, and the proxy's port.
    pub http_port: u16,
    pub proxy_port: u16,
    pub dir: PathBuf,
    pub audit: PathBuf,
    pub me: u32,
    pub near_netns: String,
    pub cgroups: Vec<String>,
}

impl Values {
    /// The probe's argument list for `spec` (`[kind, args...]`), or `None` if the row does
    /// not belong to this run.
    pub(super) fn expand(&self, spec: &ProbeSpec) -> Option<Vec<String>> {
        let applies = match spec.when {
            Always => true,
            Nsjail => !self.landjail,
            Landjail => self.landjail,
            FarHost => self.far_host,
            Root => self.root,
            NsjailOrRoot => !self.landjail || self.root,
        };
        if !applies {
            return None;
        }
        let mut out = vec![spec.kind.to_string()];
        for arg in spec.args {
            match arg {
                Paths(paths) => out.extend(paths.iter().map(|p| p.to_string())),
                OwnCgroups if self.cgroups.is_empty() => return None,
                OwnCgroups => out.extend(self.cgroups.iter().cloned()),
                one => out.push(self.value(*one)),
            }
        }
        Some(out)
    }

    fn value(&self, arg: Arg) -> String {
        match arg {
            Lit(s) => s.to_string(),
            Far4 => self.far4.to_string(),
            Far6 => self.far6.to_string(),
            HttpHost if self.landjail => "127.0.0.1".into(),
            HttpHost => HOST.into(),
            HttpPort if self.landjail => self.proxy_port.to_string(),
            HttpPort => self.http_port.to_string(),
            HttpGet(path) => self.http_get(path),
            Direct4(port) => direct(self.far4, port),
            Direct6(port) => direct(self.far6, port),
            DnsQuery => dns_query(),
            AuditSocket => self.audit.to_string_lossy().into_owned(),
            HostSocket(name) | HostDatagram(name) => {
                self.dir.join(name).to_string_lossy().into_owned()
            }
            Me => self.me.to_string(),
            MyNetns => format!("/proc/{}/ns/net", self.me),
            NearNetns => self.near_netns.clone(),
            Paths(_) | OwnCgroups => unreachable!("lists are expanded by `expand`"),
        }
    }

    /// landjail has no transparent path: clients speak to the proxy (absolute-form requests).
    fn http_get(&self, path: &str) -> String {
        let port = self.http_port;
        let target = if self.landjail {
            format!("http://{HOST}:{port}{path}")
        } else {
            path.to_string()
        };
        format!("GET {target} HTTP/1.1\\r\\nHost: {HOST}:{port}\\r\\nConnection: close\\r\\n\\r\\n")
    }
}

/// A GET straight to `ip:port`, escaped for the probe's command line.
fn direct(ip: IpAddr, port: u16) -> String {
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("GET / HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nConnection: close\\r\\n\\r\\n")
}

/// A DNS query for `selftest.example` type A, escaped for the probe's command line.
fn dns_query() -> String {
    let mut q: Vec<u8> = vec![0xbd, 0x01, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["selftest", "example"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(landjail: bool, far_host: bool) -> Values {
        Values {
            landjail,
            far_host,
            root: false,
            far4: "192.0.2.10".parse().unwrap(),
            far6: "2001:db8::10".parse().unwrap(),
            http_port: 8081,
            proxy_port: 8082,
            dir: PathBuf::from("/tmp/st"),
            audit: PathBuf::from("/tmp/st/audit.sock"),
            me: 42,
            near_netns: "/run/netns/near".into(),
            cgroups: Vec::new(),
        }
    }

    fn rows(v: &Values) -> Vec<(&'static str, Vec<String>)> {
        super::super::TABLES
            .iter()
            .flat_map(|t| t.iter())
            .filter_map(|s| v.expand(s).map(|a| (s.name, a)))
            .collect()
    }

    #[test]
    fn each_jail_gets_one_row_per_check_with_this_runs_values() {
        for landjail in [false, true] {
            let v = values(landjail, true);
            let rows = rows(&v);
            let mut names: Vec<_> = rows.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), rows.len(), "a check appears twice");
            let direct = rows
                .iter()
                .find(|(n, _)| n.starts_with("direct TCP to an IP:port"))
                .unwrap();
            assert_eq!(direct.1[..3], ["tcp", "192.0.2.10", "9"]);
            let allowed = &rows[0].1;
            let want_port = if landjail { "8082" } else { "8081" };
            assert_eq!(allowed[2], want_port, "{allowed:?}");
            assert_eq!(allowed[3].contains("http://"), landjail, "{allowed:?}");
            // No cgroup files on this "host": that row is left out, not sent empty.
            assert!(rows.iter().all(|(_, a)| a.len() > 1 || a[0] != "kwrite"));
            assert!(!rows.iter().any(|(n, _)| n.contains("cgroups")));
        }
        let without = rows(&values(false, false));
        assert!(!without.iter().any(|(n, _)| n.contains("far host")));
    }

    #[test]
    fn expectations_read_the_probe_result() {
        let r = |word: &str, detail: &str| ProbeResult {
            index: 0,
            kind: "tcp".into(),
            word: word.into(),
            detail: detail.into(),
        };
        let page = format!("1.2.3.4:9 response=HTTP/1.1 403 Forbidden {BLOCKED}");
        assert!(Expect::Intercepted.holds(&r("connected", &page)));
        assert!(!Expect::Intercepted.holds(&r("refused", &page)));
        assert!(!Expect::Denied.holds(&r("connected", &format!("{page} {MARKER}"))));
        assert!(Expect::Refused.holds(&r("refused", "EPERM")));
        assert!(!Expect::Refused.holds(&r("connected", "")));
        assert!(Expect::Info.holds(&r("anything", "")));
    }
}
