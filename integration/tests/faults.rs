//! Faults around the proxy, each with a real jailed client (curl, python3) under `boundary`
//! (nsjail) and a plain-HTTP origin on host loopback that this test controls: the origin
//! resetting mid-body, a client sending one header byte per second (closed by
//! `--idle-timeout`, other clients unaffected), a client leaving mid-stream (the origin's
//! transfer is stopped), an agent socket that never reads (requests still served, every
//! record in the spool in order, none dropped), the `--audit-log` disk full (clear error, decisions go on), and the CA
//! directory unwritable (clear error at start, the command never runs).
//!
//! Needs root (namespaces, tmpfs mounts), `cargo build -p boundary` (or BOUNDARY_BIN), curl,
//! python3. Run: `cargo test -p boundary-integration --test faults`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundary_integration::farhost::{boundary_binary, require_root};

/// Generous bound on one boundary run; a hang fails the test instead of blocking CI.
const RUN_LIMIT: Duration = Duration::from_secs(180);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Plain-HTTP origin on 127.0.0.1: `/ok` (2-byte body), `/reset` (announces 1 MB, sends 10 KB,
/// then resets), `/stream` (writes until the reader goes away, then creates `aborted_marker`).
struct Origin {
    port: u16,
    stream_aborted: Arc<AtomicBool>,
}

impl Origin {
    fn start(aborted_marker: PathBuf) -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stream_aborted = Arc::new(AtomicBool::new(false));
        let flag = stream_aborted.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (flag, marker) = (flag.clone(), aborted_marker.clone());
                std::thread::spawn(move || serve(s, &flag, &marker));
            }
        });
        Origin {
            port,
            stream_aborted,
        }
    }
}

