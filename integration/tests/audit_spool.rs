//! No audit record lost silently (issue 12 item 7), through the real binary in an nsjail, the
//! real agent log proxy and coderd sink:
//! - the agent goes away, the jail makes 20,000 decisions (denied, the last one allowed: the
//!   review's "allowed record after 10,500 denied" case), the agent comes back: every record
//!   reaches coderd exactly once, in sequence order;
//! - boundary is killed with SIGKILL while records wait in the spool: the next run delivers
//!   them, under the first run's session;
//! - no agent at all when boundary starts (the socket path is configured, nothing listens):
//!   the records go to the spool and reach the agent, in order, when it comes up.
//!
//! Needs root (nsjail), `cargo build -p boundary`, python3.

mod nsjail_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use boundary_integration::coder::logfmt;
use boundary_integration::coder::peers::{LogProxyProcess, SinkProcess};
use nsjail_common::*;

const SINK: &str = env!("CARGO_BIN_EXE_boundary-coderd-sink");
const PROXY: &str = env!("CARGO_BIN_EXE_boundary-agent-log-proxy");

/// The jailed client: `n` requests on keep-alive connections, all denied but the last; prints
/// how many responses it got (each is one decision, so one record).
const CLIENT: &str = r#"
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("fixture.test", port, timeout=30)
got = 0
for i in range(n):
    path = "/allowed.txt" if i == n - 1 else "/denied.txt?i=%d" % i
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        got += 1
    except Exception as e:
        print("error", i, type(e).__name__, flush=True)
        conn.close()
        conn = http.client.HTTPConnection("fixture.test", port, timeout=30)
print("responses", got, flush=True)
"#;

struct Rig {
    fx: Fixture,
    config: tempfile::TempDir,
    socket: PathBuf,
    sink: SinkProcess,
}

impl Rig {
    fn new() -> Rig {
        require_root().unwrap();
        let fx = Fixture::start();
        let config = config_home(As::Root);
        let socket = config.path().join("agent-audit.sock");
        std::fs::write(config.path().join("client.py"), CLIENT).unwrap();
        let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
        Rig {
            fx,
            config,
            socket,
            sink,
        }
    }

    fn agent(&self) -> LogProxyProcess {
        LogProxyProcess::spawn(Path::new(PROXY), &self.socket, &self.sink.addr, false, 100).unwrap()
    }

    fn go(&self, name: &str) -> PathBuf {
        self.config.path().join(name)
    }

