//! Shared pieces of the nsjail end-to-end tests: the `boundary` binary, an unprivileged test
//! user, a fixture origin (HTTP and HTTPS with its own CA, a dumb-HTTP git repository), and
//! running boundary as root or as that user.
//!
//! The tests need the binary built first: `cargo build -p boundary` (CI's `cargo test
//! --workspace` builds it as a workspace member before running tests). Packages: curl, git,
//! python3 (+ python3-requests), nodejs, openssl, tmux, iproute2, nftables, util-linux (runuser).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

#[allow(unused_imports)]
pub use boundary_integration::farhost::{boundary_binary, require_root, Counters, FarHost};

/// Name of the unprivileged user the rootless tests run boundary as.
pub const TEST_USER: &str = "boundary-test";
/// PATH for jailed commands (system tools only, reachable by the test user).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Creates the test user if missing (needs root); returns its uid.
pub fn test_user() -> u32 {
    require_root().unwrap();
    let have = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .output()
        .unwrap();
    if !have.status.success() {
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", TEST_USER])
            .status()
            .expect("useradd (package passwd)");
        assert!(st.success(), "useradd {TEST_USER} failed");
    }
    let out = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Who runs boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Root,
    User,
}

/// A world-readable temporary directory (the test user reads fixtures from it).
pub fn shared_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("boundary-nsjail-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A directory owned by `who` for boundary's config (its CA lives there).
pub fn config_home(who: As) -> tempfile::TempDir {
    let d = shared_tempdir();
    if who == As::User {
        let uid = test_user();
        std::os::unix::fs::chown(d.path(), Some(uid), Some(uid)).unwrap();
    }
    d
}

/// `boundary ARGS` as `who`, with a private config home; `prefix` (e.g. `ip netns exec X`)
/// goes in front of everything.
pub fn boundary_cmd(who: As, config: &Path, prefix: &[&str]) -> Command {
    let bin = boundary_binary().unwrap();
    let mut parts: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    if who == As::User {
        test_user();
        parts.extend(["runuser", "-u", TEST_USER, "--"].map(String::from));
    }
    parts.push("env".into());
    // As from a login shell: a test runner started in the background (non-interactive shells
    // ignore SIGINT and SIGQUIT there, nohup ignores SIGHUP) must not hand ignored signals to
    // the jailed command, whose traps and Ctrl-C the tests check.
    parts.push("--default-signal=INT,QUIT,HUP".into());
    parts.push(format!("PATH={PATH}"));
    parts.push(format!("XDG_CONFIG_HOME={}", config.display()));
    // The audit spool is per test too: another test's leftovers must not be delivered here.
    parts.push(format!("XDG_STATE_HOME={}", config.display()));
    if who == As::User {
        parts.push(format!("HOME=/home/{TEST_USER}"));
    }
    parts.push(format!(
        "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH={}/audit.sock",
        config.display()
    ));
    parts.push(bin.to_string_lossy().into_owned());
    let mut cmd = Command::new(&parts[0]);
    cmd.args(&parts[1..]);
    cmd
}

/// Runs a shell script in the jail and returns its output.
pub fn jailed_sh(who: As, config: &Path, prefix: &[&str], flags: &[&str], script: &str) -> Output {
    boundary_cmd(who, config, prefix)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `program` in a jail as `who` with `flags` and a fresh config home; waits and returns the
/// output (stdin empty).
pub fn jailed(who: As, flags: &[String], program: &[&str]) -> Output {
    let config = config_home(who);
    boundary_cmd(who, config.path(), &[])
        .args(flags)
        .arg("--")
        .args(program)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Spawns `cmd` with stdout piped and waits for its first line, which must be `ready` (a
/// jailed script says so once it runs); the rest of stdout stays on the child.
pub fn spawn_ready(cmd: &mut Command, ready: &str) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), ready, "{cmd:?} did not start");
    child
}

/// The lines a jailed script printed on `child`'s piped stdout before its `READY` line (the
/// script then waits, e.g. with `read done`, while the test looks from outside).
pub fn lines_until_ready(child: &mut Child) -> Vec<String> {
    let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut seen = Vec::new();
    for l in out.lines() {
        let l = l.unwrap();
        if l.trim() == "READY" {
            return seen;
        }
        seen.push(l);
    }
    panic!("the jailed script ended before READY; it printed: {seen:?}");
}

/// Text of both streams, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status={:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fixture origin on host loopback: HTTP and HTTPS (python http.server), a certificate for
/// `fixture.test` from a CA of its own (`ca_cert`, given to boundary as `--upstream-ca-file`),
/// files `allowed.txt`, `denied.txt`, and a bare git repository `repo.git` served over dumb HTTP.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    pub ca_cert: PathBuf,
    server: Child,
}

