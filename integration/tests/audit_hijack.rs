//! Audit channel hijack (issue 12 item 6), through the real binary in both jails: a jailed
//! process replaces the agent's socket path with a listener of its own (landjail: unlink and
//! listen; nsjail, where the path is hidden: rename the writable parent directory and listen
//! at the same path). boundary connected to the real agent before the target started, so the
//! records made before the agent goes away reach it; when the real agent dies, boundary's
//! reconnections land on the jail's listener, whose peer check refuses it (a descendant of
//! boundary, or in the jail's pid namespace); when the agent is back, it gets every record and
//! the jail's listener has received nothing. The jailed process tries to connect to the agent
//! socket and send a forged "allowed" record twice: at the start, and after the real agent
//! re-created its socket (a new file the jail may see at the old path); the jails' Unix socket
//! policy must refuse both. The same forger outside the jail is the positive control.
//!
//! Needs root, `cargo build -p boundary`, curl, python3.

mod nsjail_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundary_integration::coder::logfmt;
use boundary_integration::coder::peers::{LogProxyProcess, SinkProcess};
use nsjail_common::*;

const SINK: &str = env!("CARGO_BIN_EXE_boundary-coderd-sink");
const PROXY: &str = env!("CARGO_BIN_EXE_boundary-agent-log-proxy");

/// The hijacker: takes the socket path, listens, says how, reports every byte it receives,
/// and stops when the `stop` file appears.
const HIJACK: &str = r#"
import os, socket, sys, time
path, stop = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
how, errors = None, []
try:
    os.unlink(path); s.bind(path); how = "unlink"
except OSError as e:
    errors.append("unlink: %s" % e)
if how is None:
    d = os.path.dirname(path)
    try:
        os.rename(d, d + ".moved"); os.mkdir(d); s.bind(path); how = "rename"
    except OSError as e:
        errors.append("rename: %s" % e)
print("hijack:", how or "none", "; ".join(errors), flush=True)
if how is None:
    sys.exit(0)
s.listen(16); s.settimeout(0.1)
conns, total = [], 0
while not os.path.exists(stop):
    try:
        c, _ = s.accept(); c.setblocking(False); conns.append(c)
    except socket.timeout:
        pass
    for c in conns:
        try:
            b = c.recv(65536)
            if b:
                total += len(b)
                print("listener got", len(b), flush=True)
        except BlockingIOError:
            pass
        except OSError:
            pass
print("listener bytes", total, flush=True)
"#;

/// The forger: connects to the agent socket and sends a prepared frame; says what happened.
const FORGE: &str = r#"
import socket, sys
path, frame = sys.argv[1], open(sys.argv[2], "rb").read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path); s.sendall(frame); s.close(); print("forge: sent", flush=True)
except OSError as e:
    print("forge: refused", e, flush=True)
"#;

const FORGED_URL: &str = "https://forged.example/allowed-by-nobody";

/// A tag-1 frame with one "allowed" record boundary never decided.
fn forged_frame() -> Vec<u8> {
    use boundary_proto::pb::{boundary_log, BoundaryLog, ReportBoundaryLogsRequest};
    let req = ReportBoundaryLogsRequest {
        session_id: "0b8c2d4e-1111-4a5b-9c3d-222233334444".into(),
        confined_process_name: "forger".into(),
        logs: vec![BoundaryLog {
            allowed: true,
            time: Some(prost_types::Timestamp {
                seconds: 1_768_522_299,
                nanos: 0,
            }),
            resource: Some(boundary_log::Resource::HttpRequest(
                boundary_log::HttpRequest {
                    method: "GET".into(),
                    url: FORGED_URL.into(),
                    matched_rule: "domain=forged.example".into(),
                    truncated: false,
                },
            )),
            sequence_number: 999,
            ..Default::default()
        }],
        ..Default::default()
    };
    boundary_proto::frame::encode_message(boundary_proto::frame::Tag::V1, &req)
        .unwrap()
        .to_vec()
}