    /// boundary running `script`, stdout piped for [`wait_line`].
    fn boundary(&self, script: &str) -> Child {
        let mut flags = self.fx.flags(&["domain=fixture.test path=/allowed.txt"]);
        flags.extend(
            [
                "--log-proxy-socket-path",
                &self.socket.to_string_lossy(),
                "--audit-flush-interval",
                "100ms",
                "--audit-shutdown-timeout",
                "60s",
            ]
            .map(String::from),
        );
        boundary_cmd(As::Root, self.config.path(), &[])
            .args(&flags)
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for the go-file `name`, then runs the client for `n` requests.
    fn script(&self, n: usize, tail: &str) -> String {
        format!(
            "i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
             python3 {dir}/client.py {port} {n}\n{tail}\n",
            go = self.go("go").display(),
            dir = self.config.path().display(),
            port = self.fx.http_port,
        )
    }
}

/// Reads stdout lines until one starts with `prefix`; returns it.
fn wait_line(out: &mut impl BufRead, prefix: &str) -> String {
    let mut seen = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("no {prefix:?} line; stdout:\n{seen}");
}

/// (session, sequence number, decision) of each coderd line, in arrival order.
fn records(lines: &[String]) -> Vec<(String, usize, String)> {
    lines
        .iter()
        .map(|l| {
            let h = logfmt::parse_human(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            (
                h.get("session_id").unwrap().to_string(),
                h.get("sequence_number").unwrap().parse().unwrap(),
                h.get("decision").unwrap().to_string(),
            )
        })
        .collect()
}

fn finish(child: Child) -> String {
    let o = child.wait_with_output().unwrap();
    format!(
        "status={:?}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn agent_away_for_20000_records_then_back_gets_each_once_in_order_with_the_last_allowed() {
    const N: usize = 20_000;
    let rig = Rig::new();
    let mut agent = rig.agent();
    let go2 = rig.go("go2");
    let tail = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 3600 ]; do sleep 0.1; i=$((i+1)); done",
        go = go2.display()
    );
    let mut child = rig.boundary(&rig.script(N, &tail));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // The agent goes away before the first request.
    agent.kill();
    std::fs::write(rig.go("go"), "").unwrap();
    let line = wait_line(&mut out, "responses ");
    let got: usize = line["responses ".len()..].trim().parse().unwrap();
    assert_eq!(got, N, "the client got every response: {line}");
    // The agent is back while the run goes on: the backlog drains to it (paced, so it can take
    // a while on a loaded machine). Only then does the target exit; a run that exits with a
    // backlog left keeps it for the next run, which the SIGKILL test covers.
    let agent = rig.agent();
    rig.sink.wait_for_lines(N, Duration::from_secs(300));
    std::fs::write(&go2, "").unwrap();
    let all = format!(
        "{}\n--- agent\n{}",
        finish(child),
        agent.stderr_lines().join("\n")
    );
    // Read after boundary exited, so a record delivered twice would show.
    let lines = rig.sink.lines();
    let recs = records(&lines);
    let seqs: Vec<usize> = recs.iter().map(|r| r.1).collect();
    assert_eq!(recs.len(), N, "every record reached coderd\n{all}");
    assert!(
        seqs.iter().copied().eq(0..N),
        "exactly once and in sequence order; first out of place: {:?}\n{all}",
        seqs.iter().enumerate().find(|(i, s)| *i != **s)
    );
    assert_eq!(
        recs[N - 1].2,
        "allow",
        "the allowed record after the denied ones"
    );
    assert!(!all.contains("DROPPED"), "{all}");
}

/// Sum of the record counts of the complete entries in a spool `data` file (the layout of
/// `boundary_audit::forwarder::spool`, written out here independently).
fn spooled_records(data: &Path) -> usize {
    let b = std::fs::read(data).unwrap_or_default();
    let (mut at, mut n) = (0, 0);
    while at + 20 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if at + 20 + len > b.len() {
            break;
        }
        n += u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 20 + len;
    }
    n
}

