//! Explicit and transparent behave alike (issue 17 item 1), through the real binary in
//! landjail (an explicit-proxy client: curl with HTTPS_PROXY): a CONNECT to a host no rule
//! allows is accepted and intercepted, so curl gets the 403 page for its request (exit 22 with
//! `-f`, not 56 for a refused CONNECT), the audit log has the request's real method and URL,
//! and the first rule the page suggests, fed to `boundary check`, allows that request. A
//! client that does not speak TLS after its CONNECT to a host no rule allows is audited once,
//! as the CONNECT, when boundary closes the tunnel after the handshake timeout (10 s; it waited
//! for the idle timeout, 300 s, before). Before, the CONNECT itself got the 403 (curl exit 56)
//! and was audited as `CONNECT https://host:443`, and the page suggested
//! `method=GET ... path=/`.
//!
//! Needs `cargo build -p boundary`, curl, python3, openssl; landjail needs Linux 6.7+.

mod nsjail_common;
use nsjail_common::*;

/// The non-TLS client: a CONNECT through the proxy named by HTTPS_PROXY, then SSH's greeting.
const NOT_TLS: &str = r#"
import os, socket
hostport = os.environ["HTTPS_PROXY"].split("//", 1)[1].rstrip("/")
host, port = hostport.rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=60)
s.sendall(b"CONNECT ssh.denied.test:22 HTTP/1.1\r\nHost: ssh.denied.test:22\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    d = s.recv(1)
    if not d:
        break
    head += d
print("connect", head.split(b"\r\n")[0].decode())
s.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
rest, end = b"", "closed"
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        rest += d
except OSError as e:
    end = "error %s" % e
print("after", end, rest.split(b"\r\n")[0].decode(errors="replace"))
"#;

#[test]
fn a_connect_to_an_unruled_host_is_intercepted_and_each_request_decided() {
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let audit = config.path().join("audit.jsonl");
    let client = config.path().join("not_tls.py");
    std::fs::write(&client, NOT_TLS).unwrap();
    let mut flags = fx.flags(&["domain=fixture.test"]);
    flags.extend(landjail_flags());
    flags.extend(["--audit-log".into(), audit.to_string_lossy().into_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let url = format!(
        "https://api.denied.test:{}/v1/messages?beta=true",
        fx.https_port
    );
    let script = format!(
        "curl -sS -X POST -d '{{}}' '{url}'; echo\n\
         curl -sS -f -o /dev/null -X POST -d '{{}}' '{url}'; echo \"exit=$?\"\n\
         python3 {}\n",
        client.display()
    );
    let o = jailed_sh(As::Root, config.path(), &[], &flags, &script);
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(BLOCKED_TITLE), "the 403 page: {t}");
    assert!(out.contains("Method: POST"), "{t}");
    assert!(
        out.contains("exit=22"),
        "curl -f reports the 403, not a CONNECT failure: {t}"
    );
    assert!(
        out.contains("connect HTTP/1.1 200"),
        "the CONNECT is accepted: {t}"
    );
    // Boundary closes it after the handshake timeout, not the idle timeout.
    assert!(
        out.contains("after closed"),
        "the proxy closed the tunnel: {t}"
    );
    assert!(
        !out.contains("SSH-"),
        "nothing answers as the SSH server: {t}"
    );

    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<serde_json::Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let with = |needle: &str| -> Vec<&serde_json::Value> {
        records
            .iter()
            .filter(|r| r["http_url"].as_str().is_some_and(|u| u.contains(needle)))
            .collect()
    };
    let api = with("api.denied.test");
    assert_eq!(
        api.len(),
        2,
        "both requests audited as themselves: {audit_text}"
    );
    for r in &api {
        assert_eq!(r["http_method"], "POST", "{audit_text}");
        assert_eq!(r["http_url"], url.as_str(), "{audit_text}");
        assert_eq!(r["decision"], "deny", "{audit_text}");
    }
    let ssh = with("ssh.denied.test");
    assert_eq!(
        ssh.len(),
        1,
        "the non-TLS tunnel is audited once: {audit_text}"
    );
    assert_eq!(ssh[0]["http_method"], "CONNECT", "{audit_text}");
    assert_eq!(
        ssh[0]["http_url"], "https://ssh.denied.test:22",
        "{audit_text}"
    );
    assert_eq!(ssh[0]["decision"], "deny", "{audit_text}");

    // The page's first suggestion allows the blocked request.
    let first = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("--allow '"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no suggested rule on the page: {t}"));
    let check = boundary_cmd(As::Root, config.path(), &[])
        .args(["check", "--method", "POST", "--allow", first, &url])
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "`boundary check` with the first suggestion {first:?}: {}",
        text(&check)
    );
}

/// The first line of the 403 page.
const BLOCKED_TITLE: &str = "Request Blocked by Boundary";
