//! Unix datagrams to host sockets (issue 11 item 4, the `sendto` sibling of `connect()`): a
//! datagram socket the test owns on the host listens; from inside both jails, started by root
//! and by an unprivileged user, a jailed Python sends to it without `connect()`: `sendto`,
//! `sendmsg` (also with `SCM_RIGHTS`), `sendmmsg` (two messages) and `sendto` from one end of
//! a socketpair. The listener must receive nothing, each call must fail with `EACCES`.
//! Positive control: with `--unix-socket-allow` naming the socket, every datagram arrives (the
//! passed descriptor too, and `sendmmsg` reports both lengths), and the receiver's
//! `SO_PASSCRED` credentials are the jailed user's uid and gid. Datagrams between the jail's own
//! sockets (a socketpair with `SCM_RIGHTS`) keep working, a send that waits for a full queue
//! does not hold up another thread's send, and `SCM_CREDENTIALS` is refused. nsjail also
//! started by root with `--no-user-namespace`.
//!
//! nsjail's sends are made by its sender process with the jail's credentials: jailed `nft` and
//! `ip` (netlink requests by `sendto`/`sendmsg` with an address) cannot change the jail's own
//! ruleset, routes or links (read from the host with `nsenter` before and after; a change made
//! from the host shows, as a positive control), route and address dumps still work, and a
//! netlink `connect()` to multicast groups is refused. (With boundary making the sends itself,
//! the jailed `nft flush ruleset` succeeded.) The sender, seen from the host, has the jailed
//! process's uid, gids, groups, capabilities (none) and `no_new_privs`, a seccomp filter, and
//! is outside the jail's PID namespace, where no jailed process can see it. It makes nsjail's
//! connects too: a host stream listener sees it (not boundary) as its peer.
//!
//! Needs root and `cargo build -p boundary` first. Packages: python3, util-linux (runuser,
//! nsenter), nftables, iproute2.

mod nsjail_common;
use nsjail_common::*;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;

const SENDER: &str = r#"
import array, ctypes, os, socket, sys
path = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]

class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

def sendmmsg(sock, payloads):
    addr = ctypes.create_string_buffer(socket.AF_UNIX.to_bytes(2, "little") + path.encode() + b"\0")
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(p)) for b, p in zip(bufs, payloads)]
    msgs = (mmsghdr * len(payloads))()
    for m, v in zip(msgs, iovs):
        m.hdr.name = ctypes.cast(addr, ctypes.c_void_p)
        m.hdr.namelen = len(addr.raw)
        m.hdr.iov = ctypes.pointer(v)
        m.hdr.iovlen = 1
    n = libc.sendmmsg(sock.fileno(), msgs, len(payloads), 0)
    if n < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    return n, [m.len for m in msgs]

r, w = os.pipe()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
pa, pb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
attempts = [
    ("sendto", lambda: s.sendto(b"via-sendto", path)),
    ("sendmsg", lambda: s.sendmsg([b"via-", b"sendmsg"], [], 0, path)),
    ("sendmsg-rights", lambda: s.sendmsg([b"via-rights"],
        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))], 0, path)),
    ("sendmmsg", lambda: sendmmsg(s, [b"via-mmsg-1", b"via-mmsg-22"])),
    ("socketpair-sendto", lambda: pa.sendto(b"via-pair", path)),
]
for name, call in attempts:
    try:
        print(name, "sent", call())
    except OSError as e:
        print(name, "refused", e.errno)
