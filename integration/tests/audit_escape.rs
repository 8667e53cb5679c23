//! Log spoofing (issue 12 item 8): a jailed process puts C1 controls, line separators and bidi
//! characters raw into request targets (HTTP allows UTF-8 there; C0 and DEL are refused by the
//! HTTP parser before any decision, and the escaping rule's unit tests cover them). Through the
//! real binary in an nsjail, the local log (stderr, `--log-level info`) and the `--audit-log`
//! JSON file must contain no raw instance, and the values must decode back to the exact URL.
//!
//! Needs root (nsjail), `cargo build -p boundary`, python3.

mod nsjail_common;

use boundary_audit::escape::{is_unsafe, unescape_text};
use nsjail_common::*;

/// Every character of the rule that can travel raw in a request target.
const CHARS: &[char] = &[
    '\u{80}', '\u{85}', '\u{9b}', '\u{9f}', '\u{2028}', '\u{2029}', '\u{200E}', '\u{200F}',
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
    '\u{2069}', '\u{061C}',
];

/// The jailed client: raw request lines, one connection each; prints ASCII only.
const CLIENT: &str = r#"
import socket, sys
port = int(sys.argv[1])
for cp in sys.argv[2:]:
    c = chr(int(cp, 16))
    for path in ("/allowed.txt?x=a%sb" % c, "/denied.txt?x=a%sb" % c):
        s = socket.create_connection(("fixture.test", port), timeout=20)
        req = "GET %s HTTP/1.1\r\nHost: fixture.test:%d\r\nConnection: close\r\n\r\n" % (path, port)
        s.sendall(req.encode("utf-8"))
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        print(cp, data.split(b"\r\n", 1)[0].decode("ascii", "replace"))
        s.close()
"#;

fn targets(c: char) -> [String; 2] {
    [
        format!("/allowed.txt?x=a{c}b"),
        format!("/denied.txt?x=a{c}b"),
    ]
}

#[test]
fn control_separator_and_bidi_characters_never_reach_a_log_raw() {
    require_root().unwrap();
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let json = config.path().join("audit.jsonl");
    let script = config.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let mut flags = fx.flags(&["domain=fixture.test path=/allowed.txt"]);
    assert_eq!(flags[0], "--log-level");
    flags[1] = "info".into();
    flags.extend(["--audit-log".into(), json.to_string_lossy().into_owned()]);
    let mut args = vec![
        "python3".to_string(),
        script.to_string_lossy().into_owned(),
        fx.http_port.to_string(),
    ];
    args.extend(CHARS.iter().map(|c| format!("{:x}", *c as u32)));
    let out = boundary_cmd(As::Root, config.path(), &[])
        .args(&flags)
        .arg("--")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Python's http.server answers 400 to U+0085 (it splits lines on it): what matters here
    // is that the proxy let it through.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(" HTTP/1.1 ") && !l.contains(" 403 "))
            .count(),
        CHARS.len(),
        "every allowed request was forwarded\n{all}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" 403 ")).count(),
        CHARS.len(),
        "every denied request was refused\n{all}"
    );

    // The local log: no raw character on any line, and each URL decodes to what was sent.
    let stderr = String::from_utf8(out.stderr.clone()).expect("the log is UTF-8");
    for line in stderr.split('\n') {
        assert!(
            !line.chars().any(is_unsafe),
            "raw character in the local log: {line:?}"
        );
    }
    let logged: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("boundary_request"))
        .filter_map(|l| l.split(" http_url=").nth(1))
        .map(|v| v.split(' ').next().unwrap())
        .map(|v| unescape_text(v).unwrap_or_else(|| panic!("bad escape in {v:?}")))
        .collect();
    // The JSON file: no raw character anywhere, and the decoded values are the URLs sent.
    let file = std::fs::read_to_string(&json).unwrap();
    assert!(
        !file
            .trim_end_matches('\n')
            .split('\n')
            .any(|l| l.chars().any(is_unsafe)),
        "raw character in the JSON audit file:\n{file:?}"
    );
    let from_json: Vec<String> = file
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["http_url"].as_str().unwrap().to_string()
        })
        .collect();
    for c in CHARS {
        for t in targets(*c) {
            let want = format!("http://fixture.test:{}{t}", fx.http_port);
            assert_eq!(
                logged.iter().filter(|u| **u == want).count(),
                1,
                "local log line for {:04x} ({want:?}); logged: {logged:?}\n{all}",
                *c as u32
            );
            assert_eq!(
                from_json.iter().filter(|u| **u == want).count(),
                1,
                "JSON line for {:04x}; file: {from_json:?}",
                *c as u32
            );
        }
    }
}
