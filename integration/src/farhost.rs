//! A "far host" for escape tests: two fresh network namespaces joined by a veth pair.
//!
//! The *near* namespace is where the test runs `boundary` (outside the jail, but not on the real
//! host network); the *far* namespace is a host the jail must never reach. The far host has
//! private test addresses (IPv4 `10.213.x.y/30`, IPv6 ULA and link-local), listeners on TCP and
//! UDP ports, and nftables counters on every protocol, counted at the earliest hook so nothing
//! that arrives can be missed. A test:
//!
//! 1. `let far = FarHost::new()?;` (needs root; fails loudly with the reason otherwise),
//! 2. runs the jail in the near namespace: `far.near_command("/path/to/boundary")` (this is
//!    `ip netns exec <near> ...`; add `runuser`/`setpriv` in front for the rootless path),
//! 3. from inside the jail tries to reach `far.far_v4`, `far.far_v6`, `far.far_v6_ll` (scoped
//!    with the near interface name `far.near_if`), any port or protocol,
//! 4. asserts `far.counters()?.total() == 0`,
//! 5. positive control: `far.in_near(|| TcpStream::connect((far.far_v4, 80)))` from outside the
//!    jail, then `far.counters()?` shows the packets (`far.reset_counters()` in between if the
//!    test wants to reuse it).
//!
//! Everything is torn down on `Drop` (the namespaces, `/etc/netns/<near>`, listener threads).
//! Namespace names are unique per process and instance (`bnd-<pid>-<n>-near`/`-far`), so tests
//! in parallel threads and other test binaries never collide. Kernel neighbour discovery and
//! multicast-listener noise (ICMPv6 types 130-137 and 143) is not counted: it is not traffic the
//! jail could have sent, and it would make a zero count race with link setup.
//!
//! `boundary_binary()` finds the `boundary` executable built in this workspace's target dir.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// TCP ports the far host listens on (each answers `far-host\n` and closes).
pub const FAR_TCP_PORTS: &[u16] = &[22, 53, 80, 443, 8080];
/// UDP ports the far host answers on (echoes the datagram back).
pub const FAR_UDP_PORTS: &[u16] = &[53, 123, 443];

/// Packet counters on the far host, per protocol; `total()` is what an escape test asserts zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    /// ICMPv6 other than neighbour discovery / MLD (echo, errors, ...).
    pub icmpv6: u64,
    /// Any other IP protocol (raw sockets with odd protocol numbers, SCTP, GRE...).
    pub other: u64,
    /// Every IPv6 packet counted above (so a test can see v6 specifically).
    pub ipv6: u64,
    /// Non-IP frames arriving on the far interface other than ARP (packet sockets).
    pub non_ip: u64,
}

impl Counters {
    /// Everything that arrived at the far host (ipv6 is a subset of the others, not added).
    pub fn total(&self) -> u64 {
        self.tcp + self.udp + self.icmp + self.icmpv6 + self.other + self.non_ip
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp={} udp={} icmp={} icmpv6={} other={} (ipv6={}) non_ip={}",
            self.tcp, self.udp, self.icmp, self.icmpv6, self.other, self.ipv6, self.non_ip
        )
    }
}

/// A near/far namespace pair; see the module docs.
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

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?} (is iproute2/nftables installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_stdin(cmd: &mut Command, input: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}\ninput:\n{input}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Fails with a clear message when the test does not run as root (namespaces and netfilter need it).
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("this test needs root (it creates network namespaces and nftables counters); run it as root, as CI does");
    }
    Ok(())
}

/// Runs `f` on a thread that has joined the network namespace `/run/netns/<name>`. Sockets created
/// there stay in that namespace after the thread ends.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    let handle = std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context("setns into the test network namespace")?;
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {name} panicked"))?
}

