//! Soak: the release `boundary` jails `boundary-loadgen` (nsjail), which holds 1,000 client
//! connections open at once and makes 200,000 operations through the proxy: HTTP/1.1 and
//! HTTP/2 requests that are allowed, HTTP/1.1 requests that are denied, and WebSocket messages
//! on allowed upgrades, against `boundary-bench-upstream` (HTTPS on host loopback). Checked:
//! every answer is the right one (200 + body, 403, echo); `--audit-log` holds exactly one record
//! per request with the right decision and distinct sequence numbers; and once the load is
//! over, the boundary process's open descriptors are back where they were before it and its
//! resident memory near it. The load runs twice in the same jail: memory that grows again over
//! the second identical round means something accumulates.
//!
//! Needs root (network namespaces) and the release binary: `cargo build --release -p boundary`
//! (or BOUNDARY_BIN). Run: `cargo test -p boundary-integration --test soak -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boundary_integration::farhost::require_root;

const UPSTREAM: &str = env!("CARGO_BIN_EXE_boundary-bench-upstream");
const LOADGEN: &str = env!("CARGO_BIN_EXE_boundary-loadgen");
const CONNS: usize = 1000;
const OPS: usize = 200_000;
/// Upper bound for one round of load; a round takes about a minute and a half on 2 cores.
const LOAD_LIMIT: Duration = Duration::from_secs(600);

fn release_boundary() -> PathBuf {
    if let Some(p) = std::env::var_os("BOUNDARY_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/boundary");
    assert!(
        p.is_file(),
        "{} is missing: the soak test runs the release build; run `cargo build --release -p boundary` first (or set BOUNDARY_BIN)",
        p.display()
    );
    p
}