# The jail's own datagrams, with a descriptor passed along.
pa.sendmsg([b"own"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
msg, anc, _, _ = pb.recvmsg(16, socket.CMSG_SPACE(4))
fd = array.array("i", anc[0][2])[0]
os.write(fd, b"k")
print("own-pair", msg.decode(), os.read(r, 1).decode())
# A send that has to wait (the peer's queue is full) does not hold up other sends.
import threading
fa, fb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
fa.setblocking(False)
queued = 0
try:
    while True:
        fa.sendmsg([b"f" * 512])
        queued += 1
except BlockingIOError:
    pass
fa.setblocking(True)
waiter = threading.Thread(target=lambda: fa.sendmsg([b"late"]))
waiter.start()
ca, cb = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
ca.sendmsg([b"meanwhile"])
print("other-send", cb.recv(16).decode(), waiter.is_alive())
for _ in range(queued + 1):
    last = fb.recv(600)
waiter.join()
print("waited-send", last.decode())
creds = array.array("i", [os.getpid(), os.getuid(), os.getgid()])
try:
    pa.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
    print("credentials sent")
except OSError as e:
    print("credentials refused", e.errno)
"#;

/// Everything the listener has received, without waiting, each with the sender's uid and gid
/// as the kernel reports them (`SO_PASSCRED`).
fn drain(l: &UnixDatagram) -> Vec<(String, u32, u32)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
    use std::os::fd::AsRawFd;
    let mut got = Vec::new();
    loop {
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        // Room for the credentials and the descriptor of the SCM_RIGHTS datagram.
        let mut space = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; 4]);
        let flags = MsgFlags::MSG_CMSG_CLOEXEC;
        let Ok(msg) = recvmsg::<()>(l.as_raw_fd(), &mut iov, Some(&mut space), flags) else {
            return got;
        };
        let mut creds = None;
        for c in msg.cmsgs().unwrap() {
            match c {
                ControlMessageOwned::ScmCredentials(c) => creds = Some((c.uid(), c.gid())),
                ControlMessageOwned::ScmRights(fds) => fds.into_iter().for_each(|fd| {
                    let _ = nix::unistd::close(fd);
                }),
                _ => {}
            }
        }
        let n = msg.bytes;
        let (uid, gid) = creds.expect("SO_PASSCRED gives every datagram its credentials");
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), uid, gid));
    }
}

/// `nsjail_flags`: extra flags that make it an nsjail-only run (`--no-user-namespace`).
fn run(who: As, allow: bool, nsjail_flags: &[&str]) {
    let jails = both_jails().into_iter();
    for (name, mut jail) in jails.filter(|(n, _)| nsjail_flags.is_empty() || *n == "nsjail") {
        jail.extend(nsjail_flags.iter().map(|f| f.to_string()));
        let dir = shared_tempdir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = dir.path().join("host-dgram.sock");
        let listener = UnixDatagram::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        listener.set_nonblocking(true).unwrap();
        nix::sys::socket::setsockopt(&listener, nix::sys::socket::sockopt::PassCred, &true)
            .unwrap();
        let script = dir.path().join("sender.py");
        std::fs::write(&script, SENDER).unwrap();
        let config = config_home(who);
        let mut cmd = boundary_cmd(who, config.path(), &[]);
        cmd.current_dir(dir.path()).args(&jail);
        if allow {
            cmd.arg("--unix-socket-allow").arg(&sock);
        }
        let out = cmd
            .args(["--", "python3"])
            .arg(&script)
            .arg(&sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let o = text(&out);
        let got = drain(&listener);
        assert!(out.status.success(), "{name} {who:?}: {o}");
        assert!(
            o.contains("own-pair own k"),
            "{name} {who:?}: own datagrams broke: {o}"
        );
        assert!(o.contains("credentials refused 1"), "{name} {who:?}: {o}");
        assert!(
            o.contains("other-send meanwhile True"),
            "{name} {who:?}: {o}"
        );
        assert!(o.contains("waited-send late"), "{name} {who:?}: {o}");
        if allow {
            let want = [
                "via-sendto",
                "via-sendmsg",
                "via-rights",
                "via-mmsg-1",
                "via-mmsg-22",
                "via-pair",
            ];
            let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
            assert_eq!(texts, want, "{name} {who:?}: allowed datagrams lost: {o}");
            // The receiver sees the jailed user's uid and gid (docs/unix-sockets.md).
            let id = if who == As::User { test_user() } else { 0 };
            assert!(
                got.iter().all(|&(_, uid, gid)| uid == id && gid == id),
                "{name} {who:?}: credentials seen by the receiver: {got:?}"
            );
            assert!(
                o.contains("sendmmsg sent (2, [10, 11])"),
                "{name} {who:?}: {o}"
            );
        } else {
            assert!(
                got.is_empty(),
                "{name} {who:?}: the host socket received {got:?}: {o}"
            );
            for call in [
                "sendto",
                "sendmsg",
                "sendmsg-rights",
                "sendmmsg",
                "socketpair-sendto",
            ] {
                assert!(
                    o.contains(&format!("\n{call} refused 13"))
                        || o.starts_with(&format!("{call} refused 13")),
                    "{name} {who:?}: {call} not refused with EACCES: {o}"
                );
            }
        }
    }
}

#[test]
fn datagrams_to_a_host_socket_are_refused_as_root() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    run(As::Root, false, &[]);
}

