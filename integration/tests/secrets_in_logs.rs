//! Credentials never reach boundary's output (issue 12 follow-up): through the real binary in
//! nsjail at `--log-level debug` (every crate's debug lines, the most boundary writes), with `--upstream-proxy
//! http://joe:PASSWORD@...` pointing at a recording corporate proxy on host loopback, a jailed
//! curl fetches through it (positive control: the corporate proxy received the credentials)
//! and sends a request whose target carries user info of its own. Neither password, nor the
//! Basic credentials made of the proxy's, appears on stderr, in the state directory's log or in
//! the `--audit-log` file; a bad `--upstream-proxy` URL is refused without showing it either.
//!
//! Needs root (nsjail), `cargo build -p boundary`, python3, curl, openssl.

mod nsjail_common;
use nsjail_common::*;

const PASSWORD: &str = "s3cretPW-upstream";
/// `joe:s3cretPW-upstream` in base64, as sent in `Proxy-Authorization: Basic ...`.
const BASIC: &str = "am9lOnMzY3JldFBXLXVwc3RyZWFt";
const JAILED_PASSWORD: &str = "jailPW-userinfo";

/// A corporate proxy on host loopback: records each CONNECT head, answers 200 and relays to
/// 127.0.0.1 on the requested port.
const CORP_PROXY: &str = r#"
import socket, sys, threading
record = sys.argv[1]
def relay(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(c):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        d = c.recv(1)
        if not d:
            return
        head += d
    with open(record, "ab") as f:
        f.write(head)
    port = int(head.split()[1].rsplit(b":", 1)[1])
    up = socket.create_connection(("127.0.0.1", port))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=relay, args=(up, c), daemon=True).start()
    relay(c, up)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(64)
print("READY", s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn credentials_appear_in_no_log_even_at_debug() {
    use std::io::BufRead;
    require_root().unwrap();
    let fx = Fixture::start();
    let d = fx.dir.path();
    let (script, record) = (d.join("corp.py"), d.join("corp.record"));
    std::fs::write(&script, CORP_PROXY).unwrap();
    let mut corp = std::process::Command::new("python3")
        .arg(&script)
        .arg(&record)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 corporate proxy");
    let mut line = String::new();
    std::io::BufReader::new(corp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let corp_port: u16 = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("corporate proxy said {line:?}"));
    let config = config_home(As::Root);
    let audit = config.path().join("audit.jsonl");
    let mut flags = fx.flags(&["domain=fixture.test"]);
    // The fixture's flags start with `--log-level error`.
    assert_eq!(flags[0], "--log-level");
    flags[1] = "debug".into();
    flags.extend([
        "--jail-type".into(),
        "nsjail".into(),
        "--upstream-proxy".into(),
        format!("http://joe:{PASSWORD}@127.0.0.1:{corp_port}"),
        "--audit-log".into(),
        audit.to_string_lossy().into_owned(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let script = format!(
        "echo \"through=$(curl -sS --max-time 30 https://fixture.test:{https}/allowed.txt)\"\n\
         echo \"userinfo=$(curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}' \
         --request-target 'http://joe:{JAILED_PASSWORD}@fixture.test:{http}/allowed.txt' \
         http://fixture.test:{http}/)\"\n",
        https = fx.https_port,
        http = fx.http_port,
    );
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let _ = corp.kill();
    let _ = corp.wait();
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    // Positive controls: the request went through the corporate proxy with the credentials,
    // the user-info request was refused, and trace logging was on.
    assert!(out.contains(&format!("through={ALLOWED_BODY}")), "{t}");
    assert!(out.contains("userinfo=400"), "{t}");
    let heads = String::from_utf8_lossy(&std::fs::read(&record).unwrap_or_default()).to_string();
    assert!(
        heads.contains(&format!("Proxy-Authorization: Basic {BASIC}")),
        "the corporate proxy got the credentials: {heads}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(stderr.contains("DEBUG"), "debug lines were written: {t}");
    let mut outputs = vec![("stderr", stderr), ("stdout", out.to_string())];
    outputs.push((
        "audit log",
        std::fs::read_to_string(&audit).unwrap_or_default(),
    ));
    for entry in walk(config.path()) {
        if let Ok(text) = std::fs::read(&entry) {
            outputs.push(("state/config file", String::from_utf8_lossy(&text).into()));
        }
    }
    for (name, text) in &outputs {
        for secret in [PASSWORD, BASIC, JAILED_PASSWORD] {
            assert!(
                !text.contains(secret),
                "{secret} appears in {name}:\n{}",
                excerpt(text, secret)
            );
        }
    }
    // A bad URL is refused without showing the password.
    let bad = boundary_cmd(As::Root, config.path(), &[])
        .args([
            "--upstream-proxy",
            &format!("http://joe:{PASSWORD}@127.0.0.1:99999"),
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let bad_err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        bad_err.contains("joe:***@") && !bad_err.contains(PASSWORD),
        "{bad_err}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The text around the first `needle`, for the failure message.
fn excerpt(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(300)
        .map_or(0, |(i, _)| i);
    text[start..].chars().take(700).collect()
}