impl FarHost {
    /// Creates the pair, addresses, routes, counters and listeners. Needs root.
    pub fn new() -> Result<FarHost> {
        require_root()?;
        let n = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("bnd-{pid}-{n}");
        let near = format!("{base}-near");
        let far = format!("{base}-far");
        // Unique /30 per instance (the pair is isolated anyway; unique just helps reading logs).
        let slot = (pid.wrapping_mul(31).wrapping_add(n)) % 16384;
        let (x, y) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let near_v4 = Ipv4Addr::new(10, 213, x, y + 1);
        let far_v4 = Ipv4Addr::new(10, 213, x, y + 2);
        let near_v6: Ipv6Addr = format!("fd00:213:{x:x}:{y:x}::1").parse()?;
        let far_v6: Ipv6Addr = format!("fd00:213:{x:x}:{y:x}::2").parse()?;
        let far_v6_ll: Ipv6Addr = "fe80::213:2".parse()?;
        let near_if = "bnd-near".to_string();
        let far_if = "bnd-far".to_string();
        let mut host = FarHost {
            near,
            far,
            near_if,
            far_if,
            near_v4,
            far_v4,
            near_v6,
            far_v6,
            far_v6_ll,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        host.setup()
            .with_context(|| format!("setting up far host {base}"))?;
        Ok(host)
    }

    fn setup(&mut self) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", &self.near]))?;
        run(Command::new("ip").args(["netns", "add", &self.far]))?;
        for ns in [&self.near, &self.far] {
            // No DAD (addresses usable at once), no router solicitations (no noise).
            for (k, v) in [
                ("net.ipv6.conf.all.accept_dad", "0"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.ipv6.conf.all.router_solicitations", "0"),
                ("net.ipv6.conf.default.router_solicitations", "0"),
                ("net.ipv6.conf.all.disable_ipv6", "0"),
                ("net.ipv6.conf.default.disable_ipv6", "0"),
            ] {
                run(Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("{k}={v}")))?;
            }
        }
        let batch = format!(
            "link add {ni} netns {near} type veth peer name {fi} netns {far}\n",
            ni = self.near_if,
            fi = self.far_if,
            near = self.near,
            far = self.far
        );
        run_stdin(Command::new("ip").args(["-batch", "-"]), &batch)?;
        let near_batch = format!(
            "link set lo up\nlink set {ni} up\naddr add {n4}/30 dev {ni}\naddr add {n6}/64 dev {ni} nodad\n",
            ni = self.near_if,
            n4 = self.near_v4,
            n6 = self.near_v6
        );
        run_stdin(
            Command::new("ip").args(["-n", &self.near, "-batch", "-"]),
            &near_batch,
        )?;
        let far_batch = format!(
            "link set lo up\nlink set {fi} up\naddr add {f4}/30 dev {fi}\naddr add {f6}/64 dev {fi} nodad\naddr add {ll}/64 dev {fi} nodad\n\
             route add default via {n4}\nroute add ::/0 via {n6}\n",
            fi = self.far_if,
            f4 = self.far_v4,
            f6 = self.far_v6,
            ll = self.far_v6_ll,
            n4 = self.near_v4,
            n6 = self.near_v6
        );
        run_stdin(
            Command::new("ip").args(["-n", &self.far, "-batch", "-"]),
            &far_batch,
        )?;
        // The near namespace routes everything to the far host, so "the internet" is the far host.
        let near_routes = format!(
            "route add default via {f4}\nroute add ::/0 via {f6}\n",
            f4 = self.far_v4,
            f6 = self.far_v6
        );
        run_stdin(
            Command::new("ip").args(["-n", &self.near, "-batch", "-"]),
            &near_routes,
        )?;
        self.install_counters()?;
        self.start_listeners()?;
        Ok(())
    }