#[test]
fn datagrams_to_a_host_socket_are_refused_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    run(As::User, false, &[]);
}

#[test]
fn allowed_datagrams_arrive_as_root() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    run(As::Root, true, &[]);
}

#[test]
fn allowed_datagrams_arrive_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    run(As::User, true, &[]);
}

/// Tries to change the jail's own netfilter rules, routes and links with real tools (`nft` and
/// `ip` send their netlink requests with `sendto`/`sendmsg` and an address, so they go through
/// the supervisor and the sender), between two lines read from stdin.
const NETLINK: &str = r#"
echo "sender-visible $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c boundary-send)"
echo ready
read go
nft flush ruleset; echo "nft-flush $?"
nft add table inet intruder; echo "nft-add $?"
ip route del default; echo "route-del $?"
ip route add 10.97.0.0/24 dev lo; echo "route-add $?"
ip link set lo down; echo "link-down $?"
ip -4 route show >/dev/null; echo "route-dump $?"
ip addr show lo | grep -q 127.0.0.1; echo "addr-dump $?"
python3 -c 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).connect((0, 1))' 2>/dev/null
echo "nl-multicast-connect $?"
echo done
read end
"#;

/// The process running `script` inside the jail (not boundary, whose arguments name it too:
/// the one in another network namespace).
fn jailed_pid(script: &std::path::Path) -> Option<u32> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    let want = script.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let hit = cmdline.windows(want.len()).any(|w| w == want);
        let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        (hit && net != ours).then_some(pid)
    })
}

/// The jail's sender process, seen from the host: `boundary-send` in the network namespace of
/// the jailed process `pid`.
fn sender_of(pid: u32) -> Option<u32> {
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let p: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
        let same = std::fs::read_link(format!("/proc/{p}/ns/net")).ok()? == net;
        (comm.trim() == "boundary-send" && same).then_some(p)
    })
}

/// The jail's netfilter ruleset, routes and links, read from the host (root) in its namespace.
fn jail_net_state(pid: u32) -> String {
    let ns = format!("--net=/proc/{pid}/ns/net");
    let mut state = String::new();
    for tool in [
        &["nft", "list", "ruleset"][..],
        &["ip", "-4", "route", "show"],
        &["ip", "-6", "route", "show"],
        &["ip", "-o", "link", "show"],
    ] {
        let out = std::process::Command::new("nsenter")
            .arg(&ns)
            .args(tool)
            .output()
            .unwrap();
        assert!(out.status.success(), "nsenter {tool:?}: {}", text(&out));
        state.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    state
}

/// nsjail performs every `sendmsg` through its sender process, with the jail's credentials: a
/// netlink request sent that way must not pass the `CAP_NET_ADMIN` checks that boundary's
/// own uid (the jail user namespace's owner) would pass. State read from the host before and
/// after is the same; a change made from the host shows in the read (positive control); route
/// and address dumps (what getaddrinfo and `ip addr` use) still work.
fn netlink(who: As, nsjail_flags: &[&str]) {
    use std::io::{BufRead, BufReader, Write};
    let dir = shared_tempdir();
    let script = dir.path().join("netlink.sh");
    std::fs::write(&script, NETLINK).unwrap();
    let config = config_home(who);
    let (_, jail) = both_jails()
        .into_iter()
        .find(|(n, _)| *n == "nsjail")
        .unwrap();
    let mut child = boundary_cmd(who, config.path(), &[])
        .args(&jail)
        .args(nsjail_flags)
        .args(["--", "sh"])
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut until = |word: &str, seen: &mut Vec<String>| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push(line.clone());
            if line == word {
                return;
            }
        }
        panic!("{who:?}: the jailed script ended before {word:?}: {seen:?}");
    };
    until("ready", &mut seen);
    let pid = jailed_pid(&script).expect("the jailed script's process");
    // The sender has the jailed process's credentials and no more, and the jail cannot see it.
    let sender = sender_of(pid).expect("the jail's sender process (boundary-send)");
    let field = |p: u32, name: &str| {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].trim().to_string()
    };
    for name in [
        "Uid:",
        "Gid:",
        "Groups:",
        "CapEff:",
        "CapPrm:",
        "NoNewPrivs:",
    ] {
        assert_eq!(
            field(sender, name),
            field(pid, name),
            "{who:?}: sender {name}"
        );
    }
    assert_eq!(field(sender, "CapEff:"), "0000000000000000", "{who:?}");
    assert_ne!(
        field(sender, "Seccomp_filters:"),
        "0",
        "{who:?}: sender without a filter"
    );
    let own_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{sender}/ns/pid")).unwrap(),
        own_pidns,
        "{who:?}: the sender is in the jail's PID namespace"
    );
    assert!(
        seen.iter().any(|l| l == "sender-visible 0"),
        "{who:?}: the jail sees its sender: {seen:?}"
    );
    let before = jail_net_state(pid);
    assert!(
        before.contains("table inet boundary"),
        "{who:?}: not the jail's ruleset: {before}"
    );
    writeln!(stdin, "go").unwrap();
    until("done", &mut seen);
    let after = jail_net_state(pid);
    assert_eq!(
        before, after,
        "{who:?}: the jail changed its own network: {seen:?}"
    );
    // Positive control: a change does show in what we read.
    let add = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "route", "add", "10.98.0.0/24", "dev", "lo"])
        .status()
        .unwrap();
    assert!(add.success());
    assert!(jail_net_state(pid).contains("10.98.0.0/24"));
    writeln!(stdin, "end").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{who:?}: {seen:?}");
    let changes = [
        "nft-flush",
        "nft-add",
        "route-del",
        "route-add",
        "link-down",
        "nl-multicast-connect",
    ];
    for change in changes {
        let line = seen.iter().find(|l| l.starts_with(change));
        assert!(
            line.is_some_and(|l| !l.ends_with(" 0")),
            "{who:?}: {change} did not fail: {seen:?}"
        );
    }
    for dump in ["route-dump 0", "addr-dump 0"] {
        assert!(seen.iter().any(|l| l == dump), "{who:?}: {dump}: {seen:?}");
    }
}

