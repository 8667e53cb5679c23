# Runs inside the landjail: tries every way out it knows and writes what happened as JSON.
# Each attempt records "open" when it got through, or the errno name when it was refused.
import ctypes
import errno
import json
import os
import socket
import sys

cfg = json.loads(sys.argv[1])
P = cfg["proxy_port"]
FAR4 = cfg["far4"]
FAR6 = cfg["far6"]
res = {}


def attempt(name, fn):
    try:
        out = fn()
        res[name] = "open" if out is None else out
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))


def tcp(host, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(b"escape\n")
    finally:
        s.close()


def send_udp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"escape", (host, port))


ECHO4 = bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0])
ECHO6 = bytes([128, 0, 0, 0, 0, 0, 0, 0])


def icmp_dgram(fam, proto, host, pkt):
    s = socket.socket(fam, socket.SOCK_DGRAM, proto)
    s.sendto(pkt, (host, 0))


def raw(fam, proto, host, pkt):
    s = socket.socket(fam, socket.SOCK_RAW, proto)
    s.sendto(pkt, (host, 0))


def packet():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.close()


def fastopen_sendto():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.sendto(b"escape", socket.MSG_FASTOPEN, (FAR4, P))


def fastopen_sendmsg():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.sendmsg([b"escape"], [], socket.MSG_FASTOPEN, (FAR4, P))


def fastopen_connect_opt():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT


libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def io_uring_setup():
    params = ctypes.create_string_buffer(120)
    syscall(425, 8, ctypes.addressof(params))


def unshare(flags):
    syscall(272, flags)


def second_listener():
    # A filter of our own with a notification listener would get the connect notifications
    # before boundary's supervisor (the newest filter wins) and could let them continue.
    prog = (ctypes.c_uint16 * 4)(0x06, 0, 0, 0)  # one instruction: BPF_RET|BPF_K
    ret = ctypes.c_uint32.from_buffer(prog, 4)
    ret.value = 0x7FFF0000  # SECCOMP_RET_ALLOW
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fp = Fprog(1, ctypes.addressof(prog))
    syscall(317, 1, 8, ctypes.addressof(fp))  # seccomp(SET_MODE_FILTER, NEW_LISTENER)


def ptrace_attach(pid):
    syscall(101, 16, pid, 0, 0)  # ptrace(PTRACE_ATTACH)


def steal_fd(pid):
    # pidfd_open works on any visible process; taking its descriptors is what must fail.
    r = libc.syscall(ctypes.c_long(434), ctypes.c_long(pid), ctypes.c_long(0))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    try:
        for fd in range(3, 64):
            try:
                syscall(438, r, fd, 0)  # pidfd_getfd
                return "open (stole fd %d)" % fd
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise
    finally:
        os.close(r)


def short_sockaddr(n):
    # A truncated address must get the kernel's answer (EINVAL), not hang the connect.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    buf = ctypes.create_string_buffer(bytes([2, 0, 0x1F, 0x90, 127, 0, 0, 1]) + bytes(8))
    r = libc.connect(s.fileno(), buf, n)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b"escape\n")
    s.close()


