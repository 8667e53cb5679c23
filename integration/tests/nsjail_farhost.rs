//! The far-host harness itself: counters start at zero and move when something outside the jail
//! reaches the far host (the positive control every escape test relies on).

use boundary_integration::farhost::{FarHost, FAR_TCP_PORTS};
use std::io::Read;
use std::net::{TcpStream, UdpSocket};

#[test]
fn far_host_counts_tcp_udp_and_ipv6_from_the_near_namespace() {
    let far = FarHost::new().expect("far host");
    assert_eq!(
        far.counters().unwrap().total(),
        0,
        "fresh far host must count nothing"
    );

    let (v4, v6) = (far.far_v4, far.far_v6);
    let got = far
        .in_near(move || {
            let mut s = TcpStream::connect((v4, FAR_TCP_PORTS[2])).expect("tcp v4 to far host");
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.connect((v4, 53)).unwrap();
            u.send(b"ping").unwrap();
            let mut buf = [0u8; 16];
            let n = u.recv(&mut buf).expect("udp echo from far host");
            let mut s6 = TcpStream::connect((v6, 443)).expect("tcp v6 to far host");
            let mut text6 = String::new();
            s6.read_to_string(&mut text6).unwrap();
            (text, buf[..n].to_vec(), text6)
        })
        .unwrap();
    assert_eq!(got.0, "far-host\n");
    assert_eq!(got.1, b"ping");
    assert_eq!(got.2, "far-host\n");
    let c = far.counters().unwrap();
    assert!(
        c.tcp >= 2 && c.udp >= 1 && c.ipv6 >= 1,
        "counters did not move: {c}"
    );

    let ll = far.far_ll_addr(80).unwrap();
    far.in_near(move || TcpStream::connect(ll).expect("tcp to far link-local"))
        .unwrap();

    // ICMP echo from a raw socket (root in the near namespace), no ping binary needed.
    let icmp = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\ns.settimeout(5)\n\
                s.sendto(bytes([8,0,0xf7,0xfe,0,1,0,0]),(sys.argv[1],0))\nwhile s.recv(100)[20]!=0: pass\n";
    let out = far
        .near_command("python3")
        .args(["-c", icmp, &far.far_v4.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "icmp echo to far host from near: {out:?}"
    );
    let before = far.counters().unwrap();
    assert!(before.icmp >= 1, "icmp not counted: {before}");
    far.reset_counters().unwrap();
    assert_eq!(far.counters().unwrap().total(), 0);
}

/// The one verdict notices an "escape" (here a connection from the near namespace after the
/// baseline, standing in for a jail that leaked) and a control that arrives.
#[test]
fn the_verdict_sees_traffic_after_the_baseline() {
    let far = FarHost::new().expect("far host");
    let baseline = far.counters().unwrap();
    let quiet = far.verdict(baseline).unwrap();
    assert!(quiet.holds(), "nothing was sent, control sent: {quiet}");

    let baseline = far.counters().unwrap();
    let v4 = far.far_v4;
    far.in_near(move || TcpStream::connect((v4, 22)).expect("the stand-in escape"))
        .unwrap();
    let leaked = far.verdict(baseline).unwrap();
    assert!(
        !leaked.nothing_escaped() && leaked.from_jail.tcp > 0,
        "{leaked}"
    );
    assert!(leaked.control_arrived(), "{leaked}");
}

/// `output_in_near` changes only the network: the program is in the near namespace (it sees
/// the near address) and sees this host's mounts (`/sys/fs/cgroup` as the host has it, which
/// `ip netns exec` would hide behind a fresh `/sys`).
#[test]
fn output_in_near_changes_only_the_network() {
    let far = FarHost::new().expect("far host");
    let mut addr = std::process::Command::new("ip");
    addr.args(["-o", "addr"]);
    let out = far.output_in_near(addr).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&far.near_v4.to_string()), "{text}");
    let host_cgroups = std::fs::read_dir("/sys/fs/cgroup").unwrap().count();
    assert!(
        host_cgroups > 0,
        "this host has nothing in /sys/fs/cgroup to compare"
    );
    let mut ls = std::process::Command::new("ls");
    ls.arg("/sys/fs/cgroup");
    let out = far.output_in_near(ls).unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(seen, host_cgroups, "{out:?}");
}
