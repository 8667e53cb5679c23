//! The namespaces, link, addresses, counters and listeners of one far host.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{in_netns, io_err, require_root, run, Counters, Error, Result, Verdict};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// TCP ports the far host listens on (each answers `far-host\n` and closes).
pub const FAR_TCP_PORTS: &[u16] = &[22, 53, 80, 443, 8080];
/// UDP ports the far host answers on (echoes the datagram back).
pub const FAR_UDP_PORTS: &[u16] = &[53, 123, 443];

/// The far host's counters: every IP packet by protocol at the earliest hook, and non-IP
/// frames on the far interface (`{fi}` is its name).
const RULES: &str = r#"table inet farhost {
  counter n_tcp {}
  counter n_udp {}
  counter n_icmp {}
  counter n_icmpv6 {}
  counter n_other {}
  counter n_ipv6 {}
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    iifname "lo" accept
    meta nfproto ipv6 icmpv6 type { 130, 131, 132, 133, 134, 135, 136, 137, 143 } accept
    meta nfproto ipv6 counter name n_ipv6
    meta l4proto tcp counter name n_tcp accept
    meta l4proto udp counter name n_udp accept
    meta l4proto icmp counter name n_icmp accept
    meta l4proto ipv6-icmp counter name n_icmpv6 accept
    counter name n_other accept
  }
}
table netdev farhost_l2 {
  counter n_non_ip {}
  chain ingress {
    type filter hook ingress device "{fi}" priority -500; policy accept;
    ether type { ip, ip6, arp } accept
    counter name n_non_ip accept
  }
}
"#;

/// The far host's two nft tables, as `family name`.
const TABLES: [[&str; 2]; 2] = [["inet", "farhost"], ["netdev", "farhost_l2"]];