    fn install_counters(&self) -> Result<()> {
        let rules = format!(
            r#"table inet farhost {{
  counter n_tcp {{}}
  counter n_udp {{}}
  counter n_icmp {{}}
  counter n_icmpv6 {{}}
  counter n_other {{}}
  counter n_ipv6 {{}}
  chain pre {{
    type filter hook prerouting priority -400; policy accept;
    iifname "lo" accept
    meta nfproto ipv6 icmpv6 type {{ 130, 131, 132, 133, 134, 135, 136, 137, 143 }} accept
    meta nfproto ipv6 counter name n_ipv6
    meta l4proto tcp counter name n_tcp accept
    meta l4proto udp counter name n_udp accept
    meta l4proto icmp counter name n_icmp accept
    meta l4proto ipv6-icmp counter name n_icmpv6 accept
    counter name n_other accept
  }}
}}
table netdev farhost_l2 {{
  counter n_non_ip {{}}
  chain ingress {{
    type filter hook ingress device "{fi}" priority -500; policy accept;
    ether type {{ ip, ip6, arp }} accept
    counter name n_non_ip accept
  }}
}}
"#,
            fi = self.far_if
        );
        run_stdin(
            Command::new("ip").args(["netns", "exec", &self.far, "nft", "-f", "-"]),
            &rules,
        )
        .context("installing the far host's nftables counters (is the nftables package installed?)")
    }

    fn start_listeners(&mut self) -> Result<()> {
        let addrs: Vec<IpAddr> = vec![
            self.far_v4.into(),
            self.far_v6.into(),
            self.far_v6_ll.into(),
        ];
        let far_if = self.far_if.clone();
        let (tcp, udp) = in_netns(
            &self.far,
            move || -> Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
                let index = nix::net::if_::if_nametoindex(far_if.as_str())
                    .context("far interface index")?;
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                for ip in &addrs {
                    for &port in FAR_TCP_PORTS {
                        let addr = scoped(*ip, port, index);
                        tcp.push(
                            TcpListener::bind(addr).with_context(|| format!("bind tcp {addr}"))?,
                        );
                    }
                    for &port in FAR_UDP_PORTS {
                        let addr = scoped(*ip, port, index);
                        udp.push(
                            UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?,
                        );
                    }
                }
                Ok((tcp, udp))
            },
        )??;
        for l in tcp {
            l.set_nonblocking(true)?;
            let stop = self.stop.clone();
            self.threads
                .push(std::thread::spawn(move || serve_tcp(l, stop)));
        }
        for s in udp {
            s.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
            let stop = self.stop.clone();
            self.threads
                .push(std::thread::spawn(move || serve_udp(s, stop)));
        }
        Ok(())
    }

    /// Reads the far host's counters.
    pub fn counters(&self) -> Result<Counters> {
        let mut c = Counters::default();
        let inet = run(Command::new("ip").args([
            "netns", "exec", &self.far, "nft", "list", "counters", "table", "inet", "farhost",
        ]))?;
        let l2 = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.far,
            "nft",
            "list",
            "counters",
            "table",
            "netdev",
            "farhost_l2",
        ]))?;
        let text = format!("{inet}\n{l2}");
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("counter ") {
                current = rest.split_whitespace().next().map(str::to_string);
            } else if let Some(rest) = line.strip_prefix("packets ") {
                let packets: u64 = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .context("parsing nft counter")?;
                match current.as_deref() {
                    Some("n_tcp") => c.tcp = packets,
                    Some("n_udp") => c.udp = packets,
                    Some("n_icmp") => c.icmp = packets,
                    Some("n_icmpv6") => c.icmpv6 = packets,
                    Some("n_other") => c.other = packets,
                    Some("n_ipv6") => c.ipv6 = packets,
                    Some("n_non_ip") => c.non_ip = packets,
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) -> Result<()> {
        run(Command::new("ip").args([
            "netns", "exec", &self.far, "nft", "reset", "counters", "table", "inet", "farhost",
        ]))?;
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.far,
            "nft",
            "reset",
            "counters",
            "table",
            "netdev",
            "farhost_l2",
        ]))?;
        Ok(())
    }

    /// `ip netns exec <near> program`: add arguments, env, stdio as usual.
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

    /// Writes `/etc/netns/<near>/resolv.conf`, which `ip netns exec <near>` bind-mounts over
    /// `/etc/resolv.conf` (for `--use-real-dns` tests pointing at a far-host "resolver").
    pub fn set_near_resolv_conf(&self, content: &str) -> Result<()> {
        let dir = PathBuf::from(format!("/etc/netns/{}", self.near));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), content)?;
        Ok(())
    }

    /// `SocketAddr` for the far host's link-local address as seen from the near namespace.
    pub fn far_ll_addr(&self, port: u16) -> Result<SocketAddr> {
        let near_if = self.near_if.clone();
        let index = self.in_near(move || nix::net::if_::if_nametoindex(near_if.as_str()))??;
        Ok(scoped(self.far_v6_ll.into(), port, index))
    }
}

fn scoped(ip: IpAddr, port: u16, scope: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope))
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
            let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(50)));
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

/// The `boundary` executable of this workspace: `<target>/<profile>/boundary`, found next to the
/// running test executable (`target/<profile>/deps/<test>-<hash>`). Build it first with
/// `cargo build -p boundary` (same profile as the tests); this fails with that instruction when
/// it is missing. `BOUNDARY_BIN` overrides the path.
pub fn boundary_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOUNDARY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile> parent")?;
    let bin = profile_dir.join("boundary");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build -p boundary` (same profile as the tests), or set BOUNDARY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}