/// Body of the fixture's allowed file.
pub const ALLOWED_BODY: &str = "fixture-allowed-content";

const SERVER: &str = r#"
import http.server, ssl, sys, threading, os
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("READY", plain.server_address[1], secure.server_address[1], flush=True)
secure.serve_forever()
"#;

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}

/// A self-signed P-256 certificate for `cn` (`openssl req -x509`), key and certificate in PEM.
pub fn self_signed(cn: &str, key: &Path, cert: &Path) {
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
            ])
            .arg("-subj")
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
    );
}

impl Fixture {
    pub fn start() -> Fixture {
        let dir = shared_tempdir();
        let d = dir.path();
        let www = d.join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("allowed.txt"), ALLOWED_BODY).unwrap();
        std::fs::write(www.join("denied.txt"), "fixture-denied-content").unwrap();
        // CA and leaf with openssl (no key material from anywhere else).
        let ca_key = d.join("ca.key");
        let ca_cert = d.join("ca.pem");
        self_signed("boundary fixture CA", &ca_key, &ca_cert);
        let key = d.join("leaf.key");
        let csr = d.join("leaf.csr");
        let cert = d.join("leaf.pem");
        run_ok(
            Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    "/CN=fixture.test",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        let ext = d.join("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:fixture.test\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-CAcreateserial")
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        );
        for f in [&ca_cert, &cert] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // A repository, served dumb-HTTP from a bare clone.
        let src = d.join("src");
        run_ok(
            Command::new("git")
                .args(["init", "-q", "-b", "main"])
                .arg(&src),
        );
        std::fs::write(src.join("README"), "fixture-repo-readme\n").unwrap();
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(&src)
                .args(["add", "README"]),
        );
        run_ok(Command::new("git").arg("-C").arg(&src).args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ]));
        run_ok(
            Command::new("git")
                .args(["clone", "-q", "--bare"])
                .arg(&src)
                .arg(www.join("repo.git")),
        );
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(www.join("repo.git"))
                .arg("update-server-info"),
        );
        let script = d.join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let mut server = Command::new("python3")
            .arg(&script)
            .arg(&www)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 fixture server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"READY"), "fixture server: {line}");
        Fixture {
            http_port: words[1].parse().unwrap(),
            https_port: words[2].parse().unwrap(),
            ca_cert,
            dir,
            server,
        }
    }

    /// Flags that point boundary at this fixture and allow `rules`.
    pub fn flags(&self, rules: &[&str]) -> Vec<String> {
        let mut f = vec![
            "--log-level".to_string(),
            "error".into(),
            "--resolve".into(),
            "fixture.test=127.0.0.1".into(),
            "--upstream-ca-file".into(),
            self.ca_cert.to_string_lossy().into_owned(),
        ];
        for r in rules {
            f.push("--allow".into());
            f.push(r.to_string());
        }
        f
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Both jail types with the flags each needs to run a command that uses no network: nsjail,
/// and landjail with its proxy on a loopback port free right now.
pub fn both_jails() -> [(&'static str, Vec<String>); 2] {
    let flags = |f: &[String]| -> Vec<String> {
        let mut v = f.to_vec();
        v.extend(["--log-level".into(), "error".into()]);
        v
    };
    [
        ("nsjail", flags(&["--jail-type".into(), "nsjail".into()])),
        ("landjail", flags(&landjail_flags())),
    ]
}

/// `--jail-type landjail --proxy-port P` with P free on host loopback right now (landjail's
/// proxy listens there, and tests run concurrently).
pub fn landjail_flags() -> Vec<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    vec![
        "--jail-type".into(),
        "landjail".into(),
        "--proxy-port".into(),
        port.to_string(),
    ]
}

/// `program` outside any jail, as `who` (the positive controls).
pub fn outside(who: As, program: &[&str]) -> Command {
    let mut parts: Vec<&str> = Vec::new();
    if who == As::User {
        test_user();
        parts.extend(["runuser", "-u", TEST_USER, "--"]);
    }
    parts.extend(program);
    let mut cmd = Command::new(parts[0]);
    cmd.args(&parts[1..]).env("PATH", PATH);
    cmd
}