/// A near/far namespace pair; see the crate docs.
pub struct FarHost {
    /// Name of the near namespace (`ip netns exec <near>`), where boundary runs.
    pub near: String,
    /// Name of the far namespace.
    pub far: String,
    /// Interface names in the near and far namespaces.
    pub near_if: String,
    pub far_if: String,
    pub near_v4: Ipv4Addr,
    pub far_v4: Ipv4Addr,
    pub near_v6: Ipv6Addr,
    pub far_v6: Ipv6Addr,
    /// The far interface's link-local address (reach it as `fe80::..%<near_if>`).
    pub far_v6_ll: Ipv6Addr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FarHost {
    /// Creates the pair, addresses, routes, counters and listeners. Needs root.
    pub fn new() -> Result<FarHost> {
        require_root()?;
        let n = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("bnd-{pid}-{n}");
        // Unique /30 per instance (the pair is isolated anyway; unique just helps reading logs).
        let slot = (pid.wrapping_mul(31).wrapping_add(n)) % 16384;
        let (x, y) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let mut host = FarHost {
            near: format!("{base}-near"),
            far: format!("{base}-far"),
            near_if: "bnd-near".into(),
            far_if: "bnd-far".into(),
            near_v4: Ipv4Addr::new(10, 213, x, y + 1),
            far_v4: Ipv4Addr::new(10, 213, x, y + 2),
            near_v6: Ipv6Addr::new(0xfd00, 0x213, x.into(), y.into(), 0, 0, 0, 1),
            far_v6: Ipv6Addr::new(0xfd00, 0x213, x.into(), y.into(), 0, 0, 0, 2),
            far_v6_ll: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0x213, 2),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        host.setup()?;
        Ok(host)
    }

    fn setup(&mut self) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", &self.near]), None)?;
        run(Command::new("ip").args(["netns", "add", &self.far]), None)?;
        for ns in [&self.near, &self.far] {
            // No DAD (addresses usable at once), no router solicitations (no noise).
            for setting in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.router_solicitations=0",
                "net.ipv6.conf.default.router_solicitations=0",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ] {
                run(
                    Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting]),
                    None,
                )?;
            }
        }
        let (ni, fi, near, far) = (&self.near_if, &self.far_if, &self.near, &self.far);
        let link = format!("link add {ni} netns {near} type veth peer name {fi} netns {far}\n");
        run(Command::new("ip").args(["-batch", "-"]), Some(&link))?;
        // The near namespace routes everything to the far host, so "the internet" is the far
        // host; the far host routes back.
        let (n4, n6, f4, f6, ll) = (
            self.near_v4,
            self.near_v6,
            self.far_v4,
            self.far_v6,
            self.far_v6_ll,
        );
        let near_batch = format!(
            "link set lo up\nlink set {ni} up\naddr add {n4}/30 dev {ni}\naddr add {n6}/64 dev {ni} nodad\n\
             route add default via {f4}\nroute add ::/0 via {f6}\n"
        );
        let far_batch = format!(
            "link set lo up\nlink set {fi} up\naddr add {f4}/30 dev {fi}\naddr add {f6}/64 dev {fi} nodad\n\
             addr add {ll}/64 dev {fi} nodad\nroute add default via {n4}\nroute add ::/0 via {n6}\n"
        );
        run(
            Command::new("ip").args(["-n", far, "-batch", "-"]),
            Some(&far_batch),
        )?;
        run(
            Command::new("ip").args(["-n", near, "-batch", "-"]),
            Some(&near_batch),
        )?;
        let rules = RULES.replace("{fi}", fi);
        run(self.far_command("nft").args(["-f", "-"]), Some(&rules))?;
        self.start_listeners()
    }

    fn start_listeners(&mut self) -> Result<()> {
        let addrs: [IpAddr; 3] = [
            self.far_v4.into(),
            self.far_v6.into(),
            self.far_v6_ll.into(),
        ];
        let far_if = self.far_if.clone();
        let (tcp, udp) = in_netns(&self.far, move || -> Result<_> {
            let index = nix::net::if_::if_nametoindex(far_if.as_str())
                .map_err(|e| io_err("far interface index")(e.into()))?;
            let mut tcp = Vec::new();
            let mut udp = Vec::new();
            for ip in addrs {
                for &port in FAR_TCP_PORTS {
                    let addr = scoped(ip, port, index);
                    tcp.push(TcpListener::bind(addr).map_err(io_err(format!("bind tcp {addr}")))?);
                }
                for &port in FAR_UDP_PORTS {
                    let addr = scoped(ip, port, index);
                    udp.push(UdpSocket::bind(addr).map_err(io_err(format!("bind udp {addr}")))?);
                }
            }
            Ok((tcp, udp))
        })??;
        for l in tcp {
            l.set_nonblocking(true).map_err(io_err("listener"))?;
            let stop = self.stop.clone();
            self.threads
                .push(std::thread::spawn(move || serve_tcp(l, stop)));
        }
        for s in udp {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(io_err("udp socket"))?;
            let stop = self.stop.clone();
            self.threads
                .push(std::thread::spawn(move || serve_udp(s, stop)));
        }
        Ok(())
    }

    /// Reads the far host's counters.
    pub fn counters(&self) -> Result<Counters> {
        let mut text = String::new();
        for [family, table] in TABLES {
            text += &run(
                self.far_command("nft")
                    .args(["list", "counters", "table", family, table]),
                None,
            )?;
        }
        Counters::parse(&text).map_err(Error::Counters)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) -> Result<()> {
        for [family, table] in TABLES {
            run(
                self.far_command("nft")
                    .args(["reset", "counters", "table", family, table]),
                None,
            )?;
        }
        Ok(())
    }

    /// From the near namespace, outside any jail: TCP to the far host's IPv4 and IPv6
    /// addresses and a UDP datagram to it. Returns what that added to the counters.
    pub fn positive_control(&self) -> Result<Counters> {
        let before = self.counters()?;
        let (v4, v6) = (self.far_v4, self.far_v6);
        self.in_near(move || {
            let wait = Duration::from_secs(5);
            let _ = TcpStream::connect_timeout(&(v4, 80).into(), wait);
            let _ = TcpStream::connect_timeout(&(v6, 443).into(), wait);
            if let Ok(u) = UdpSocket::bind("0.0.0.0:0") {
                let _ = u.send_to(b"control", (v4, 443));
            }
        })?;
        Ok(self.counters()? - before)
    }

    /// Judges a jailed run: what arrived since `baseline` (read before the run), then the
    /// positive control and what it added.
    pub fn verdict(&self, baseline: Counters) -> Result<Verdict> {
        let from_jail = self.counters()? - baseline;
        let control = self.positive_control()?;
        Ok(Verdict { from_jail, control })
    }

    /// For tests: panics with `context` unless nothing arrived since `baseline` and the
    /// positive control then did.
    pub fn assert_nothing_escaped(&self, baseline: Counters, context: &str) {
        let v = self
            .verdict(baseline)
            .expect("reading the far host's counters");
        assert!(
            v.nothing_escaped(),
            "packets reached the far host from the jail: {}\n{context}",
            v.from_jail
        );
        assert!(
            v.control_arrived(),
            "the positive control did not move the far host's counters ({}): the test would not see an escape",
            v.control
        );
    }

    /// Runs `cmd` to completion in the near namespace, spawned from a thread that joined it.
    /// Unlike [`FarHost::near_command`] (`ip netns exec`, which mounts a fresh `/sys` and so
    /// hides `/sys/fs/cgroup`), the program sees the host's mounts exactly as they are.
    pub fn output_in_near(&self, mut cmd: Command) -> Result<Output> {
        let name = format!("{cmd:?}");
        self.in_near(move || cmd.output())?
            .map_err(io_err(format!("running {name} in the near namespace")))
    }

    /// `ip netns exec <near> program`: add arguments, env, stdio as usual. `ip` gives the
    /// program a mount namespace of its own with a fresh `/sys` (no `/sys/fs/cgroup`) and
    /// `/etc/netns/<near>/*` over `/etc`; [`FarHost::output_in_near`] changes only the network.
    pub fn near_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.near]).arg(program);
        cmd
    }

    /// `ip netns exec <far> program`.
    pub fn far_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.far]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside the near namespace (positive controls from outside the jail).
    pub fn in_near<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        in_netns(&self.near, f)
    }

    /// The near namespace's file (a `setns` target an escape probe must not be able to enter).
    pub fn near_path(&self) -> String {
        format!("/run/netns/{}", self.near)
    }

    /// Writes `/etc/netns/<near>/resolv.conf`, which `ip netns exec <near>` bind-mounts over
    /// `/etc/resolv.conf` (for `--use-real-dns` tests pointing at a far-host "resolver").
    pub fn set_near_resolv_conf(&self, content: &str) -> Result<()> {
        let dir = PathBuf::from(format!("/etc/netns/{}", self.near));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        std::fs::write(dir.join("resolv.conf"), content)
            .map_err(io_err(format!("writing {}/resolv.conf", dir.display())))
    }

    /// `SocketAddr` for the far host's link-local address as seen from the near namespace.
    pub fn far_ll_addr(&self, port: u16) -> Result<SocketAddr> {
        let near_if = self.near_if.clone();
        let index = self
            .in_near(move || nix::net::if_::if_nametoindex(near_if.as_str()))?
            .map_err(|e| io_err("near interface index")(e.into()))?;
        Ok(scoped(self.far_v6_ll.into(), port, index))
    }
}

fn scoped(ip: IpAddr, port: u16, scope: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
        }
        ip => SocketAddr::new(ip, port),
    }
}

fn serve_tcp(listener: TcpListener, stop: Arc<AtomicBool>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) == 0 {
            continue;
        }
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.write_all(b"far-host\n");
            let mut buf = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = s.read(&mut buf);
        }
    }
}

fn serve_udp(sock: UdpSocket, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}

impl Drop for FarHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in [&self.near, &self.far] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.near));
    }
}