def proxy(host, fam):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, P))
    s.sendall(b"GET http://example.invalid/ HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return "open" if b"proxy-stand-in" in data else "wrong answer: %r" % data


def local_server():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    a, _ = srv.accept()
    c.sendall(b"ping")
    got = a.recv(4)
    return "open" if got == b"ping" else "wrong: %r" % got


def local_server_v6_wildcard():
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.bind(("::", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(("127.0.0.1", port))
    srv.accept()
    c.close()


def nonblocking_proxy():
    # Event loops (node, Go, asyncio) connect non-blocking: EINPROGRESS, then writable.
    import selectors

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex(("127.0.0.1", P))
    if err not in (0, errno.EINPROGRESS):
        raise OSError(err, os.strerror(err))
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    ready = sel.select(5)
    sel.close()
    if not ready:
        return "timeout"
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    s.close()


attempt("tcp_proxy_port_on_127.0.0.2", lambda: tcp("127.0.0.2", P))
attempt("tcp_proxy_port_on_far_v4", lambda: tcp(FAR4, P))
attempt("tcp_proxy_port_on_far_v6", lambda: tcp(FAR6, P, socket.AF_INET6))
attempt("tcp_far_v4_80", lambda: tcp(FAR4, 80))
attempt("tcp_far_v4_443", lambda: tcp(FAR4, 443))
attempt("tcp_far_v6_80", lambda: tcp(FAR6, 80, socket.AF_INET6))
attempt("tcp_mapped_far_v4", lambda: tcp("::ffff:" + FAR4, 80, socket.AF_INET6))
attempt("tcp_outside_loopback_service", lambda: tcp("127.0.0.1", cfg["outside_port"]))
attempt("tcp_0.0.0.0_proxy_port", lambda: tcp("0.0.0.0", P))
attempt("udp_v4_dns", lambda: send_udp(socket.AF_INET, FAR4, 53))
attempt("udp_v6", lambda: send_udp(socket.AF_INET6, FAR6, 53))
attempt("icmp_dgram_v4", lambda: icmp_dgram(socket.AF_INET, socket.IPPROTO_ICMP, FAR4, ECHO4))
attempt("icmp_dgram_v6", lambda: icmp_dgram(socket.AF_INET6, socket.IPPROTO_ICMPV6, FAR6, ECHO6))
attempt("raw_icmp_v4", lambda: raw(socket.AF_INET, socket.IPPROTO_ICMP, FAR4, ECHO4))
attempt("raw_icmp_v6", lambda: raw(socket.AF_INET6, socket.IPPROTO_ICMPV6, FAR6, ECHO6))
attempt("raw_tcp_v4", lambda: raw(socket.AF_INET, socket.IPPROTO_TCP, FAR4, b"x" * 20))
attempt("packet_socket", packet)
attempt("sctp_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close())
attempt("mptcp_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).close())
attempt("vsock_socket", lambda: socket.socket(40, socket.SOCK_STREAM).close())
attempt("netlink_netfilter", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12).close())
attempt("fastopen_sendto", fastopen_sendto)
attempt("fastopen_sendmsg", fastopen_sendmsg)
attempt("fastopen_connect_option", fastopen_connect_opt)
attempt("io_uring_setup", io_uring_setup)
attempt("second_seccomp_listener", second_listener)
attempt("unshare_net", lambda: unshare(0x40000000))
attempt("unshare_user", lambda: unshare(0x10000000))
attempt("ptrace_supervisor", lambda: ptrace_attach(cfg["supervisor_pid"]))
attempt("steal_supervisor_fd", lambda: steal_fd(cfg["supervisor_pid"]))
attempt("signal_outside", lambda: os.kill(cfg["outside_pid"], 15))
attempt("abstract_unix_outside", lambda: unix("\0" + cfg["abstract_name"]))
attempt(
    "abstract_dgram_outside",
    lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"escape", "\0" + cfg["abstract_name"] + "-dgram"),
)
attempt("hidden_unix_socket", lambda: unix(cfg["hidden_socket"]))
attempt("unix_socket_allowed", lambda: unix(cfg["plain_socket"]))
attempt("short_sockaddr_3", lambda: short_sockaddr(3))
attempt("short_sockaddr_15", lambda: short_sockaddr(15))
attempt("huge_sockaddr_len", lambda: short_sockaddr(4096))
attempt("proxy_v4", lambda: proxy("127.0.0.1", socket.AF_INET))
attempt("proxy_v6", lambda: proxy("::1", socket.AF_INET6))
attempt("proxy_v4_mapped", lambda: proxy("::ffff:127.0.0.1", socket.AF_INET6))
attempt("proxy_nonblocking", nonblocking_proxy)
attempt("local_server", local_server)
attempt("local_server_v6_wildcard", local_server_v6_wildcard)
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        fds[name] = os.readlink("/proc/self/fd/" + name)
    except OSError:
        pass
res["inherited_fds"] = " ".join(sorted(v for k, v in fds.items() if k not in ("0", "1", "2")))
try:
    with open("/proc/self/status") as f:
        res["status"] = {
            k: v.strip()
            for k, v in (l.split(":", 1) for l in f if ":" in l)
            if k.startswith("Cap") or k in ("NoNewPrivs", "Seccomp", "Seccomp_filters")
        }
except OSError as e:
    res["status"] = str(e)

with open(cfg["out"], "w") as f:
    json.dump(res, f)
