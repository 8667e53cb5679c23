//! The real agent CLIs in both jails, as root and as an unprivileged user (issue 17 items 7
//! and 8): the pinned Claude Code from the npm registry (installed by `scripts/test.sh
//! --prereqs-only` under `/opt/boundary-agents`) answers a prompt from a mock API that streams
//! (server-sent events) a tool call fetching an allowed and a denied URL; the CLI's next
//! request carries the tool's output, which must hold `ok` and the denial. Boundary runs with
//! the CLI's built-in preset (`--preset claude-code`, `--preset codex`), so the preset is what
//! is proven sufficient; a test checks that it equals the allowlist docs/policies.md gives for
//! the CLI (read from the page), and the audit's matched rules are checked against it. The
//! `--audit-log` must hold exactly one record per request the mock saw plus the one denial.
//! Codex (`codex exec`) does the same over the Responses WebSocket and over HTTP with SSE;
//! interactive Claude Code runs in a tmux pane (renders, takes the prompt, Ctrl-C exits 0, no
//! boundary log line on the screen).
//! Issue 17 item 4: SIGTERM to boundary while Claude's Bash tool runs a detached and a
//! foreground process leaves no process of the jail behind; so does SIGTERM to boundary
//! under an interactive Codex that has just run its tool.
//!
//! The mock (`integration/agents/mock_api.py`) listens on a loopback address of its own on
//! port 443 and boundary maps the real API names there with `--resolve`, trusting the mock's CA
//! with `--upstream-ca-file`: the CLIs run unmodified and nothing reaches the internet.
//!
//! Needs root, python3, openssl, curl, tmux and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use nix::sys::signal::Signal;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where `scripts/test.sh --prereqs-only` installs the pinned CLIs.
const AGENTS_PREFIX: &str = "/opt/boundary-agents";
/// The tool call the mock asks for: one allowed and one denied fetch.
const TOOL_COMMAND: &str = "curl -sS https://allowed.test/ok; curl -sS https://denied.test/x";
/// What the mock answers once it has the tool's output.
const FINAL_ANSWER: &str = "MOCK-ANSWER-DONE";
/// The extra rule the tool's fetch needs on top of the documented allowlist.
const TOOL_RULE: &str = "domain=allowed.test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The installed CLI `name`; fails loudly when the prerequisites were not installed.
fn agent_bin(name: &str) -> PathBuf {
    let bin = Path::new(AGENTS_PREFIX).join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: the agent CLIs are installed by `scripts/test.sh --prereqs-only` (as root)",
        bin.display()
    );
    bin
}

/// The rules docs/policies.md gives for `agent`: the ```` ```text ```` block after the line
/// `<!-- allowlist: AGENT -->`, one rule a line.
fn doc_allowlist(agent: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/policies.md")).unwrap();
    let marker = format!("<!-- allowlist: {agent} -->");
    let rest = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/policies.md has no {marker}"))
        .1;
    let block = rest
        .split_once("```text\n")
        .and_then(|(_, b)| b.split_once("```"))
        .unwrap_or_else(|| panic!("no ```text block after {marker}"))
        .0;
    let rules: Vec<String> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert!(!rules.is_empty(), "empty allowlist after {marker}");
    rules
}

/// The flags the suite runs `agent` with: its built-in preset, and with `tool` the rule the
/// tool's fetch needs on top.
fn policy_flags(agent: &str, tool: bool) -> Vec<String> {
    let mut flags = vec!["--preset".to_string(), agent.to_string()];
    if tool {
        flags.extend(["--allow".to_string(), TOOL_RULE.to_string()]);
    }
    flags
}

/// The agent presets are exactly the allowlists docs/policies.md gives (which the tests below
/// prove sufficient by running the CLIs with the presets): docs, presets and CI cannot drift.
#[test]
fn the_agent_presets_are_the_documented_allowlists() {
    for agent in ["claude-code", "codex"] {
        let out = Command::new(boundary_binary().unwrap())
            .args(["presets", "--json", agent])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boundary presets {agent}: {}",
            text(&out)
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rules: Vec<String> = list[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rules,
            doc_allowlist(agent),
            "the {agent} preset (agent-plugin/presets/{agent}.yaml) differs from the allowlist \
             docs/policies.md gives for it: change both (and run this suite)"
        );
    }
}

/// The mock APIs (integration/agents/mock_api.py) for `names`, on a loopback address of this
/// mock's own, port 443.
struct Mock {
    dir: tempfile::TempDir,
    addr: String,
    names: Vec<String>,
    child: Child,
}

impl Mock {
    fn start(names: &[&str]) -> Mock {
        Mock::with_tool(TOOL_COMMAND, names)
    }

