"""Holds N idle keep-alive connections: connects N sockets to HOST:PORT at once, sends one
request on each (GET TARGET, Host: HOSTHEADER), prints "ready <connected>" and sleeps until
killed. Raises its own soft descriptor limit to the hard one. Used by proxy/tests/fd_flood.rs
and, inside the jail, integration/tests/flood.rs."""
import resource
import selectors
import socket
import sys
import time

host, port, n, target, host_header = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
addr = socket.getaddrinfo(host, port, socket.AF_INET)[0][4]
req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host_header)).encode()
sel, held, ok = selectors.DefaultSelector(), [], 0
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(addr)
    sel.register(s, selectors.EVENT_WRITE)
    held.append(s)
deadline = time.time() + 10
while ok < n and time.time() < deadline:
    for key, _ in sel.select(0.2):
        s = key.fileobj
        sel.unregister(s)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            try:
                s.send(req)
                ok += 1
            except OSError:
                pass
print("ready", ok, flush=True)
time.sleep(600)
