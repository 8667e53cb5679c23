//! End to end: `boundary` jails a shell whose curl makes allowed and denied requests over
//! HTTP/1.1, HTTP/2 and a CONNECT tunnel; the audit records go through the agent socket to
//! `boundary-agent-log-proxy`, over DRPC to `boundary-coderd-sink`, whose lines are parsed with
//! a logfmt parser and checked: exactly one line per request, every §7 field plus trace and
//! span, sequence numbers 0..n-1 each once, `matched_rule` only on allows, and after them the
//! process that made each request (curl, its parent the shell). Variants: the agent
//! log proxy killed and restarted mid-run, a v1-only agent, the socket created 2 s after
//! boundary started, the target exiting non-zero right after its last request.
//!
//! Needs root (network namespaces), `cargo build -p boundary`, curl, python3, openssl.

mod nsjail_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use boundary_audit::fields::PROCESS_FIELDS;
use boundary_integration::coder::logfmt::{self, HumanLine};
use boundary_integration::coder::peers::{LogProxyProcess, SinkProcess};
use nsjail_common::*;

const SINK: &str = env!("CARGO_BIN_EXE_boundary-coderd-sink");
const PROXY: &str = env!("CARGO_BIN_EXE_boundary-agent-log-proxy");
const WAIT: Duration = Duration::from_secs(60);

const WORKSPACE_ID: &str = "f2bd4e9f-7e27-49fc-961e-be4d1c2aa987";
const TEMPLATE_ID: &str = "0b8c2d4e-1111-4a5b-9c3d-222233334444";
const TEMPLATE_VERSION_ID: &str = "7a6b5c4d-5555-4e6f-8a9b-666677778888";

/// The jailed requests: (label, curl arguments after the common ones). Each prints one
/// status code per URL. Allowed: `/allowed.txt`; denied: `/denied.txt`.
const PART_ONE: &str = r#"
c() { curl -sS --max-time 20 -w '%{http_code}\n' "$@"; }
echo "h1-tls: $(c --http1.1 -o /dev/null $S/allowed.txt) $(c --http1.1 -o /dev/null $S/denied.txt)"
echo "h1-plain: $(c -o /dev/null $H/allowed.txt) $(c -o /dev/null $H/denied.txt)"
echo "h2: $(c --http2 -o /dev/null -o /dev/null $S/allowed.txt $S/denied.txt | tr '\n' ' ')"
"#;
const PART_TWO: &str = r#"
echo "tunnel: $(c --http1.1 -p -x http://fixture.test:$HTTP_PORT -o /dev/null -o /dev/null -o /dev/null $S/allowed.txt $S/denied.txt $S/allowed.txt?again=1 | tr '\n' ' ')"
echo "h1-post: $(c --http1.1 -o /dev/null -d x=1 $S/denied.txt)"
"#;

/// Allowed and denied requests the script makes: PART_ONE 3 + 3, PART_TWO 2 + 2.
const ALLOWED: usize = 5;
const DENIED: usize = 5;

struct Run {
    _fx: Fixture,
    config: tempfile::TempDir,
    socket: PathBuf,
    sink: SinkProcess,
}

impl Run {
    fn new() -> Run {
        require_root().unwrap();
        let fx = Fixture::start();
        let config = config_home(As::Root);
        let socket = config.path().join("agent-audit.sock");
        let sink = SinkProcess::spawn(Path::new(SINK), false).unwrap();
        Run {
            _fx: fx,
            config,
            socket,
            sink,
        }
    }

    fn proxy(&self, v1_only: bool) -> LogProxyProcess {
        LogProxyProcess::spawn(
            Path::new(PROXY),
            &self.socket,
            &self.sink.addr,
            v1_only,
            100,
        )
        .unwrap()
    }

