//! Unix datagrams to host sockets (issue 11 item 4, the `sendto` sibling of `connect()`): a
//! datagram socket the test owns on the host listens; from inside both jails, started by root
//! and by an unprivileged user, a jailed Python sends to it without `connect()`: `sendto`,
//! `sendmsg` (also with `SCM_RIGHTS`), `sendmmsg` (two messages) and `sendto` from one end of
//! a socketpair. The listener must receive nothing, each call must fail with `EACCES`.
//! Positive control: with `--unix-socket-allow` naming the socket, every datagram arrives (the
//! passed descriptor too, and `sendmmsg` reports both lengths). Datagrams between the jail's own
//! sockets (a socketpair with `SCM_RIGHTS`) keep working, a send that waits for a full queue
//! does not hold up another thread's send, and `SCM_CREDENTIALS` is refused.
//!
//! Needs root and `cargo build -p boundary` first. Packages: python3, util-linux (runuser).

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

/// Everything the listener has received, without waiting.
fn drain(l: &UnixDatagram) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = l.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn run(who: As, allow: bool) {
    // landjail only: nsjail does not decide datagrams yet (docs/unix-sockets.md).
    for (name, jail) in both_jails().into_iter().filter(|(n, _)| *n == "landjail") {
        let dir = shared_tempdir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = dir.path().join("host-dgram.sock");
        let listener = UnixDatagram::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        listener.set_nonblocking(true).unwrap();
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
            assert_eq!(got, want, "{name} {who:?}: allowed datagrams lost: {o}");
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
    run(As::Root, false);
}

#[test]
fn datagrams_to_a_host_socket_are_refused_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    run(As::User, false);
}

#[test]
fn allowed_datagrams_arrive_as_root() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    run(As::Root, true);
}

#[test]
fn allowed_datagrams_arrive_as_a_user() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    run(As::User, true);
}
