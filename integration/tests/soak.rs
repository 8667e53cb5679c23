//! Soak: the release `boundary` jails `boundary-loadgen` (nsjail), which holds 1,000 client
//! connections open at once and makes 200,000 operations through the proxy: HTTP/1.1 and
//! HTTP/2 requests that are allowed, HTTP/1.1 requests that are denied, and WebSocket messages
//! on allowed upgrades, against `boundary-bench-upstream` (HTTPS on host loopback). Checked:
//! every answer is the right one (200 + body, 403, echo); `--audit-log` holds exactly one record
//! per request with the right decision and distinct sequence numbers; and once the load is
//! over, the boundary process's open descriptors and resident memory are back near where they
//! were before it.
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
/// Upper bound for the whole load phase; the load itself takes well under a minute.
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

    let script = format!(
        "touch {d}/started\n\
         while [ ! -e {d}/go ]; do sleep 0.1; done\n\
         {LOADGEN} --name soak.test --port {port} soak --conns {CONNS} --ops {OPS} > {d}/summary.json 2> {d}/loadgen.err\n\
         echo $? > {d}/loadgen.rc\n\
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
    std::fs::write(d.join("go"), "").unwrap();
    // Sample while loaded: the peak shows the connections really were open at once.
    let deadline = Instant::now() + LOAD_LIMIT;
    let (mut fd_peak, mut rss_peak) = (fd0, rss0);
    while !d.join("loadgen.rc").exists() {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("boundary exited ({st}) during the load");
        }
        assert!(
            Instant::now() < deadline,
            "the load did not finish within {LOAD_LIMIT:?}"
        );
        let (f, r) = usage(pid);
        fd_peak = fd_peak.max(f);
        rss_peak = rss_peak.max(r);
        std::thread::sleep(Duration::from_millis(200));
    }
    let rc = std::fs::read_to_string(d.join("loadgen.rc")).unwrap();
    let err = std::fs::read_to_string(d.join("loadgen.err")).unwrap_or_default();
    assert_eq!(rc.trim(), "0", "boundary-loadgen failed: {err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap())
            .expect("loadgen summary");
    eprintln!("soak summary: {summary}");

    // Clients gone, upstream connections closed by the origin after 2 s idle: the proxy's
    // descriptors must come back. Wait for it (bounded), then compare.
    let settle = Instant::now() + Duration::from_secs(30);
    let (mut fd1, mut rss1) = usage(pid);
    while fd1 > fd0 + 8 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(250));
        (fd1, rss1) = usage(pid);
    }
    eprintln!(
        "boundary pid {pid}: fds {fd0} -> peak {fd_peak} -> {fd1}; RSS KiB {rss0} -> peak {rss_peak} -> {rss1}"
    );
    std::fs::write(d.join("stop"), "").unwrap();
    let st = child.0.wait().unwrap();
    assert!(st.success(), "boundary exited with {st}");

    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("summary lacks {k}"))
    };
    assert_eq!(n("errors"), 0, "errors: {}", summary["first_errors"]);
    assert_eq!(n("wrong"), 0, "wrong answers: {}", summary["first_errors"]);
    let (h1, h2, deny, ws, msgs) = (
        n("h1_ok"),
        n("h2_ok"),
        n("deny_ok"),
        n("ws_upgrades"),
        n("ws_messages_ok"),
    );
    assert_eq!(
        h1 + h2 + deny + ws + msgs,
        OPS as u64,
        "not every operation got its answer"
    );
    assert!(
        h1 > 0 && h2 > 0 && deny > 0 && ws > 0 && msgs > 0,
        "the mix is incomplete"
    );
    assert!(
        fd_peak >= fd0 + CONNS,
        "boundary never had {CONNS} more descriptors open (peak {fd_peak}, start {fd0}): the connections were not concurrent"
    );
    assert!(
        fd1 <= fd0 + 8,
        "boundary still holds {fd1} descriptors after the load (started with {fd0}, peak {fd_peak})"
    );
    // Memory: allocators keep some of what was freed; a leak of the load's per-connection or
    // per-request state would keep most of the peak growth.
    let grown = rss1.saturating_sub(rss0);
    let peak_growth = rss_peak.saturating_sub(rss0).max(1);
    assert!(
        grown <= 64 * 1024 || grown * 2 <= peak_growth,
        "boundary RSS {rss0} KiB -> {rss1} KiB after the load (peak {rss_peak} KiB): not back near the start"
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
