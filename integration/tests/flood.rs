//! Through the real binary in nsjail under a 1,024 descriptor limit (hard and soft, set with
//! prlimit on boundary): two jailed processes hold 2,000 idle keep-alive connections to the
//! proxy, and a second client in the same jail is still served.
//!
//! Needs `cargo build -p boundary` first, and curl, python3, openssl, prlimit.

mod nsjail_common;
use nsjail_common::*;

const SCRIPT: &str = r#"
set -u
D=$(mktemp -d)
cat > $D/flood.py <<'PY'
import selectors, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
addr = socket.getaddrinfo("fixture.test", port, socket.AF_INET)[0][4]
req = ("GET /allowed.txt HTTP/1.1\r\nHost: fixture.test:%d\r\n\r\n" % port).encode()
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
PY
python3 $D/flood.py $PORT 1000 > $D/a &
A=$!
python3 $D/flood.py $PORT 1000 > $D/b &
B=$!
for i in $(seq 150); do
  grep -q ready $D/a 2>/dev/null && grep -q ready $D/b 2>/dev/null && break
  sleep 0.2
done
echo "flood $(cat $D/a) $(cat $D/b)"
echo "second=$(curl -sS --max-time 30 http://fixture.test:$PORT/allowed.txt)"
kill $A $B
"#;

#[test]
fn an_idle_flood_in_the_jail_does_not_starve_a_second_client() {
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let mut flags = fx.flags(&["domain=fixture.test"]);
    flags.extend(["--jail-type".into(), "nsjail".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = format!("PORT={}\n{SCRIPT}", fx.http_port);
    let o = jailed_sh(
        As::Root,
        config.path(),
        &["prlimit", "--nofile=1024:1024"],
        &flags,
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let t = text(&o);
    let held: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("flood "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse::<usize>().ok())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        out.contains(&format!("second={ALLOWED_BODY}")),
        "the second client was not served: {t}"
    );
    assert!(
        held > 1024,
        "the flood holds more than 1,024 connections: {t}"
    );
}