fn spool_data_files(config: &Path) -> Vec<PathBuf> {
    let root = config.join("coder_boundary/spool");
    std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("data"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn records_spooled_when_boundary_is_killed_are_delivered_by_the_next_run() {
    const N: usize = 500;
    let rig = Rig::new();
    let mut agent = rig.agent();
    let mut child = rig.boundary(&rig.script(N, "sleep 60"));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    agent.kill();
    std::fs::write(rig.go("go"), "").unwrap();
    let line = wait_line(&mut out, "responses ");
    assert_eq!(line, format!("responses {N}"));
    // Every record is in the spool before the kill (the flush interval is 100 ms).
    let start = Instant::now();
    loop {
        let n: usize = spool_data_files(rig.config.path())
            .iter()
            .map(|p| spooled_records(p))
            .sum();
        if n == N {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {n} of {N} records reached the spool"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let first = finish(child);
    assert_eq!(rig.sink.lines().len(), 0, "nothing was delivered yet");

    // The agent is back; the next run (which decides nothing) delivers the first run's records.
    let _agent = rig.agent();
    let second = rig.boundary("true");
    let all = format!("{first}\n--- second run\n{}", finish(second));
    let lines = rig.sink.wait_for_lines(N, Duration::from_secs(60));
    let recs = records(&lines);
    assert_eq!(recs.len(), N, "{all}");
    assert!(
        recs.iter().map(|r| r.1).eq(0..N),
        "once each, in order\n{all}"
    );
    assert!(
        recs.iter().all(|r| r.0 == recs[0].0),
        "all under the first run's session"
    );
    assert!(
        spool_data_files(rig.config.path()).is_empty(),
        "the delivered spool is removed: {:?}",
        spool_data_files(rig.config.path())
    );
}

#[test]
fn records_made_before_the_agent_first_appears_are_spooled_and_delivered_in_order() {
    const N: usize = 300;
    let rig = Rig::new();
    assert!(!rig.socket.exists());
    let go2 = rig.go("go2");
    let tail = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done",
        go = go2.display()
    );
    let mut child = rig.boundary(&rig.script(N, &tail));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    std::fs::write(rig.go("go"), "").unwrap();
    let line = wait_line(&mut out, "responses ");
    assert_eq!(line, format!("responses {N}"));
    // No agent yet: every record waits in the spool on disk, not in memory.
    let start = Instant::now();
    loop {
        let n: usize = spool_data_files(rig.config.path())
            .iter()
            .map(|p| spooled_records(p))
            .sum();
        if n == N {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {n} of {N} records reached the spool with no agent up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The agent comes up for the first time; then the target exits.
    let _agent = rig.agent();
    std::fs::write(&go2, "").unwrap();
    let all = finish(child);
    let lines = rig.sink.wait_for_lines(N, Duration::from_secs(60));
    let recs = records(&lines);
    assert_eq!(recs.len(), N, "{all}");
    assert!(
        recs.iter().map(|r| r.1).eq(0..N),
        "once each, in order\n{all}"
    );
    assert!(!all.contains("DROPPED"), "{all}");
    assert!(
        spool_data_files(rig.config.path()).is_empty(),
        "the delivered spool is removed"
    );
}

#[test]
fn the_spool_is_out_of_reach_inside_nsjail() {
    let rig = Rig::new();
    let _agent = rig.agent();
    let spool = rig.config.path().join("coder_boundary/spool");
    let script = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo \"inside: [$(ls -A {s} 2>&1 | tr '\\n' ' ')]\"\n\
         touch {s}/planted 2>/dev/null && echo planted; mkdir {s}/x 2>/dev/null && echo planted\n",
        go = rig.go("go").display(),
        s = spool.display()
    );
    let mut child = rig.boundary(&script);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Positive control: outside, the running boundary's spool directory is there.
    let start = Instant::now();
    let outside = loop {
        let names: Vec<String> = std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !names.is_empty() {
            break names;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no spool directory appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(rig.go("go"), "").unwrap();
    let line = wait_line(&mut out, "inside: ");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let all = finish(child);
    // Hidden (empty) or refused: either way the run's directory cannot be seen.
    assert!(
        line == "inside: []" || line.contains("Permission denied"),
        "{line}\noutside: {outside:?}\n{all}"
    );
    assert!(!outside.iter().any(|n| line.contains(n.as_str())), "{line}");
    assert!(!rest.contains("planted"), "{rest}\n{all}");
    assert!(!spool.join("planted").exists() && !spool.join("x").exists());
}

/// The spool's parent directories cannot be renamed away inside nsjail (as root and as a
/// user): moved, the jail could put a spool of its own where boundary looks for earlier runs'
/// records (forged records delivered as boundary's) and make this run's own spool land in a
/// directory it can write. Positive control: the jail renames a sibling directory it made.
#[test]
fn the_spool_s_parents_cannot_be_renamed_inside_nsjail() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let config = config_home(who);
        let state = config_home(who);
        let spool = state.path().join("coder_boundary/spool");
        let s = state.path().display();
        let script = format!(
            "mv {s}/coder_boundary {s}/moved 2>/dev/null && echo MOVED-PARENT || echo pinned\n\
             mv {s}/coder_boundary/spool {s}/moved-spool 2>/dev/null && echo MOVED-SPOOL || echo pinned\n\
             mkdir {s}/sibling && mv {s}/sibling {s}/sibling2 && echo control-moved\n"
        );
        let out = boundary_cmd(who, config.path(), &[])
            .args([
                "--jail-type",
                "nsjail",
                "--log-level",
                "error",
                "--audit-spool-dir",
                &spool.to_string_lossy(),
                "--log-proxy-socket-path",
                &config.path().join("agent.sock").to_string_lossy(),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("control-moved"), "{who:?}: {t}");
        assert_eq!(stdout.matches("pinned").count(), 2, "{who:?}: {t}");
        assert!(spool.is_dir(), "{who:?}: the spool was moved: {t}");
    }
}