#[test]
fn nsjail_netlink_sends_cannot_change_the_jails_network_as_root() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (reads the jail's network from the host)");
        return;
    }
    netlink(As::Root, &[]);
}

#[test]
fn nsjail_netlink_sends_cannot_change_the_jails_network_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    netlink(As::User, &[]);
}

/// nsjail started by root without a user namespace: the sender is uid 0 with no capabilities in
/// the host's user namespace, like the target.
#[test]
fn nsjail_without_a_user_namespace_decides_datagrams_and_netlink() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (--no-user-namespace)");
        return;
    }
    run(As::Root, false, &["--no-user-namespace"]);
    run(As::Root, true, &["--no-user-namespace"]);
    netlink(As::Root, &["--no-user-namespace"]);
}

/// nsjail's connects are made by the sender too: a host stream listener (allowed) sees the
/// sender as its peer (`SO_PEERCRED`: `boundary-send`, the jailed user's uid and gid), not
/// boundary, whose uid owns the jail's user namespace.
fn peer_of_a_jailed_connect(who: As) {
    use std::os::unix::net::UnixListener;
    let dir = shared_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path().join("host-stream.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = config_home(who);
    let (_, jail) = both_jails()
        .into_iter()
        .find(|(n, _)| *n == "nsjail")
        .unwrap();
    let child = boundary_cmd(who, config.path(), &[])
        .args(&jail)
        .arg("--unix-socket-allow")
        .arg(&sock)
        .args(["--", "python3", "-c"])
        .arg(
            "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
             s.recv(1); print('connected')",
        )
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let cred =
        nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", cred.pid())).unwrap();
    drop(conn);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{who:?}: {}", text(&out));
    let id = if who == As::User { test_user() } else { 0 };
    assert_eq!(
        comm.trim(),
        "boundary-send",
        "{who:?}: the peer is not the sender"
    );
    assert_eq!(
        (cred.uid(), cred.gid()),
        (id, id),
        "{who:?}: peer credentials"
    );
}

#[test]
fn nsjail_connects_are_made_by_the_sender_as_root() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    peer_of_a_jailed_connect(As::Root);
}

#[test]
fn nsjail_connects_are_made_by_the_sender_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    peer_of_a_jailed_connect(As::User);
}
