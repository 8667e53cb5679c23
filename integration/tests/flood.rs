//! Through the real binary in nsjail under a 1,024 descriptor limit (hard and soft, set with
//! prlimit on boundary): two jailed processes hold 2,000 idle keep-alive connections to the
//! proxy, and a second client in the same jail is still served. And a flood of HTTP/2 streams
//! and HTTP/1.1 connections to one origin opens no more connections there than the cap.
//!
//! Needs `cargo build -p boundary` first, and curl, python3, openssl, prlimit.

mod nsjail_common;
use nsjail_common::*;

const SCRIPT: &str = r#"
set -u
D=$(mktemp -d)
cat > $D/flood.py <<'PY'
@FLOOD@PY
F="python3 $D/flood.py fixture.test $PORT 1000 /allowed.txt fixture.test:$PORT"
$F > $D/a &
A=$!
$F > $D/b &
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
    // The same flood client as proxy/tests/fd_flood.rs, written into the jail's temp dir.
    let flood = include_str!("../../proxy/tests/clients/flood.py");
    let script = format!(
        "PORT={}\n{}",
        fx.http_port,
        SCRIPT.replace("@FLOOD@", flood)
    );
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

/// boundary's default cap on requests in flight per origin (`PER_ORIGIN` in
/// proxy/src/upstream/limits.rs), which also caps the connections its pool keeps there.
const PER_ORIGIN: usize = 64;

/// A slow HTTPS origin on host loopback (the fixture's certificate, HTTP/1.1 keep-alive): every
/// request takes 0.2 s; it writes `open most total` (connections open now, the most at once,
/// all) to a file each time a connection opens or closes.
const SLOW_ORIGIN: &str = r#"
import http.server, os, ssl, sys, threading, time
cert, key, stats = sys.argv[1:4]
lock, state = threading.Lock(), {"open": 0, "most": 0, "total": 0}
def count(d):
    with lock:
        state["open"] += d
        state["total"] += max(d, 0)
        state["most"] = max(state["most"], state["open"])
        with open(stats + ".new", "w") as f:
            f.write("%(open)d %(most)d %(total)d" % state)
        os.replace(stats + ".new", stats)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        count(1)
    def finish(self):
        super().finish()
        count(-1)
    def log_message(self, *a):
        pass
    def do_GET(self):
        time.sleep(0.2)
        body = b"slow-origin-ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
print("READY", s.server_address[1], flush=True)
s.serve_forever()
"#;

/// In the jail: 300 HTTP/2 streams on one HTTPS connection (curl multiplexes them) and 200
/// HTTP/1.1 connections to the slow origin, then a second client while they run.
const CAP_FLOOD: &str = r#"
set -u
D=$(mktemp -d)
U=https://fixture.test:$PORT
seq 300 | sed "s|.*|url = \"$U/h2-&\"\noutput = /dev/null|" > $D/h2.cfg
seq 200 | sed "s|.*|url = \"$U/h1-&\"\noutput = /dev/null|" > $D/h1.cfg
curl -sS --http2 --parallel --parallel-max 300 -K $D/h2.cfg -w '%{http_version} %{http_code}\n' > $D/h2 2>&1 &
A=$!
curl -sS --http1.1 --parallel --parallel-max 200 -K $D/h1.cfg -w '%{http_version} %{http_code}\n' > $D/h1 2>&1 &
B=$!
sleep 0.5
echo "second=$(curl -sS --max-time 60 $U/second-client) flood-done-then=$(cat $D/h2 $D/h1 | grep -c ' 200$')"
wait $A $B
echo "h2-ok=$(grep -c '^2 200$' $D/h2) h1-ok=$(grep -c '^1.1 200$' $D/h1)"
sort $D/h2 $D/h1 | uniq -c | sort -rn | head -5
"#;

