//! Which process made each request (issue 16 item 4), through the real binary in both jails,
//! as root and as an unprivileged user: a jailed shell runs `curl`, `python3` (urllib) and
//! `node` (https) against the loopback fixture, one allowed and one denied request each; every
//! record of the `--audit-log` JSON file names the program that sent it: its pid as seen in
//! the jail (the shell prints `$$` and `exec`s the client, so the pid is the client's), its
//! name, its executable (the resolved path of the program on PATH), the first words of its
//! command line, and its parent (`sh`). The local log carries the same fields. In nsjail a
//! connection made by TCP Fast Open (`sendto` with `MSG_FASTOPEN`, no `connect()`) is
//! attributed too.
//!
//! Needs root and `cargo build -p boundary` first; packages: curl, python3, nodejs, openssl,
//! util-linux (runuser).

mod nsjail_common;
use nsjail_common::*;

use std::process::Stdio;

/// Each client in its own `sh -c` that prints its pid and then becomes the client.
const SCRIPT: &str = r#"
set -u
S=https://fixture.test:$HTTPS_PORT
for f in allowed denied; do
sh -c 'echo "curl-$1=$$"; exec curl -u alice:s3cret-pw -sS --max-time 20 -o /dev/null "$2/$1.txt?who=curl"' sh $f "$S"
sh -c 'echo "python3-$1=$$"; exec python3 -c "
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=20).read()
except urllib.error.HTTPError:
    pass
" "$2/$1.txt?who=python3"' sh $f "$S"
sh -c 'echo "node-$1=$$"; exec node -e "$NODE_GET" "$2/$1.txt?who=node"' sh $f "$S"
done
"#;

/// nsjail only (landjail refuses TCP Fast Open): a connection made by `sendto(MSG_FASTOPEN)`,
/// without `connect()`, is attributed too.
const FAST_OPEN: &str = r#"
sh -c 'echo "tfo=$$"; exec python3 "$1" "$2"' sh "$TFO_PY" "$HTTP_PORT"
"#;

/// The Fast Open client: one plain HTTP request sent with the SYN's `sendto`.
const TFO_PY: &str = r#"
import socket, sys
port = int(sys.argv[1])
s = socket.socket()
req = b"GET /allowed.txt?who=tfo HTTP/1.1\r\nHost: fixture.test:%d\r\nConnection: close\r\n\r\n" % port
try:
    s.sendto(req, socket.MSG_FASTOPEN, ("fixture.test", port))
except BlockingIOError:
    # The supervised send is tried without waiting: the SYN is out, the data goes next.
    s.sendall(req)
print("tfo-status=" + s.recv(100).split(b" ")[1].decode())
"#;

/// https.get, through the proxy's CONNECT when a proxy variable names one (landjail), else
/// straight (nsjail redirects it); trusts the CA through NODE_EXTRA_CA_CERTS.
const NODE_GET: &str = r#"
const http = require("http"), https = require("https"), tls = require("tls");
const u = new URL(process.argv[1]);
const done = (r) => { r.resume(); r.on("end", () => console.log("node-status=" + r.statusCode)); };
const p = process.env.HTTPS_PROXY || process.env.https_proxy;
if (!p) {
  https.get(u, done).on("error", (e) => console.log("node-error=" + e));
} else {
  const pu = new URL(p);
  http.request({ host: pu.hostname, port: pu.port, method: "CONNECT", path: u.host })
    .on("connect", (res, socket) => {
      const opts = { createConnection: () => tls.connect({ socket, servername: u.hostname }) };
      https.get(u, opts, done).on("error", (e) => console.log("node-error=" + e));
    })
    .on("error", (e) => console.log("node-error=" + e))
    .end();
}
"#;

/// The resolved path of `program` on PATH, as `/proc/<pid>/exe` names it.
fn exe_of(program: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .env("PATH", PATH)
        .output()
        .unwrap();
    let path = String::from_utf8(out.stdout).unwrap();
    std::fs::canonicalize(path.trim())
        .unwrap_or_else(|e| panic!("{program} is needed on PATH: {e}"))
        .display()
        .to_string()
}