fn serve(mut s: TcpStream, aborted: &AtomicBool, marker: &Path) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    if path.starts_with("/ok") {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    } else if path == "/reset" {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        let _ = s.write_all(&[b'r'; 10_000]);
        let _ = s.flush();
        std::thread::sleep(Duration::from_millis(200));
        // SO_LINGER 0: close sends RST instead of FIN.
        let linger = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    } else if path == "/stream" {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n");
        let chunk = vec![b's'; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
        aborted.store(true, Ordering::SeqCst);
        let _ = std::fs::write(marker, "");
    } else {
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

fn tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("boundary-faults-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Runs `boundary FLAGS -- sh -c SCRIPT` with XDG_CONFIG_HOME and XDG_STATE_HOME (the audit
/// spool) = `config`, bounded by RUN_LIMIT.
fn boundary(config: &Path, flags: &[String], script: &str) -> Output {
    let mut child = Command::new(boundary_binary().unwrap())
        .env("XDG_CONFIG_HOME", config)
        .env("XDG_STATE_HOME", config)
        .env("PATH", PATH)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start boundary");
    // Drain the pipes on threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("boundary did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    eprintln!("{}", show(&out));
    out
}

fn flags(extra: &[&str]) -> Vec<String> {
    let mut f: Vec<String> = [
        "--resolve",
        "fault.test=127.0.0.1",
        "--allow",
        "domain=fault.test path=/ok,/reset,/stream",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn show(o: &Output) -> String {
    format!(
        "status={:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("mount (util-linux)");
        assert!(
            st.success(),
            "mount -t tmpfs -o {options} at {} failed",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
        .collect()
}

#[test]
fn upstream_reset_mid_body_fails_that_transfer_only() {
    require_root().unwrap();
    let d = tempdir();
    let origin = Origin::start(d.path().join("aborted"));
    let audit = d.path().join("audit.jsonl");
    let script = format!(
        "curl -sS -o /dev/null -w 'size=%{{size_download}}\\n' http://fault.test:{p}/reset; echo rc=$?\n\
         curl -sS http://fault.test:{p}/ok; echo; echo rc2=$?",
        p = origin.port
    );
    let audit_s = audit.to_string_lossy().into_owned();
    let o = boundary(
        d.path(),
        &flags(&["--log-level", "error", "--audit-log", &audit_s]),
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let rc: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("rc="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", show(&o)));
    assert_ne!(
        rc,
        0,
        "curl reported success for a body cut short: {}",
        show(&o)
    );
    let size: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        size < 1_000_000,
        "the client got the whole announced body: {}",
        show(&o)
    );
    assert!(
        out.contains("ok\nrc2=0"),
        "the next request failed: {}",
        show(&o)
    );
    let recs = audit_lines(&audit);
    assert_eq!(recs.len(), 2, "one audit record per request: {recs:?}");
}

#[test]
fn slow_header_client_is_closed_others_are_served() {
    require_root().unwrap();
    let d = tempdir();
    let origin = Origin::start(d.path().join("aborted"));
    let py = r#"
import socket, sys, threading, time, urllib.request
port = int(sys.argv[1])
head = b"GET /ok HTTP/1.1\r\nHost: fault.test:%d\r\nX-Slow: 0123456789012345678901234567890123456789\r\n\r\n" % port
result = {}
def slow():
    s = socket.create_connection(("fault.test", port))
    s.setblocking(True)
    sent = 0
    for b in head:
        try:
            s.send(bytes([b]))
        except OSError:
            break
        sent += 1
        s.settimeout(1.0)
        try:
            data = s.recv(4096)
            if data == b"":
                break
            # An answer before the header is complete (e.g. 408) also ends it.
            break
        except socket.timeout:
            pass
    result["sent"] = sent
threading.Thread(target=slow, daemon=False).start()
time.sleep(0.5)
ok = 0
for i in range(5):
    with urllib.request.urlopen("http://fault.test:%d/ok?%d" % (port, i), timeout=10) as r:
        if r.status == 200 and r.read() == b"ok":
            ok += 1
    time.sleep(0.5)
for t in threading.enumerate():
    if t is not threading.current_thread():
        t.join()
print("fast_ok=%d slow_sent=%d of %d" % (ok, result["sent"], len(head)))
"#;
    std::fs::write(d.path().join("slow.py"), py).unwrap();
    let script = format!(
        "python3 {} {}",
        d.path().join("slow.py").display(),
        origin.port
    );
    let o = boundary(
        d.path(),
        &flags(&["--log-level", "error", "--idle-timeout", "3s"]),
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("fast_ok="))
        .unwrap_or_else(|| panic!("{}", show(&o)));
    let nums: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(nums[0], 5, "other clients were affected: {}", show(&o));
    assert!(
        nums[1] < nums[2],
        "the one-byte-per-second client was never closed (sent its whole header): {}",
        show(&o)
    );
}

#[test]
fn client_leaving_mid_stream_stops_the_upstream_transfer() {
    require_root().unwrap();
    let d = tempdir();
    let marker = d.path().join("aborted");
    let origin = Origin::start(marker.clone());
    let script = format!(
        "curl -sS http://fault.test:{p}/stream 2>/dev/null | head -c 1000000 > /dev/null\n\
         for i in $(seq 300); do [ -e {m} ] && break; sleep 0.1; done\n\
         [ -e {m} ] && echo UPSTREAM_STOPPED\n\
         curl -sS http://fault.test:{p}/ok; echo; echo rc=$?",
        p = origin.port,
        m = marker.display()
    );
    let o = boundary(d.path(), &flags(&["--log-level", "error"]), &script);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("UPSTREAM_STOPPED"),
        "the origin kept sending after the client left: {}",
        show(&o)
    );
    assert!(origin.stream_aborted.load(Ordering::SeqCst));
    assert!(
        out.contains("ok\nrc=0"),
        "the next request failed: {}",
        show(&o)
    );
}

/// The complete entries of the spool `data` files under `state` (the layout of
/// `boundary_audit::forwarder::spool`, read here independently): (records, first and last
/// sequence number) each, in file order.
fn spool_entries(state: &Path) -> Vec<(usize, i32, i32)> {
    let mut out = Vec::new();
    let Ok(runs) = std::fs::read_dir(state.join("coder_boundary/spool")) else {
        return out;
    };
    for run in runs.flatten() {
        let b = std::fs::read(run.path().join("data")).unwrap_or_default();
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let mut at = 0;
        while at + 20 <= b.len() && at + 20 + word(at) as usize <= b.len() {
            out.push((
                word(at + 8) as usize,
                word(at + 12) as i32,
                word(at + 16) as i32,
            ));
            at += 20 + word(at) as usize;
        }
    }
    out
}

#[test]
fn agent_socket_that_never_reads_does_not_stop_the_proxy_and_every_record_is_spooled() {
    require_root().unwrap();
    let d = tempdir();
    let origin = Origin::start(d.path().join("aborted"));
    let sock = d.path().join("agent.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Accept and hold every connection, never reading.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let n = 3000;
    let script = format!(
        "curl -sS -o /dev/null -w '%{{http_code}}\\n' 'http://fault.test:{p}/ok?[1-{n}]' | sort | uniq -c",
        p = origin.port
    );
    let sock_s = sock.to_string_lossy().into_owned();
    let o = boundary(
        d.path(),
        &flags(&[
            "--log-level",
            "warn",
            "--log-proxy-socket-path",
            &sock_s,
            "--audit-queue-size",
            "16",
            "--audit-shutdown-timeout",
            "1s",
        ]),
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out.trim() == format!("{n} 200"),
        "not every request was answered 200: {}",
        show(&o)
    );
    // A queue of 16 and an agent that never reads: the records go to the spool, none dropped.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("DROPPED"),
        "records were dropped: {}",
        show(&o)
    );
    assert!(
        err.contains("stay in the spool") && err.contains(&format!("records={n}")),
        "the exit summary does not say all {n} records wait in the spool: {}",
        show(&o)
    );
    // Every record is in the spool exactly once, in sequence order, for the next run to send.
    let entries = spool_entries(d.path());
    let mut next = 0;
    for &(records, first, last) in &entries {
        assert_eq!(
            (first, last - first + 1),
            (next, records as i32),
            "spool entries out of order or with gaps: {entries:?}"
        );
        next = last + 1;
    }
    assert_eq!(next, n, "spooled records: {entries:?}");
}

#[test]
fn audit_log_disk_full_is_reported_and_decisions_go_on() {
    require_root().unwrap();
    let d = tempdir();
    let origin = Origin::start(d.path().join("aborted"));
    let full = Tmpfs::mount(&d.path().join("full"), "size=16k");
    let audit = full.0.join("audit.jsonl");
    let n = 300;
    let script = format!(
        "curl -sS -o /dev/null -o /dev/null -w '%{{http_code}}\\n' 'http://fault.test:{p}/ok?[1-{n}]' 'http://fault.test:{p}/denied?[1-{n}]' | sort | uniq -c",
        p = origin.port
    );
    let audit_s = audit.to_string_lossy().into_owned();
    let o = boundary(
        d.path(),
        &flags(&["--log-level", "error", "--audit-log", &audit_s]),
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let counts: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        counts.contains(&format!("{n} 200")) && counts.contains(&format!("{n} 403")),
        "decisions stopped when the audit disk filled: {}",
        show(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("audit log file") && err.contains("No space left on device"),
        "no clear error about the full audit disk: {}",
        show(&o)
    );
    assert!(
        std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0) > 0,
        "nothing was written before the disk filled"
    );
}

/// The CA is made per run and kept in memory (its key is never on disk, where a jail could
/// read it), so a configuration directory boundary cannot write to does not stop a run.
#[test]
fn unwritable_config_directory_does_not_stop_a_run() {
    require_root().unwrap();
    let d = tempdir();
    let ro = Tmpfs::mount(&d.path().join("ro-config"), "ro,size=64k");
    let marker = d.path().join("ran");
    let mut child = Command::new(boundary_binary().unwrap())
        .env("XDG_CONFIG_HOME", &ro.0)
        .env("PATH", PATH)
        .args(flags(&["--log-level", "error"]))
        .arg("--")
        .arg("touch")
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "boundary hung on an unwritable configuration directory"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "boundary did not run: {}", show(&o));
    assert!(marker.exists(), "the command did not run: {}", show(&o));
}