#[test]
fn a_stream_and_connection_flood_from_the_jail_stays_under_the_origin_cap() {
    use std::io::BufRead;
    let fx = Fixture::start();
    let d = fx.dir.path();
    let (script, stats) = (d.join("slow.py"), d.join("slow.stats"));
    std::fs::write(&script, SLOW_ORIGIN).unwrap();
    let mut origin = std::process::Command::new("python3")
        .arg(&script)
        .args([d.join("leaf.pem"), d.join("leaf.key"), stats.clone()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 slow origin");
    let mut line = String::new();
    std::io::BufReader::new(origin.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("slow origin said {line:?}"));
    let config = config_home(As::Root);
    let mut flags = fx.flags(&["domain=fixture.test"]);
    flags.extend(["--jail-type".into(), "nsjail".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = format!("PORT={port}\n{CAP_FLOOD}");
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let t = text(&o);
    let _ = origin.kill();
    let _ = origin.wait();
    let stats = std::fs::read_to_string(&stats).unwrap_or_default();
    let numbers: Vec<usize> = stats
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    eprintln!("slow origin connections (open, most at once, all): {stats}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("second=slow-origin-ok"), "second client: {t}");
    assert!(
        out.contains("h2-ok=300 h1-ok=200"),
        "every request of the flood is served in its turn: {t}"
    );
    let (most, total) = (numbers.get(1).copied(), numbers.get(2).copied());
    let most = most.unwrap_or_else(|| panic!("no origin stats {stats:?}: {t}"));
    assert!(
        most <= PER_ORIGIN,
        "the origin had {most} connections open at once; boundary's cap is {PER_ORIGIN}: {t}"
    );
    assert!(
        most >= PER_ORIGIN / 2,
        "the flood never pressed the cap ({most} connections at once): {t}"
    );
    assert!(
        total.is_some_and(|n| n <= PER_ORIGIN),
        "the origin saw {stats:?} (open, most, total) connections: boundary opened more \
         than the cap over the run: {t}"
    );
}

/// A recording origin on host loopback (plain HTTP/1.1): `/big` answers 32 MiB, far more than
/// socket buffers hold, so a client that never reads keeps its response unfinished; anything
/// else answers `served <path>`. Each request's path is appended to the record file.
const BIG_ORIGIN: &str = r#"
import http.server, sys
record = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        with open(record, "a") as f:
            f.write(self.path + "\n")
        if self.path.startswith("/big"):
            chunk, n = b"x" * 65536, 512
            self.send_response(200)
            self.send_header("Content-Length", str(len(chunk) * n))
            self.end_headers()
            try:
                for _ in range(n):
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        body = ("served " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print("READY", s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The jailed flood: 64 connections (the per-origin cap), each sends `GET /big-N` and reads
/// only the first bytes of the answer (so it knows the request holds its place), then never
/// reads again. Prints `holding N`.
const NEVER_READS: &str = r#"
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("stall.test", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(("GET /big-%d HTTP/1.1\r\nHost: stall.test\r\n\r\n" % i).encode())
    held.append(s)
got = sum(1 for s in held if s.recv(12).startswith(b"HTTP/1.1 200"))
print("holding", got, flush=True)
time.sleep(600)
"#;

const STALL_SCRIPT: &str = r#"
set -u
D=$(mktemp -d)
cat > $D/flood.py <<'PY'
@FLOOD@PY
python3 $D/flood.py $PORT 64 > $D/out &
F=$!
for i in $(seq 300); do grep -q holding $D/out 2>/dev/null && break; sleep 0.1; done
echo "flood $(cat $D/out)"
echo "second=$(curl -sS --max-time 60 http://stall.test:$PORT/second-client)"
kill $F
"#;

/// Issue 12 item 9, a client that never reads: a jailed process holds all 64 of an origin's
/// places with requests whose answers it never reads; with a 2 s client stall timeout those
/// responses are ended and a second client in the same jail gets its 200 from the origin.
/// Before the stall timeout the flood held its places for as long as it kept its connections,
/// and the second client got a 503 after the idle timeout (30 s here).
#[test]
fn a_client_that_never_reads_does_not_starve_a_second_client() {
    use std::io::BufRead;
    require_root().unwrap();
    let dir = shared_tempdir();
    let (script, record) = (dir.path().join("big.py"), dir.path().join("record"));
    std::fs::write(&script, BIG_ORIGIN).unwrap();
    let mut origin = std::process::Command::new("python3")
        .arg(&script)
        .arg(&record)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 origin");
    let mut line = String::new();
    std::io::BufReader::new(origin.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("origin said {line:?}"));
    let config = config_home(As::Root);
    let flags = [
        "--log-level",
        "warn",
        "--jail-type",
        "nsjail",
        "--resolve",
        "stall.test=127.0.0.1",
        "--allow",
        "domain=stall.test",
        "--client-stall-timeout",
        "2s",
        "--idle-timeout",
        "30s",
    ];
    let script = format!(
        "PORT={port}\n{}",
        STALL_SCRIPT.replace("@FLOOD@", NEVER_READS)
    );
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let t = text(&o);
    let _ = origin.kill();
    let _ = origin.wait();
    let out = String::from_utf8_lossy(&o.stdout);
    let record = std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        out.contains(&format!("flood holding {PER_ORIGIN}")),
        "the flood held every place of the origin: {t}"
    );
    assert!(
        out.contains("second=served /second-client"),
        "the second client was not served: {t}"
    );
    assert!(
        record.lines().any(|l| l == "/second-client"),
        "the origin did not record the second client: {record}\n{t}"
    );
    assert!(
        t.contains("read nothing of a response"),
        "boundary says why it ended the flood's responses: {t}"
    );
}