fn attributes(who: As, jail: &str, jail_flags: &[String]) {
    let fx = Fixture::start();
    let config = config_home(who);
    let json = config.path().join("audit.jsonl");
    let mut flags = fx.flags(&["domain=fixture.test path=/allowed.txt"]);
    flags[1] = "info".into();
    flags.extend(jail_flags.iter().cloned());
    flags.extend(["--audit-log".into(), json.to_string_lossy().into_owned()]);
    let fast_open = jail == "nsjail";
    let tfo_py = config.path().join("tfo.py");
    std::fs::write(&tfo_py, TFO_PY).unwrap();
    let script = format!(
        "HTTPS_PORT={} HTTP_PORT={} TFO_PY={}\nNODE_GET=$(cat <<'JS'\n{NODE_GET}\nJS\n)\nexport NODE_GET\n{SCRIPT}\n{}",
        fx.https_port,
        fx.http_port,
        tfo_py.display(),
        if fast_open { FAST_OPEN } else { "" }
    );
    let out = boundary_cmd(who, config.path(), &[])
        .args(&flags)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = format!("{jail} as {who:?}: {}", text(&out));
    assert!(out.status.success(), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("node-error"), "{t}");
    let file = std::fs::read_to_string(&json).unwrap();
    let records: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        6 + usize::from(fast_open),
        "one record per request\n{file}\n{t}"
    );
    if fast_open {
        assert!(stdout.contains("tfo-status=200"), "{t}");
        let pid: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tfo="))
            .unwrap()
            .parse()
            .unwrap();
        let url = format!("http://fixture.test:{}/allowed.txt?who=tfo", fx.http_port);
        let r = records
            .iter()
            .find(|r| r["http_url"] == url.as_str())
            .unwrap_or_else(|| panic!("no record for {url}\n{file}\n{t}"));
        assert_eq!(r["process_name"], "python3", "{r}\n{t}");
        assert_eq!(r["process_pid"], pid, "{r}\n{t}");
    }
    for program in ["curl", "python3", "node"] {
        let exe = exe_of(program);
        for (file_name, decision) in [("allowed", "allow"), ("denied", "deny")] {
            let pid: u64 = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{program}-{file_name}=")))
                .unwrap_or_else(|| panic!("no pid line for {program} {file_name}\n{t}"))
                .parse()
                .unwrap();
            let url = format!(
                "https://fixture.test:{}/{file_name}.txt?who={program}",
                fx.https_port
            );
            let r = records
                .iter()
                .find(|r| r["http_url"] == url.as_str())
                .unwrap_or_else(|| panic!("no record for {url}\n{file}\n{t}"));
            let ctx = format!("{program} {file_name} in {jail} as {who:?}: {r}\n{t}");
            assert_eq!(r["decision"], decision, "{ctx}");
            assert_eq!(r["process_name"], program, "{ctx}");
            assert_eq!(r["process_exe"], exe.as_str(), "{ctx}");
            assert_eq!(r["process_pid"], pid, "the pid as seen in the jail: {ctx}");
            assert_eq!(r["process_parent_name"], "sh", "{ctx}");
            let args = r["process_args"].as_str().unwrap();
            assert!(args.starts_with(&format!("{program} ")), "{ctx}");
            assert!(args.len() <= 128, "{ctx}");
        }
    }
    // The local log names them too (quoted, the values are logfmt-safe).
    let stderr = String::from_utf8_lossy(&out.stderr);
    // curl's `-u user:password` is in its first words, and in no record.
    for (what, text) in [("JSON file", file.as_str()), ("local log", &*stderr)] {
        assert!(
            !text.contains("s3cret-pw"),
            "a password in the {what}:\n{text}"
        );
    }
    assert!(stderr.contains("process_args=\"curl -u ***\""), "{t}");
    for program in ["curl", "python3", "node"] {
        let exe = exe_of(program);
        assert!(
            stderr.lines().any(|l| l.contains("boundary_request")
                && l.contains(&format!("process_name=\"{program}\""))
                && l.contains(&format!("process_exe=\"{exe}\""))
                && l.contains("process_parent_name=\"sh\"")),
            "no local log line names {program} in {jail} as {who:?}\n{t}"
        );
    }
}

#[test]
fn each_record_names_the_program_that_made_it_as_root() {
    require_root().unwrap();
    attributes(As::Root, "nsjail", &["--jail-type".into(), "nsjail".into()]);
    attributes(As::Root, "landjail", &landjail_flags());
    // nsjail built without a user namespace (hosts that forbid them).
    attributes(
        As::Root,
        "nsjail",
        &[
            "--jail-type".into(),
            "nsjail".into(),
            "--no-user-namespace".into(),
        ],
    );
}

#[test]
fn each_record_names_the_program_that_made_it_as_an_unprivileged_user() {
    require_root().unwrap();
    attributes(As::User, "nsjail", &["--jail-type".into(), "nsjail".into()]);
    attributes(As::User, "landjail", &landjail_flags());
}