    /// Starts boundary on `script` (PART_ONE, `middle`, PART_TWO, `tail`).
    fn boundary(&self, middle: &str, tail: &str) -> Child {
        let fx = &self._fx;
        let script = format!(
            "set -u\nHTTPS_PORT={} HTTP_PORT={}\nS=https://fixture.test:$HTTPS_PORT\n\
             H=http://fixture.test:$HTTP_PORT\n{PART_ONE}\n{middle}\n{PART_TWO}\n{tail}\n",
            fx.https_port, fx.http_port
        );
        let mut flags = fx.flags(&["domain=fixture.test path=/allowed.txt"]);
        flags.extend(
            [
                "--log-proxy-socket-path",
                &self.socket.to_string_lossy(),
                "--audit-flush-interval",
                "200ms",
                "--workspace-id",
                WORKSPACE_ID,
                "--workspace-name",
                "some-task-c88d",
                "--workspace-owner",
                "joe",
                "--template-id",
                TEMPLATE_ID,
                "--template-version-id",
                TEMPLATE_VERSION_ID,
                "--agent-name",
                "dev",
            ]
            .map(String::from),
        );
        boundary_cmd(As::Root, self.config.path(), &[])
            .args(&flags)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Waits for boundary and returns (exit code, stdout+stderr text).
fn finish(child: Child) -> (Option<i32>, String, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        text(&o),
    )
}

/// The script's own view: every status code it printed, in order.
fn statuses(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .flat_map(|(_, codes)| {
            codes
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks the sink's lines: one per request, all fields, dense sequence numbers.
fn check(lines: &[String], out: &str) {
    let parsed: Vec<HumanLine> = lines
        .iter()
        .map(|l| logfmt::parse_human(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}\n{out}")))
        .collect();
    assert_eq!(
        parsed.len(),
        ALLOWED + DENIED,
        "one line per request\nlines:\n{}\n{out}",
        lines.join("\n")
    );
    let mut by_seq = BTreeMap::new();
    let session = parsed[0].get("session_id").unwrap().to_string();
    uuid::Uuid::parse_str(&session).expect("session_id is a UUID");
    let (mut allows, mut denies) = (0, 0);
    for l in &parsed {
        assert_eq!(
            (l.level.as_str(), l.logger.as_str(), l.message.as_str()),
            ("info", "coderd.agentrpc", "boundary_request")
        );
        let allowed = match l.get("decision") {
            Some("allow") => true,
            Some("deny") => false,
            other => panic!("decision {other:?}"),
        };
        // coderd's fields in its order, then our extension: the process that made the request
        // and the policy generation that decided it.
        let want: Vec<&str> = boundary_integration::coder::logfmt::SECTION7_FIELDS
            .iter()
            .copied()
            .filter(|k| allowed || *k != "matched_rule")
            .chain(PROCESS_FIELDS)
            .chain(["policy_generation"])
            .collect();
        assert_eq!(l.keys(), want, "fields of {l:?}");
        assert_eq!(l.get("policy_generation"), Some("1"), "{l:?}");
        assert_eq!(l.get("process_name"), Some("curl"), "{l:?}");
        assert_eq!(l.get("process_parent_name"), Some("sh"), "{l:?}");
        assert!(
            l.get("process_args").unwrap().starts_with("curl -sS"),
            "{l:?}"
        );
        let pid: u32 = l.get("process_pid").unwrap().parse().unwrap();
        assert!(pid > 1, "a pid inside the jail: {l:?}");
        assert_eq!(l.get("owner"), Some("joe"));
        assert_eq!(l.get("workspace_name"), Some("some-task-c88d"));
        assert_eq!(l.get("agent_name"), Some("dev"));
        assert_eq!(l.get("workspace_id"), Some(WORKSPACE_ID));
        assert_eq!(l.get("template_id"), Some(TEMPLATE_ID));
        assert_eq!(l.get("template_version_id"), Some(TEMPLATE_VERSION_ID));
        assert_eq!(l.get("session_id"), Some(session.as_str()));
        let url = l.get("http_url").unwrap();
        if allowed {
            allows += 1;
            assert!(url.contains("/allowed.txt"), "{url}");
            assert_eq!(
                l.get("matched_rule"),
                Some("domain=fixture.test path=/allowed.txt")
            );
        } else {
            denies += 1;
            assert!(url.contains("/denied.txt"), "{url}");
        }
        assert!(
            url.starts_with("https://fixture.test:") || url.starts_with("http://fixture.test:"),
            "{url}"
        );
        chrono::DateTime::parse_from_rfc3339(l.get("event_time").unwrap())
            .expect("event_time is RFC 3339");
        assert!(l.get("event_time").unwrap().ends_with('Z'));
        let trace = l.get("trace").unwrap();
        let span = l.get("span").unwrap();
        assert!(
            trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
            "trace {trace}"
        );
        assert!(
            span.len() == 16 && span.bytes().all(|b| b.is_ascii_hexdigit()),
            "span {span}"
        );
        uuid::Uuid::parse_str(l.get("request_id").unwrap()).expect("request_id");
        let seq: usize = l.get("sequence_number").unwrap().parse().unwrap();
        assert!(
            by_seq.insert(seq, l.clone()).is_none(),
            "sequence number {seq} twice"
        );
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (0..ALLOWED + DENIED).collect::<Vec<_>>()
    );
    assert_eq!((allows, denies), (ALLOWED, DENIED));
    let methods: Vec<&str> = parsed.iter().filter_map(|l| l.get("http_method")).collect();
    assert!(methods.contains(&"POST"), "{methods:?}");
}

fn script_ok(stdout: &str, all: &str) {
    let st = statuses(stdout);
    assert_eq!(
        st.len(),
        ALLOWED + DENIED,
        "the script saw every response\n{all}"
    );
    assert_eq!(st.iter().filter(|s| *s == "200").count(), ALLOWED, "{all}");
    assert_eq!(st.iter().filter(|s| *s == "403").count(), DENIED, "{all}");
}

#[test]
fn every_request_reaches_coderd_once_with_every_field() {
    let run = Run::new();
    let _p = run.proxy(false);
    let (code, stdout, all) = finish(run.boundary("", ""));
    assert_eq!(code, Some(0), "{all}");
    script_ok(&stdout, &all);
    check(&run.sink.wait_for_lines(ALLOWED + DENIED, WAIT), &all);
}

#[test]
fn older_agent_v1_only_loses_nothing() {
    let run = Run::new();
    let p = run.proxy(true);
    let (code, stdout, all) = finish(run.boundary("", ""));
    assert_eq!(code, Some(0), "{all}");
    script_ok(&stdout, &all);
    check(&run.sink.wait_for_lines(ALLOWED + DENIED, WAIT), &all);
    assert!(
        p.stderr_lines().iter().any(|l| l.contains("v1-only")),
        "the agent must have seen (and refused) a tag-2 frame"
    );
}

#[test]
fn target_exiting_non_zero_right_after_its_last_request_loses_nothing() {
    let run = Run::new();
    let _p = run.proxy(false);
    let (code, stdout, all) = finish(run.boundary("", "exit 7"));
    assert_eq!(
        code,
        Some(7),
        "boundary exits with the target's status\n{all}"
    );
    script_ok(&stdout, &all);
    check(&run.sink.wait_for_lines(ALLOWED + DENIED, WAIT), &all);
}

#[test]
fn socket_created_two_seconds_after_boundary_started_is_used() {
    let run = Run::new();
    // The target outlives the socket's appearance, as an agent session does.
    let child = run.boundary("", "sleep 4");
    std::thread::sleep(Duration::from_secs(2));
    let _p = run.proxy(false);
    let (code, stdout, all) = finish(child);
    assert_eq!(code, Some(0), "{all}");
    script_ok(&stdout, &all);
    check(&run.sink.wait_for_lines(ALLOWED + DENIED, WAIT), &all);
}

#[test]
fn agent_log_proxy_killed_and_restarted_mid_run_loses_nothing() {
    let run = Run::new();
    let mut p = run.proxy(false);
    let go = run.config.path().join("go");
    // Between the parts the target waits for the test's go-ahead (a file it can see).
    let middle = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
        go = go.display()
    );
    let child = run.boundary(&middle, "");
    let first = run.sink.wait_for_lines(6, WAIT);
    assert_eq!(first.len(), 6, "part one reached coderd before the kill");
    p.kill();
    std::fs::write(&go, "").unwrap();
    // Part two is decided while no agent listens; the agent comes back a moment later.
    std::thread::sleep(Duration::from_millis(1500));
    let _p2 = run.proxy(false);
    let (code, stdout, all) = finish(child);
    assert_eq!(code, Some(0), "{all}");
    script_ok(&stdout, &all);
    check(&run.sink.wait_for_lines(ALLOWED + DENIED, WAIT), &all);
}