fn run_hijack(jail: &str, jail_flags: &[String]) {
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let sockdir = config.path().join("agent");
    std::fs::create_dir(&sockdir).unwrap();
    let socket = sockdir.join("agent.sock");
    let hijack = config.path().join("hijack.py");
    std::fs::write(&hijack, HIJACK).unwrap();
    let go = |n: &str| config.path().join(n);
    let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
    let agent =
        |p: &PathBuf| LogProxyProcess::spawn(Path::new(PROXY), p, &sink.addr, false, 100).unwrap();
    let mut first = agent(&socket);
    // Positive control: outside the jail the forger reaches the agent and coderd prints it.
    let forge = config.path().join("forge.py");
    std::fs::write(&forge, FORGE).unwrap();
    let frame = config.path().join("forged.frame");
    std::fs::write(&frame, forged_frame()).unwrap();
    let control = std::process::Command::new("python3")
        .arg(&forge)
        .arg(&socket)
        .arg(&frame)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&control.stdout).trim(),
        "forge: sent"
    );
    let forged_lines = |lines: &[String]| lines.iter().filter(|l| l.contains(FORGED_URL)).count();
    assert_eq!(
        forged_lines(&sink.wait_for_lines(1, Duration::from_secs(30))),
        1,
        "control"
    );
    let wait = |f: PathBuf| {
        format!(
            "i=0; while [ ! -e {f} ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done",
            f = f.display()
        )
    };
    let script = format!(
        "c() {{ curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}\\n' http://fixture.test:{port}$1; }}\n\
         c /allowed.txt; c /denied.txt\n\
         python3 {forge} {socket} {frame}\n\
         python3 {hijack} {socket} {stop} &\n\
         {w1}\n c /allowed.txt; c /denied.txt\n\
         {w2}\n python3 {forge} {socket} {frame}\n c /allowed.txt; c /denied.txt\n\
         touch {stop} 2>/dev/null; wait\n",
        port = fx.http_port,
        hijack = hijack.display(),
        forge = forge.display(),
        frame = frame.display(),
        socket = socket.display(),
        stop = go("go2").display(),
        w1 = wait(go("go1")),
        w2 = wait(go("go2")),
    );
    let mut flags = fx.flags(&["domain=fixture.test path=/allowed.txt"]);
    // Both sets carry --log-level; keep the fixture's one.
    let mut rest = jail_flags.iter();
    while let Some(f) = rest.next() {
        if f == "--log-level" {
            rest.next();
        } else {
            flags.push(f.clone());
        }
    }
    flags.extend(
        [
            "--log-proxy-socket-path",
            &socket.to_string_lossy(),
            "--audit-flush-interval",
            "100ms",
        ]
        .map(String::from),
    );
    // fx.flags sets --log-level error; the refusal is an error line.
    let mut child = boundary_cmd(As::Root, config.path(), &[])
        .args(&flags)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let err_text = Arc::new(Mutex::new(String::new()));
    let (o, e) = (out_lines.clone(), err_text.clone());
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            o.lock().unwrap().push(l);
        }
    });
    let t2 = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut g = e.lock().unwrap();
            g.push_str(&l);
            g.push('\n');
        }
    });
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{jail}: timed out waiting for {what}\nstdout: {:?}\nstderr:\n{}",
                out_lines.lock().unwrap(),
                err_text.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("the hijack", &|| {
        out_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("hijack:"))
    });
    let how = out_lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("hijack:"))
        .cloned()
        .unwrap();
    eprintln!("{jail}: {how}");
    let taken = !how.starts_with("hijack: none");
    // The records made so far reached the real agent over the early connection.
    assert_eq!(
        sink.wait_for_lines(3, Duration::from_secs(30)).len(),
        3,
        "{jail}"
    );
    first.kill();
    std::fs::write(go("go1"), "").unwrap();
    if taken {
        // boundary reconnects to the path, now the jail's listener: refused, or (without the
        // peer check) the listener receives records.
        until("a reconnection to the jail's listener", &|| {
            err_text.lock().unwrap().contains("is refused")
                || out_lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.starts_with("listener got"))
        });
    } else {
        eprintln!("NOTE {jail}: the jail could not take the socket path; checking delivery only");
    }
    // The real agent comes back at the same path.
    let _ = std::fs::remove_file(&socket);
    std::fs::create_dir_all(&sockdir).unwrap();
    let _second = agent(&socket);
    std::fs::write(go("go2"), "").unwrap();
    let status = child.wait().unwrap();
    t1.join().unwrap();
    t2.join().unwrap();
    let out = out_lines.lock().unwrap().clone();
    let err = err_text.lock().unwrap().clone();
    let all = format!("{jail}: status {status:?}\nstdout: {out:#?}\nstderr:\n{err}");
    assert!(status.success(), "{all}");
    if taken {
        assert!(
            out.iter().any(|l| l == "listener bytes 0"),
            "the jail's listener received nothing\n{all}"
        );
        assert!(err.contains("is refused"), "{all}");
    }
    let forges: Vec<&String> = out.iter().filter(|l| l.starts_with("forge:")).collect();
    assert!(
        forges.len() == 2 && forges.iter().all(|l| l.starts_with("forge: refused")),
        "the jail cannot connect to the agent socket, first or re-created: {forges:?}\n{all}"
    );
    let lines = sink.wait_for_lines(7, Duration::from_secs(60));
    assert_eq!(
        forged_lines(&lines),
        1,
        "only the control's forged record\n{all}"
    );
    let mut seqs: Vec<usize> = lines
        .iter()
        .filter(|l| !l.contains(FORGED_URL))
        .map(|l| {
            let h = logfmt::parse_human(l).unwrap();
            h.get("sequence_number").unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..6).collect::<Vec<_>>(),
        "the real agent got every record\n{all}"
    );
}

#[test]
fn jailed_listener_on_the_agent_socket_path_gets_nothing_in_landjail() {
    require_root().unwrap();
    let [_, (name, flags)] = both_jails();
    assert_eq!(name, "landjail");
    run_hijack(name, &flags);
}

#[test]
fn jailed_listener_on_the_agent_socket_path_gets_nothing_in_nsjail() {
    require_root().unwrap();
    let [(name, flags), _] = both_jails();
    assert_eq!(name, "nsjail");
    run_hijack(name, &flags);
}