/// Open descriptors and VmRSS (KiB) of a process.
fn usage(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

fn wait_for(path: &Path, limit: Duration, child: &mut Child, what: &str) {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("boundary exited ({st}) before {what}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn soak_1000_connections_200k_operations() {
    require_root().expect("the soak test needs root (network namespaces for the jail)");
    let boundary = release_boundary();
    // 1,000 jailed connections are 1,000 accepted sockets plus pooled upstream ones in boundary.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 8192,
        "RLIMIT_NOFILE hard limit {hard} is below 8192; raise it (ulimit -Hn) for the soak test"
    );
    if soft < hard {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
            .unwrap();
    }

    let dir = tempfile::Builder::new()
        .prefix("boundary-soak-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut up = Command::new(UPSTREAM)
        .args(["--name", "soak.test", "--idle-close", "2", "--dir"])
        .arg(d.join("upstream"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start boundary-bench-upstream");
    let mut line = String::new();
    BufReader::new(up.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _up = Kill(up);
    let port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("upstream said {line:?}"));

    // Two rounds of the same load: the first shows descriptors and memory coming back, the
    // second that nothing accumulates from one round to the next (a leak would).
    let script = format!(
        "touch {d}/started\n\
         for r in 1 2; do\n\
         while [ ! -e {d}/go$r ]; do sleep 0.1; done\n\
         {LOADGEN} --name soak.test --port {port} soak --conns {CONNS} --ops {OPS} > {d}/summary$r.json 2> {d}/loadgen$r.err\n\
         echo $? > {d}/loadgen$r.rc\n\
         done\n\
         while [ ! -e {d}/stop ]; do sleep 0.1; done\n",
        d = d.display()
    );
    std::fs::write(d.join("jailed.sh"), script).unwrap();
    let audit = d.join("audit.jsonl");
    let config = d.join("config");
    std::fs::create_dir(&config).unwrap();
    let child = Command::new(&boundary)
        .env("XDG_CONFIG_HOME", &config)
        .args(["--log-level", "error", "--disable-audit-logs"])
        .args(["--resolve", "soak.test=127.0.0.1", "--upstream-ca-file"])
        .arg(d.join("upstream/ca.pem"))
        .args(["--allow", "domain=soak.test path=/small,/ws"])
        .arg("--audit-log")
        .arg(&audit)
        .arg("--")
        .arg("sh")
        .arg(d.join("jailed.sh"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start boundary");
    let mut child = Kill(child);
    let pid = child.0.id();

    wait_for(
        &d.join("started"),
        Duration::from_secs(30),
        &mut child.0,
        "the jail started",
    );
    std::thread::sleep(Duration::from_millis(500));
    let (fd0, rss0) = usage(pid);
    let one = run_round(1, d, pid, &mut child.0, fd0);
    let two = run_round(2, d, pid, &mut child.0, fd0);
    std::fs::write(d.join("stop"), "").unwrap();
    let st = child.0.wait().unwrap();
    assert!(st.success(), "boundary exited with {st}");

    for r in [&one, &two] {
        r.check();
        assert!(
            r.fd_peak >= fd0 + CONNS,
            "round {}: boundary never had {CONNS} more descriptors open (peak {}, start {fd0}): the connections were not concurrent",
            r.n, r.fd_peak
        );
        assert!(
            r.fd_after <= fd0 + 8,
            "round {}: boundary still holds {} descriptors after the load (started with {fd0}, peak {})",
            r.n, r.fd_after, r.fd_peak
        );
    }
    // Memory: allocators keep some of what was freed, so the first round may leave the heap
    // larger than at the start, but a leak of per-connection or per-request state would grow
    // it again in the second round.
    let grown = one.rss_after.saturating_sub(rss0);
    assert!(
        grown <= 96 * 1024,
        "boundary RSS {rss0} KiB -> {} KiB after the first round (peak {} KiB): not back near the start",
        one.rss_after, one.rss_peak
    );
    assert!(
        two.rss_after <= one.rss_after + 16 * 1024,
        "boundary RSS grew from {} KiB to {} KiB over a second identical round: memory accumulates",
        one.rss_after,
        two.rss_after
    );

    // Audit: exactly one record per request (WebSocket messages are not requests).
    let text = std::fs::read_to_string(&audit).expect("audit log");
    let mut by_kind: HashMap<(String, String), u64> = HashMap::new();
    let mut seqs = HashSet::new();
    let mut lines = 0u64;
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"));
        lines += 1;
        let url = v["http_url"].as_str().expect("http_url").to_string();
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or(url);
        let decision = v["decision"].as_str().expect("decision").to_string();
        *by_kind.entry((decision, path)).or_default() += 1;
        assert!(
            seqs.insert(v["sequence_number"].as_i64().expect("sequence_number")),
            "sequence number repeated: {l}"
        );
    }
    let n = |k: &str| one.get(k) + two.get(k);
    let (h1, h2, deny, ws) = (n("h1_ok"), n("h2_ok"), n("deny_ok"), n("ws_upgrades"));
    assert_eq!(
        lines,
        n("answered"),
        "audit records != requests answered; by kind: {by_kind:?}"
    );
    let get = |d: &str, p: &str| {
        by_kind
            .get(&(d.to_string(), p.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get("allow", "/small"), h1 + h2, "{by_kind:?}");
    assert_eq!(get("allow", "/ws"), ws, "{by_kind:?}");
    assert_eq!(get("deny", "/denied"), deny, "{by_kind:?}");
    assert_eq!(seqs.len() as u64, lines);
    assert_eq!(seqs.iter().max().copied(), Some(lines as i64 - 1));
}

/// What one round of load produced and left behind.
struct Round {
    n: u32,
    summary: serde_json::Value,
    fd_peak: usize,
    fd_after: usize,
    rss_peak: u64,
    rss_after: u64,
}

impl Round {
    fn get(&self, k: &str) -> u64 {
        self.summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("summary lacks {k}: {}", self.summary))
    }

    /// Every operation got the right answer, and the mix had every kind.
    fn check(&self) {
        let r = self.n;
        assert_eq!(
            self.get("errors"),
            0,
            "round {r} errors: {}",
            self.summary["first_errors"]
        );
        assert_eq!(
            self.get("wrong"),
            0,
            "round {r} wrong answers: {}",
            self.summary["first_errors"]
        );
        let kinds = ["h1_ok", "h2_ok", "deny_ok", "ws_upgrades", "ws_messages_ok"];
        let total: u64 = kinds.iter().map(|k| self.get(k)).sum();
        assert_eq!(
            total, OPS as u64,
            "round {r}: not every operation got its answer"
        );
        for k in kinds {
            assert!(self.get(k) > 0, "round {r}: no {k} in the mix");
        }
    }
}

/// Starts round `n` in the jail, samples boundary while it runs, waits for its descriptors
/// to come back (bounded), and returns the figures.
fn run_round(n: u32, d: &Path, pid: u32, child: &mut Child, fd0: usize) -> Round {
    std::fs::write(d.join(format!("go{n}")), "").unwrap();
    let rc_file = d.join(format!("loadgen{n}.rc"));
    let deadline = Instant::now() + LOAD_LIMIT;
    let (mut fd_peak, mut rss_peak) = usage(pid);
    while !rc_file.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("boundary exited ({st}) during round {n}");
        }
        assert!(
            Instant::now() < deadline,
            "round {n} did not finish within {LOAD_LIMIT:?}"
        );
        let (f, r) = usage(pid);
        fd_peak = fd_peak.max(f);
        rss_peak = rss_peak.max(r);
        std::thread::sleep(Duration::from_millis(200));
    }
    let rc = std::fs::read_to_string(&rc_file).unwrap();
    let err = std::fs::read_to_string(d.join(format!("loadgen{n}.err"))).unwrap_or_default();
    assert_eq!(rc.trim(), "0", "boundary-loadgen round {n} failed: {err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join(format!("summary{n}.json"))).unwrap())
            .expect("loadgen summary");
    eprintln!("soak round {n}: {summary}");
    // Clients gone; the origin closes idle upstream connections after 2 s.
    let settle = Instant::now() + Duration::from_secs(30);
    let mut fd_after = usage(pid).0;
    while fd_after > fd0 + 8 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(250));
        fd_after = usage(pid).0;
    }
    // A moment more for memory freed by the last closes.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = usage(pid).1;
    eprintln!(
        "round {n}: boundary pid {pid}: fds {fd0} -> peak {fd_peak} -> {fd_after}; RSS KiB peak {rss_peak} -> {rss_after}"
    );
    Round {
        n,
        summary,
        fd_peak,
        fd_after,
        rss_peak,
        rss_after,
    }
}