    /// A mock whose tool call runs `command`.
    fn with_tool(command: &str, names: &[&str]) -> Mock {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let addr = format!("127.{}.{}.{}", 100 + n, (pid >> 8) & 255, pid % 250 + 2);
        let dir = shared_tempdir();
        let mut child = Command::new("python3")
            .arg(repo_root().join("integration/agents/mock_api.py"))
            .arg(dir.path())
            .arg(&addr)
            .arg(command)
            .args(names)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the mock API");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "mock API did not start on {addr}:443");
        Mock {
            dir,
            addr,
            names: names.iter().map(|s| s.to_string()).collect(),
            child,
        }
    }

    /// `--resolve` for every name and the mock's CA.
    fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        for n in &self.names {
            f.push("--resolve".into());
            f.push(format!("{n}={}", self.addr));
        }
        f.push("--upstream-ca-file".into());
        f.push(
            self.dir
                .path()
                .join("ca.pem")
                .to_string_lossy()
                .into_owned(),
        );
        f
    }

    /// Every request the mock saw, in order.
    fn requests(&self) -> Vec<Value> {
        let path = self.dir.path().join("requests.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `METHOD https://host/path` of a mock record, as the audit log writes the URL.
fn mock_url(r: &Value) -> String {
    format!(
        "{} https://{}{}",
        r["method"].as_str().unwrap(),
        r["host"].as_str().unwrap(),
        r["path"].as_str().unwrap()
    )
}

fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The audit log holds exactly one allow record per request the mock saw (same method and
/// URL, matched by one of `api_rules` or, for the tool's fetch, `TOOL_RULE`) and one denial: the
/// tool's fetch of denied.test, as a GET (nsjail, and landjail where the proxy intercepts the
/// denied tunnel) or as the CONNECT landjail's proxy refuses.
fn assert_audit_is_exact(audit: &[Value], mock: &[Value], api_rules: &[String], ctx: &str) {
    let mut allowed: Vec<String> = audit
        .iter()
        .filter(|r| r["decision"] == "allow")
        .map(|r| {
            let url = r["http_url"].as_str().unwrap();
            let rule = r["matched_rule"].as_str().unwrap_or_default();
            let ok = if url.starts_with("https://allowed.test/") {
                rule == TOOL_RULE
            } else {
                api_rules.iter().any(|a| a == rule)
            };
            assert!(ok, "rule of {r} ({ctx})");
            format!("{} {url}", r["http_method"].as_str().unwrap())
        })
        .collect();
    let mut seen: Vec<String> = mock
        .iter()
        .filter(|r| r["transport"] != "websocket")
        .map(mock_url)
        .collect();
    allowed.sort();
    seen.sort();
    assert_eq!(
        allowed, seen,
        "audit allow records vs the mock's requests ({ctx})"
    );
    let denied: Vec<String> = audit
        .iter()
        .filter(|r| r["decision"] != "allow")
        .map(|r| {
            assert_eq!(r["decision"], "deny", "{r} ({ctx})");
            format!("{} {}", r["http_method"], r["http_url"])
        })
        .collect();
    assert!(
        denied == [r#""GET" "https://denied.test/x""#]
            || denied == [r#""CONNECT" "https://denied.test:443""#],
        "denials: {denied:?} ({ctx})"
    );
    assert!(
        mock.iter().all(|r| r["host"] != "denied.test"),
        "the denied host was reached ({ctx})"
    );
}

/// The text of a tool output (a string or a list of text blocks).
fn flat_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(flat_text).collect::<Vec<_>>().join("\n"),
        Value::Object(o) => o.get("text").map(flat_text).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The Bash tool's results (`tool_result` of the mock's `toolu_mock_1`) in the Messages API
/// requests Claude Code sent the mock, in order.
fn claude_tool_results(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/v1/messages"))
        .flat_map(|r| {
            r["body"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|m| m["content"].as_array().cloned())
        .flatten()
        .filter(|c| c["type"] == "tool_result" && c["tool_use_id"] == "toolu_mock_1")
        .map(|c| flat_text(&c["content"]))
        .collect()
}

/// The shell tool's outputs (`function_call_output` of the mock's `call_mock_1`) in the
/// Responses API requests Codex sent the mock, over `transport` (`websocket` or `http`) or
/// any, in order.
fn codex_tool_outputs(requests: &[Value], transport: Option<&str>) -> Vec<String> {
    requests
        .iter()
        .filter(|r| transport.is_none_or(|t| r["transport"] == t))
        .flat_map(|r| r["body"]["input"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["type"] == "function_call_output" && i["call_id"] == "call_mock_1")
        .map(|i| flat_text(&i["output"]))
        .collect()
}

/// The tool output holds the allowed body and the denial: boundary's 403 page, in both jails
/// (landjail intercepts a tunnel to a denied host and answers its request with the page).
fn assert_tool_output(output: &str, ctx: &str) {
    assert!(
        output.lines().any(|l| l.trim() == "ok"),
        "no allowed body in the tool output ({ctx}):\n{output}"
    );
    assert!(
        output.contains("Request Blocked by Boundary"),
        "no 403 page in the tool output ({ctx}):\n{output}"
    );
}

/// A jailed agent run: `program` in `jail` (its `jail_flags`) as `who`, with the mock's names
/// and `policy` (flags: [`policy_flags`]), the audit log in `config`; a 300 s ceiling so a stuck CLI fails the test.
fn run_jailed(
    who: As,
    jail_flags: &[String],
    mock: &Mock,
    policy: &[String],
    config: &Path,
    program: &[String],
) -> Output {
    let mut cmd = boundary_cmd(who, config, &["timeout", "300"]);
    cmd.args(jail_flags).args(mock.flags());
    cmd.arg("--audit-log").arg(config.join("audit.jsonl"));
    cmd.args(policy);
    cmd.arg("--").args(program).stdin(Stdio::null());
    cmd.output().unwrap()
}

/// `env HOME=home PATH=<agents>:<system> VARS... ` in front of a jailed CLI.
fn agent_env(home: &Path, vars: &[&str]) -> Vec<String> {
    let mut v = vec![
        "env".to_string(),
        format!("HOME={}", home.display()),
        format!("PATH={AGENTS_PREFIX}/bin:{PATH}"),
    ];
    v.extend(vars.iter().map(|s| s.to_string()));
    v
}

/// `claude -p PROMPT --allowedTools Bash` with the mock's API key and telemetry off, in the
/// environment [`agent_env`] gives it.
fn claude_print(claude: &Path, home: &Path, prompt: &str) -> Vec<String> {
    let mut program = agent_env(
        home,
        &["ANTHROPIC_API_KEY=sk-ant-mock-key", "DISABLE_TELEMETRY=1"],
    );
    program.extend(
        [
            claude.to_str().unwrap(),
            "-p",
            prompt,
            "--allowedTools",
            "Bash",
        ]
        .map(String::from),
    );
    program
}

fn claude_prompt(who: As) {
    require_root().unwrap();
    let claude = agent_bin("claude");
    let policy = policy_flags("claude-code", true);
    for (jail, jail_flags) in both_jails() {
        let ctx = format!("claude -p, {jail}, {who:?}");
        let mock = Mock::start(&["api.anthropic.com", "allowed.test", "denied.test"]);
        let config = config_home(who);
        let home = config_home(who);
        let program = claude_print(
            &claude,
            home.path(),
            "Fetch the two URLs with the Bash tool.",
        );
        let o = run_jailed(who, &jail_flags, &mock, &policy, config.path(), &program);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "{ctx}: {t}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(FINAL_ANSWER),
            "{ctx}: {t}"
        );
        let requests = mock.requests();
        let results = claude_tool_results(&requests);
        assert!(!results.is_empty(), "{ctx}: no tool_result reached the API");
        assert_tool_output(&results[0], &ctx);
        let audit = audit_records(&config.path().join("audit.jsonl"));
        assert_audit_is_exact(&audit, &requests, &doc_allowlist("claude-code"), &ctx);
    }
}

/// Claude Code with its `sandbox` setting on (bubblewrap on Linux, and its own network proxy
/// allowing both test hosts) in nsjail with `--nested-sandboxes`, started by an unprivileged
/// user (issue 17 item 2): the Bash tool runs nested (more PID namespaces and seccomp filters
/// than the jail's) and boundary still decides its fetches. `enableWeakerNestedSandbox` makes
/// Claude bind the jail's `/proc` instead of mounting a fresh one, which the kernel refuses
/// under the jail's masked `/proc`. Started by root, the jail's uid 0 keeps `CAP_SETFCAP` for
/// bubblewrap's uid map.
fn claude_code_with_its_own_sandbox(who: As) {
    require_root().unwrap();
    let claude = agent_bin("claude");
    let policy = policy_flags("claude-code", true);
    let ctx = format!("claude -p with its sandbox, nsjail --nested-sandboxes, {who:?}");
    let ctx = ctx.as_str();
    let tool = format!("grep -E '^(NSpid|Seccomp_filters):' /proc/self/status; {TOOL_COMMAND}");
    let mock = Mock::with_tool(&tool, &["api.anthropic.com", "allowed.test", "denied.test"]);
    let config = config_home(who);
    let home = config_home(who);
    let settings = home.path().join(".claude");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("settings.json"),
        r#"{"sandbox": {"enabled": true, "autoAllowBashIfSandboxed": true, "enableWeakerNestedSandbox": true, "network": {"allowedDomains": ["allowed.test", "denied.test"]}}}"#,
    )
    .unwrap();
    if who == As::User {
        let uid = test_user();
        std::os::unix::fs::chown(&settings, Some(uid), Some(uid)).unwrap();
        std::os::unix::fs::chown(settings.join("settings.json"), Some(uid), Some(uid)).unwrap();
    }
    let program = claude_print(
        &claude,
        home.path(),
        "Fetch the two URLs with the Bash tool.",
    );
    let (jail, mut jail_flags) = both_jails()[0].clone();
    assert_eq!(jail, "nsjail");
    jail_flags.push("--nested-sandboxes".into());
    let o = run_jailed(who, &jail_flags, &mock, &policy, config.path(), &program);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{ctx}: {t}");
    let results = claude_tool_results(&mock.requests());
    assert!(!results.is_empty(), "{ctx}: no tool_result: {t}");
    let out = &results[0];
    let field = |name: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("{ctx}: no {name} in the tool output:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert!(
        field("NSpid:").len() >= 2,
        "{ctx}: not in a nested PID namespace:\n{out}"
    );
    let filters: u32 = field("Seccomp_filters:")[0].parse().unwrap();
    assert!(
        filters >= 2,
        "{ctx}: Claude's seccomp filter is missing:\n{out}"
    );
    assert_tool_output(out, ctx);
    let audit = audit_records(&config.path().join("audit.jsonl"));
    assert_audit_is_exact(&audit, &mock.requests(), &doc_allowlist("claude-code"), ctx);
}

#[test]
fn claude_code_with_its_own_sandbox_in_nsjail_as_root() {
    claude_code_with_its_own_sandbox(As::Root);
}

#[test]
fn claude_code_with_its_own_sandbox_in_nsjail_as_an_unprivileged_user() {
    claude_code_with_its_own_sandbox(As::User);
}

/// Two jailed Claude Code sessions with their sandboxes at once, as the same user: jails share
/// the host's `/tmp`, and Claude names its socket there by pid (`/tmp/cc-socks-<uid>/<pid>.sock`).
/// When every jail numbered its processes from 1, both sessions were pid 2, the second took the
/// first's socket, and the first's tool fetches failed (`CONNECT tunnel failed, response 502`,
/// no request reached boundary); the jail now starts its pids at a random point.
#[test]
fn two_claude_code_sandboxes_side_by_side_in_nsjail() {
    std::thread::scope(|s| {
        let runs = [
            s.spawn(|| claude_code_with_its_own_sandbox(As::User)),
            s.spawn(|| claude_code_with_its_own_sandbox(As::User)),
        ];
        for r in runs {
            if let Err(panic) = r.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

#[test]
fn claude_code_prompt_with_a_tool_call_as_root() {
    claude_prompt(As::Root);
}

#[test]
fn claude_code_prompt_with_a_tool_call_as_an_unprivileged_user() {
    claude_prompt(As::User);
}

/// Codex's transports: the built-in OpenAI provider speaks the Responses API over a
/// WebSocket; a custom provider with `supports_websockets=false` over HTTP with SSE.
const CODEX_TRANSPORTS: [(&str, &[&str]); 2] = [
    ("websocket", &[]),
    (
        "sse",
        &[
            "-c",
            "model_provider=mock",
            "-c",
            "model_providers.mock={name=\"mock\",base_url=\"https://api.openai.com/v1\",\
             env_key=\"OPENAI_API_KEY\",wire_api=\"responses\",supports_websockets=false}",
        ],
    ),
];

/// `codex exec` with its own sandbox off (boundary is the sandbox; Codex's bubblewrap needs
/// `--nested-sandboxes`, see the test after this one), a model whose tools include `exec_command`,
/// and the plugin sync and analytics off (they fetch from github.com and chatgpt.com, which the
/// documented allowlist leaves denied).
fn codex_exec(who: As) {
    require_root().unwrap();
    let codex = agent_bin("codex");
    let api_rules = doc_allowlist("codex");
    let policy = policy_flags("codex", true);
    for (transport, transport_flags) in CODEX_TRANSPORTS {
        for (jail, jail_flags) in both_jails() {
            let ctx = format!("codex exec over {transport}, {jail}, {who:?}");
            let mock = Mock::start(&["api.openai.com", "allowed.test", "denied.test"]);
            let config = config_home(who);
            let home = config_home(who);
            // Codex keeps its state in $HOME/.codex (created on first run).
            let mut program = agent_env(home.path(), &["OPENAI_API_KEY=sk-mock-key"]);
            program.extend(
                [
                    codex.to_str().unwrap(),
                    "exec",
                    "--skip-git-repo-check",
                    "--dangerously-bypass-approvals-and-sandbox",
                    "-m",
                    "gpt-5-codex",
                    "--disable",
                    "plugins",
                    "--disable",
                    "remote_plugin",
                    "-c",
                    "analytics.enabled=false",
                ]
                .map(String::from),
            );
            program.extend(transport_flags.iter().map(|s| s.to_string()));
            program.push("Fetch the two URLs with the shell tool.".into());
            let o = run_jailed(who, &jail_flags, &mock, &policy, config.path(), &program);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(0), "{ctx}: {t}");
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(FINAL_ANSWER),
                "{ctx}: {t}"
            );
            let requests = mock.requests();
            let wanted = if transport == "websocket" {
                "websocket"
            } else {
                "http"
            };
            let outputs = codex_tool_outputs(&requests, Some(wanted));
            assert!(
                !outputs.is_empty(),
                "{ctx}: no function_call_output reached the API over {transport}"
            );
            assert_tool_output(&outputs[0], &ctx);
            let audit = audit_records(&config.path().join("audit.jsonl"));
            assert_audit_is_exact(&audit, &requests, &api_rules, &ctx);
        }
    }
}

#[test]
fn codex_exec_over_websocket_and_sse_as_root() {
    codex_exec(As::Root);
}

#[test]
fn codex_exec_over_websocket_and_sse_as_an_unprivileged_user() {
    codex_exec(As::User);
}

/// A Codex state directory outside /tmp, owned by `who`, removed when dropped.
struct CodexHome(PathBuf);

impl CodexHome {
    fn new(who: As) -> CodexHome {
        let base = match who {
            As::Root => PathBuf::from("/root"),
            As::User => PathBuf::from(format!("/home/{TEST_USER}")),
        };
        let dir = base.join(format!(".boundary-test-codex-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if who == As::User {
            let uid = test_user();
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        }
        CodexHome(dir)
    }
}

impl Drop for CodexHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Codex with its own sandbox on (`-s workspace-write`, network access on: bubblewrap with new
/// user, PID and IPC namespaces, and Codex's seccomp filter) in nsjail with
/// `--nested-sandboxes`, started by an unprivileged user (issue 17 item 2): the tool runs
/// nested (its status shows two PID namespaces, the jail's and bubblewrap's, and more seccomp
/// filters than the jail's one), and boundary still decides its fetches. Started by root, the
/// jail's uid 0 keeps `CAP_SETFCAP` for bubblewrap's uid map.
fn codex_exec_with_its_own_sandbox(who: As) {
    require_root().unwrap();
    let codex = agent_bin("codex");
    let api_rules = doc_allowlist("codex");
    let policy = policy_flags("codex", true);
    let ctx = format!("codex exec with its sandbox, nsjail --nested-sandboxes, {who:?}");
    let ctx = ctx.as_str();
    let tool = format!("grep -E '^(NSpid|Seccomp_filters):' /proc/self/status; {TOOL_COMMAND}");
    let mock = Mock::with_tool(&tool, &["api.openai.com", "allowed.test", "denied.test"]);
    let config = config_home(who);
    let home = config_home(who);
    // Codex refuses to put its sandbox helper under a temporary directory ("Refusing to create
    // helper binaries under temporary dir"; bubblewrap then cannot find it): its state goes in
    // the test user's real home, removed at the end.
    let codex_home = CodexHome::new(who);
    let codex_home_var = format!("CODEX_HOME={}", codex_home.0.display());
    let mut program = agent_env(
        home.path(),
        &["OPENAI_API_KEY=sk-mock-key", codex_home_var.as_str()],
    );
    program.extend(
        [
            codex.to_str().unwrap(),
            "exec",
            "--skip-git-repo-check",
            "-C",
            home.path().to_str().unwrap(),
            "-s",
            "workspace-write",
            "-c",
            "sandbox_workspace_write.network_access=true",
            "-m",
            "gpt-5-codex",
            "--disable",
            "plugins",
            "--disable",
            "remote_plugin",
            "-c",
            "analytics.enabled=false",
            "Fetch the two URLs with the shell tool.",
        ]
        .map(String::from),
    );
    let (jail, mut jail_flags) = both_jails()[0].clone();
    assert_eq!(jail, "nsjail");
    jail_flags.push("--nested-sandboxes".into());
    let o = run_jailed(who, &jail_flags, &mock, &policy, config.path(), &program);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{ctx}: {t}");
    let requests = mock.requests();
    let outputs = codex_tool_outputs(&requests, None);
    assert!(!outputs.is_empty(), "{ctx}: no function_call_output: {t}");
    let out = &outputs[0];
    let field = |name: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("{ctx}: no {name} in the tool output:\n{out}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(
        field("NSpid:").len(),
        2,
        "{ctx}: not in a nested PID namespace:\n{out}"
    );
    let filters: u32 = field("Seccomp_filters:")[0].parse().unwrap();
    assert!(
        filters >= 2,
        "{ctx}: Codex's seccomp filter is missing:\n{out}"
    );
    assert_tool_output(out, ctx);
    let audit = audit_records(&config.path().join("audit.jsonl"));
    assert_audit_is_exact(&audit, &requests, &api_rules, ctx);
}

#[test]
fn codex_exec_with_its_own_sandbox_in_nsjail_as_root() {
    codex_exec_with_its_own_sandbox(As::Root);
}

#[test]
fn codex_exec_with_its_own_sandbox_in_nsjail_as_an_unprivileged_user() {
    codex_exec_with_its_own_sandbox(As::User);
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is needed (package tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to 120 s, then fails with the screen) until the pane of `session` shows `what`.
fn wait_for_screen(session: &str, what: &str, ctx: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let pane = tmux(&["capture-pane", "-p", "-J", "-t", session]);
        if pane.contains(what) {
            return pane;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ctx}: {what:?} never showed; screen:\n{pane}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Types `prompt` into the pane and submits it once it shows: an Enter in the same burst as
/// the text is taken for part of a paste (a new line) by the CLIs' editors.
fn type_prompt(session: &str, prompt: &str, ctx: &str) {
    tmux(&["send-keys", "-t", session, "-l", prompt]);
    wait_for_screen(session, prompt, ctx);
    std::thread::sleep(std::time::Duration::from_millis(500));
    tmux(&["send-keys", "-t", session, "Enter"]);
}

fn shell_quote(words: impl IntoIterator<Item = String>) -> String {
    words
        .into_iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Claude Code's state for an interactive run with an API key: onboarding done, the key
/// approved (it keeps the key's last 20 characters), the working directory trusted.
fn claude_state(home: &Path, key: &str, who: As) {
    let state = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "customApiKeyResponses": {"approved": [&key[key.len() - 20..]], "rejected": []},
        "projects": {home.to_str().unwrap(): {"hasTrustDialogAccepted": true}},
    });
    let file = home.join(".claude.json");
    std::fs::write(&file, state.to_string()).unwrap();
    if who == As::User {
        let uid = test_user();
        std::os::unix::fs::chown(&file, Some(uid), Some(uid)).unwrap();
    }
}

/// boundary running `program` (in `home`) in a detached tmux pane, as `boundary_cmd` builds it
/// but at the default log level (the screen must stay clean at the default) and with its state
/// directory apart from the config directory, as ~/.local/state is from ~/.config (landjail
/// reports a change to the config directory it cannot protect). `done` gets the exit status.
struct InTmux {
    session: String,
    done: PathBuf,
    audit: PathBuf,
    _dirs: [tempfile::TempDir; 2],
}

impl InTmux {
    fn start(
        who: As,
        jail_flags: &[String],
        mock: &Mock,
        policy: &[String],
        home: &Path,
        program: &[String],
        ctx: &str,
    ) -> InTmux {
        let config = config_home(who);
        let state = config_home(who);
        let cmd = boundary_cmd(who, config.path(), &[]);
        let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
        words.extend(cmd.get_args().map(|a| {
            let a = a.to_string_lossy();
            match a.strip_prefix("XDG_STATE_HOME=") {
                Some(_) => format!("XDG_STATE_HOME={}", state.path().display()),
                None => a.into_owned(),
            }
        }));
        // both_jails' last two flags set `--log-level error`.
        words.extend(jail_flags[..jail_flags.len() - 2].iter().cloned());
        words.extend(mock.flags());
        let audit = config.path().join("audit.jsonl");
        words.extend(["--audit-log".into(), audit.to_string_lossy().into()]);
        words.extend(policy.iter().cloned());
        words.push("--".into());
        words.extend(program.iter().cloned());
        let done = config.path().join("exit-code");
        let session = format!(
            "bnd-agents-{}-{}",
            std::process::id(),
            ctx.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        let shell = format!(
            "cd {}; {}; echo $? > {}; sleep 600",
            home.display(),
            shell_quote(words),
            done.display()
        );
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "200",
            "-y",
            "50",
            &shell,
        ]);
        InTmux {
            session,
            done,
            audit,
            _dirs: [config, state],
        }
    }
}

impl Drop for InTmux {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.session]);
    }
}

/// Interactive Claude Code in a tmux pane: it renders its prompt, takes the typed prompt, runs
/// the mock's tool call, shows the answer; Ctrl-C twice exits with status 0; the screen holds
/// no boundary log line (only the deny summary at exit); the audit log is exact.
fn claude_interactive(who: As) {
    require_root().unwrap();
    let claude = agent_bin("claude");
    let key = "sk-ant-mock-key-0123456789abcdef";
    let policy = policy_flags("claude-code", true);
    for (jail, jail_flags) in both_jails() {
        let ctx = format!("interactive claude, {jail}, {who:?}");
        let mock = Mock::start(&["api.anthropic.com", "allowed.test", "denied.test"]);
        let home = config_home(who);
        claude_state(home.path(), key, who);
        let mut program = agent_env(
            home.path(),
            &[
                &format!("ANTHROPIC_API_KEY={key}"),
                "DISABLE_TELEMETRY=1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
                "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL=1",
            ],
        );
        program.extend(
            [
                claude.to_str().unwrap(),
                "--permission-mode",
                "default",
                "--allowedTools",
                "Bash",
            ]
            .map(String::from),
        );
        let run = InTmux::start(
            who,
            &jail_flags,
            &mock,
            &policy,
            home.path(),
            &program,
            &ctx,
        );
        let (session, done, audit_file) = (&run.session, &run.done, &run.audit);
        wait_for_screen(session, "? for shortcuts", &ctx);
        type_prompt(session, "Fetch the two URLs with the Bash tool.", &ctx);
        wait_for_screen(session, FINAL_ANSWER, &ctx);
        // Ctrl-C once arms the exit ("Press Ctrl-C again to exit"), the second exits.
        tmux(&["send-keys", "-t", session, "C-c"]);
        wait_for_screen(session, "Ctrl-C again", &ctx);
        tmux(&["send-keys", "-t", session, "C-c"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done.exists() {
            let pane = tmux(&["capture-pane", "-p", "-J", "-t", session]);
            assert!(
                std::time::Instant::now() < deadline,
                "{ctx}: claude did not exit on Ctrl-C; screen:\n{pane}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let pane = tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", session]);
        let _ = tmux(&["kill-session", "-t", session]);
        let code = std::fs::read_to_string(done).unwrap();
        let t = format!("{ctx}: exit {code}\nscreen:\n{pane}");
        assert_eq!(code.trim(), "0", "{t}");
        for line in ["WARN", "INFO", "ERROR", "boundary_request", "audit socket"] {
            assert!(!pane.contains(line), "{line:?} on the screen\n{t}");
        }
        assert!(
            pane.contains("boundary: 1 request denied (denied.test)"),
            "{t}"
        );
        let requests = mock.requests();
        let results = claude_tool_results(&requests);
        assert!(!results.is_empty(), "{ctx}: no tool_result reached the API");
        assert_tool_output(&results[0], &ctx);
        let audit = audit_records(audit_file);
        assert_audit_is_exact(&audit, &requests, &doc_allowlist("claude-code"), &ctx);
    }
}

#[test]
fn claude_code_interactive_in_tmux_as_root() {
    claude_interactive(As::Root);
}

#[test]
fn claude_code_interactive_in_tmux_as_an_unprivileged_user() {
    claude_interactive(As::User);
}

/// Pids of running processes whose arguments are exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (cmd == want).then_some(pid)
        })
        .collect()
}

/// boundary's own process for `mock` (its command line names the mock's address).
fn boundary_of(mock: &Mock) -> Option<u32> {
    let resolve = format!("{}={}", mock.names[0], mock.addr);
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (comm.trim() == "boundary" && cmd.split('\0').any(|a| a == resolve)).then_some(pid)
    })
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// SIGTERM to boundary right after Claude's Bash tool starts (issue 17 item 4): the tool's
/// command leaves a detached `setsid` sleep and runs a foreground one; once both run (the
/// positive control: they are seen), boundary gets SIGTERM and must exit leaving no process of
/// the jail behind. In both jails (landjail has no PID namespace: boundary, the jail's
/// subreaper, ends them), as root and as a user.
fn claude_tool_under_sigterm(who: As) {
    require_root().unwrap();
    let claude = agent_bin("claude");
    let policy = policy_flags("claude-code", false);
    for (n, (jail, jail_flags)) in both_jails().into_iter().enumerate() {
        let ctx = format!("claude's Bash tool under SIGTERM, {jail}, {who:?}");
        let marker = format!("{}.{}{n}", 87000 + who as u32, std::process::id());
        let home = config_home(who);
        let started = home.path().join("tool-started");
        let quiet = ">/dev/null 2>&1 </dev/null";
        let command = format!(
            "(setsid sleep {marker} {quiet} &); echo started > {}; sleep {marker}",
            started.display()
        );
        let mock = Mock::with_tool(&command, &["api.anthropic.com"]);
        let config = config_home(who);
        let program = claude_print(&claude, home.path(), "Run the command.");
        let mut cmd = boundary_cmd(who, config.path(), &[]);
        cmd.args(&jail_flags).args(mock.flags());
        cmd.args(&policy);
        cmd.arg("--").args(&program);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let boundary_pid = loop {
            let sleeps = processes_running(&["sleep", &marker]);
            if started.exists() && sleeps.len() == 2 {
                if let Some(pid) = boundary_of(&mock) {
                    break pid;
                }
            }
            if std::time::Instant::now() > deadline {
                if let Some(p) = boundary_of(&mock) {
                    signal(p, Signal::SIGKILL);
                }
                let _ = child.kill();
                panic!("{ctx}: the tool's sleeps never ran (seen: {sleeps:?})");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        signal(boundary_pid, Signal::SIGTERM);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                signal(boundary_pid, Signal::SIGKILL);
                let _ = child.kill();
                panic!("{ctx}: boundary did not exit on SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let left = processes_running(&["sleep", &marker]);
        for pid in &left {
            signal(*pid, Signal::SIGKILL);
        }
        assert!(
            left.is_empty(),
            "{ctx}: jailed processes outlived boundary: {left:?}"
        );
    }
}

#[test]
fn claude_code_bash_tool_under_sigterm_leaves_nothing_as_root() {
    claude_tool_under_sigterm(As::Root);
}

#[test]
fn claude_code_bash_tool_under_sigterm_leaves_nothing_as_an_unprivileged_user() {
    claude_tool_under_sigterm(As::User);
}

/// Pids of processes whose environment holds `entry` (a jailed CLI's unique HOME: every
/// process it starts inherits it).
fn processes_with_env(entry: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|v| v == entry.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// Interactive Codex in a tmux pane, signed in with an API key: it renders, takes the typed
/// prompt and runs the mock's tool call; then SIGTERM to boundary (issue 17 item 4) must end
/// every process Codex started (found by its unique HOME; the positive control is that they
/// are seen running first), in both jails, as root and as a user.
fn codex_interactive_under_sigterm(who: As) {
    require_root().unwrap();
    let codex = agent_bin("codex");
    let policy = policy_flags("codex", true);
    for (jail, jail_flags) in both_jails() {
        let ctx = format!("interactive codex, {jail}, {who:?}");
        let mock = Mock::start(&["api.openai.com", "allowed.test", "denied.test"]);
        let home = config_home(who);
        let dot = home.path().join(".codex");
        std::fs::create_dir(&dot).unwrap();
        let auth = dot.join("auth.json");
        std::fs::write(
            &auth,
            r#"{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-mock-key"}"#,
        )
        .unwrap();
        if who == As::User {
            let uid = test_user();
            for p in [&dot, &auth] {
                std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
            }
        }
        let mut program = agent_env(home.path(), &[]);
        program.extend(
            [
                codex.to_str().unwrap(),
                "-m",
                "gpt-5-codex",
                "--disable",
                "plugins",
                "--disable",
                "remote_plugin",
                "-c",
                "analytics.enabled=false",
                "--dangerously-bypass-approvals-and-sandbox",
            ]
            .map(String::from),
        );
        let run = InTmux::start(
            who,
            &jail_flags,
            &mock,
            &policy,
            home.path(),
            &program,
            &ctx,
        );
        wait_for_screen(&run.session, "? for shortcuts", &ctx);
        type_prompt(
            &run.session,
            "Fetch the two URLs with the shell tool.",
            &ctx,
        );
        wait_for_screen(&run.session, FINAL_ANSWER, &ctx);
        let outputs = codex_tool_outputs(&mock.requests(), Some("websocket"));
        assert!(!outputs.is_empty(), "{ctx}: no function_call_output");
        assert_tool_output(&outputs[0], &ctx);
        let home_var = format!("HOME={}", home.path().display());
        let before = processes_with_env(&home_var);
        assert!(!before.is_empty(), "{ctx}: no Codex process seen");
        let boundary = boundary_of(&mock).expect("boundary's process");
        signal(boundary, Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !run.done.exists() {
            if std::time::Instant::now() > deadline {
                signal(boundary, Signal::SIGKILL);
                panic!("{ctx}: boundary did not exit on SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let left = processes_with_env(&home_var);
        let names: Vec<String> = left
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
            .collect();
        for pid in &left {
            signal(*pid, Signal::SIGKILL);
        }
        assert!(
            left.is_empty(),
            "{ctx}: Codex's processes outlived boundary: {left:?} {names:?} (running before: \
             {before:?})"
        );
    }
}

#[test]
fn codex_interactive_under_sigterm_leaves_nothing_as_root() {
    codex_interactive_under_sigterm(As::Root);
}

#[test]
fn codex_interactive_under_sigterm_leaves_nothing_as_an_unprivileged_user() {
    codex_interactive_under_sigterm(As::User);
}
