//! The registry presets checked with the real clients (issue 16 item 2): npm, pip, cargo and git
//! run unmodified in both jails, as root, against local mirrors of the names they really
//! contact (`integration/registries/mirror.py`: registry.npmjs.org; pypi.org and
//! files.pythonhosted.org; index.crates.io and static.crates.io; github.com; proxy.golang.org)
//! and `go mod download` (with `GOSUMDB=off`: the checksum database sum.golang.org serves
//! signed tree heads no local mirror can sign, so that host of the go preset is not checked
//! by a client), and `apt-get update` + `apt-get download` over plain HTTP with Debian's and
//! Ubuntu's default hosts (deb.debian.org, security.debian.org; archive.ubuntu.com,
//! security.ubuntu.com; with apt's state, cache and configuration in the test's own directory
//! and `[trusted=yes]` sources, since the mirror cannot sign as Debian), and `skopeo copy` of a
//! Docker Hub image (registry-1.docker.io, its token service auth.docker.io, and the CDN host
//! production.cloudflare.docker.com its blob redirects name). boundary maps
//! those names to the mirror with `--resolve` and trusts its CA with `--upstream-ca-file`, so
//! nothing reaches the internet.
//!
//! Both directions: with the client's preset the command succeeds, every audit record is an
//! allow whose rule is one of the preset's, and the mirror saw a request for each of the
//! preset's hosts the client needs (so a host missing from a preset would show up as a denied
//! record and a failed command); with another preset the same command fails, the audit names
//! the denied host, and the mirror saw nothing at all (its request count is unchanged).
//!
//! Root, and for npm, pip, go and git also boundary started by an unprivileged user (cargo is
//! the rustup toolchain under /root, apt-get writes as root). Needs npm, python3 with pip
//! (python3-pip), git, go (golang-go), apt-get and dpkg-deb, skopeo, openssl and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Every name the mirror answers for.
const NAMES: [&str; 14] = [
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "index.crates.io",
    "static.crates.io",
    "github.com",
    "proxy.golang.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "registry-1.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The mirror on a loopback address of its own, port 443.
struct Mirror {
    dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Mirror {
    fn start() -> Mirror {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let addr = format!("127.{}.{}.{}", 200 + n, (pid >> 8) & 255, pid % 250 + 2);
        let dir = shared_tempdir();
        let mut child = Command::new("python3")
            .arg(repo_root().join("integration/registries/mirror.py"))
            .arg(dir.path())
            .arg(&addr)
            .args(NAMES)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the registry mirror");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the mirror did not start on {addr}:443"
        );
        Mirror { dir, addr, child }
    }

    fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        for n in NAMES {
            f.extend(["--resolve".to_string(), format!("{n}={}", self.addr)]);
        }
        let ca = self.dir.path().join("ca.pem");
        f.extend(["--upstream-ca-file".into(), ca.display().to_string()]);
        f
    }

    /// Hosts of the requests the mirror answered, in order.
    fn hosts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["host"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client, the preset it needs, and what a successful run prints.
struct Client {
    preset: &'static str,
    /// The hosts the client must have asked for.
    hosts: &'static [&'static str],
    /// A shell script run in the jail in a fresh work directory `$W` (HOME is `$W/home`).
    script: String,
    /// Printed by the script when the client got the package.
    success: &'static str,
}

/// The rustup toolchain's own cargo and rustc (a rustup proxy would need its home under /root
/// while the client runs with HOME elsewhere).
fn toolchain_bin() -> PathBuf {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc on PATH");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin")
}

fn npm() -> Client {
    Client {
        preset: "npm",
        hosts: &["registry.npmjs.org"],
        // The npmrc names the system bundle as `cafile`, as some hosts' global npmrc does: it
        // replaces Node's trust store, so npm trusts boundary's CA only through
        // `npm_config_cafile`, which boundary sets.
        script: "printf 'cafile=/etc/ssl/certs/ca-certificates.crt\\n' > \"$HOME/.npmrc\"
            mkdir \"$W/p\" && cd \"$W/p\"
            npm install --no-audit --no-fund --no-update-notifier --fetch-retries=0 \
                --cache \"$W/npm-cache\" tinypkg && node -e 'console.log(require(\"tinypkg\"))'"
            .into(),
        success: "tinypkg-from-the-mirror",
    }
}

fn pip() -> Client {
    Client {
        preset: "pypi",
        hosts: &["pypi.org", "files.pythonhosted.org"],
        script: "PIP_CONFIG_FILE=/dev/null python3 -m pip download --no-cache-dir \
                --disable-pip-version-check --retries 0 --no-deps -d \"$W/dl\" tinypkg \
            && ls \"$W/dl\""
            .into(),
        success: "tinypkg-1.0-py3-none-any.whl",
    }
}

fn cargo() -> Client {
    let bin = toolchain_bin();
    Client {
        preset: "crates",
        hosts: &["index.crates.io", "static.crates.io"],
        script: format!(
            "mkdir -p \"$W/c/src\" && cd \"$W/c\" && : > src/lib.rs
            printf '[package]\\nname = \"user\"\\nversion = \"0.1.0\"\\nedition = \"2021\"\\n\
[dependencies]\\ntinycrate = \"0.1\"\\n' > Cargo.toml
            CARGO_HOME=\"$W/cargo-home\" CARGO_NET_RETRY=0 RUSTC={bin}/rustc {bin}/cargo fetch \
            && ls \"$W\"/cargo-home/registry/cache/*/",
            bin = bin.display()
        ),
        success: "tinycrate-0.1.0.crate",
    }
}

fn git() -> Client {
    Client {
        preset: "github",
        hosts: &["github.com"],
        script:
            "GIT_CONFIG_NOSYSTEM=1 git clone -q https://github.com/example/tiny.git \"$W/tiny\" \
            && cat \"$W/tiny/README\""
                .into(),
        success: "tiny-from-the-mirror",
    }
}

fn go() -> Client {
    Client {
        preset: "go",
        hosts: &["proxy.golang.org"],
        script: "mkdir \"$W/g\" && cd \"$W/g\"
            printf 'module user\\n\\ngo 1.19\\n\\nrequire example.com/tiny v1.0.0\\n' > go.mod
            GOPATH=\"$W/gopath\" GOMODCACHE=\"$W/gopath/pkg/mod\" GOCACHE=\"$W/gocache\" \
                GOSUMDB=off GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -x \
            && ls \"$W/gopath/pkg/mod/example.com\""
            .into(),
        success: "tiny@v1.0.0",
    }
}

/// `apt-get update` and `apt-get download tinypkg` with `sources` (one `deb` line each) and
/// nothing of the host's apt configuration or state.
fn apt(preset: &'static str, hosts: &'static [&'static str], sources: &[&str]) -> Client {
    let lines: String = sources
        .iter()
        .map(|s| format!("deb [trusted=yes] {s}\\n"))
        .collect();
    Client {
        preset,
        hosts,
        script: format!(
            "mkdir -p \"$W/etc/apt.conf.d\" \"$W/state/lists/partial\" \
                \"$W/cache/archives/partial\" \"$W/dl\"
            : > \"$W/status\"
            printf '{lines}' > \"$W/etc/sources.list\"
            o=\"-o Dir::Etc=$W/etc -o Dir::Etc::SourceParts=$W/etc/sources.list.d \
                -o Dir::Etc::Parts=$W/etc/apt.conf.d -o Dir::State=$W/state \
                -o Dir::State::status=$W/status -o Dir::Cache=$W/cache \
                -o APT::Sandbox::User=root -o Debug::NoLocking=1 -o APT::Architecture=amd64 \
                -o Acquire::Retries=0 -o Acquire::Languages=none\"
            apt-get $o update && cd \"$W/dl\" && apt-get $o download tinypkg && ls"
        ),
        success: "tinypkg_1.0_all.deb",
    }
}

fn skopeo() -> Client {
    Client {
        preset: "docker-hub",
        hosts: &[
            "registry-1.docker.io",
            "auth.docker.io",
            "production.cloudflare.docker.com",
        ],
        script: "skopeo --insecure-policy copy --retry-times 0 \
                docker://docker.io/library/tiny:latest \"dir:$W/img\" \
            && cat \"$W/img/manifest.json\""
            .into(),
        success: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

/// The records of an `--audit-log` file as (decision, host, matched rule).
fn audit(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let url = v["http_url"].as_str().unwrap_or_default();
            let host = url
                .split_once("://")
                .map_or(url, |x| x.1)
                .split(['/', ':', '?'])
                .next()
                .unwrap_or_default()
                .to_string();
            (
                v["decision"].as_str().unwrap_or_default().to_string(),
                host,
                v["matched_rule"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The preset's rules, from the binary.
fn preset_rules(name: &str) -> Vec<String> {
    let out = Command::new(boundary_binary().unwrap())
        .args(["presets", "--json", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// `client.script` jailed with `--preset preset`; the output and the audit records.
/// How a run names its preset: `--preset`, `BOUNDARY_PRESETS`, or the config file's `presets:`.
#[derive(Debug, Clone, Copy)]
enum Given<'a> {
    Flag(&'a str),
    Env(&'a str),
    File(&'a str),
}

/// `client.script` jailed with the preset `given`, boundary started by root; the output and
/// the audit records.
fn run(
    mirror: &Mirror,
    jail_flags: &[String],
    given: Given,
    client: &Client,
) -> (Output, Vec<(String, String, String)>) {
    run_as(As::Root, mirror, jail_flags, given, client)
}

/// [`run`] with boundary started by `who` (the work directory is theirs).
fn run_as(
    who: As,
    mirror: &Mirror,
    jail_flags: &[String],
    given: Given,
    client: &Client,
) -> (Output, Vec<(String, String, String)>) {
    let work = config_home(who);
    let w = work.path();
    std::fs::create_dir(w.join("home")).unwrap();
    if who == As::User {
        let uid = test_user();
        std::os::unix::fs::chown(w.join("home"), Some(uid), Some(uid)).unwrap();
    }
    let config = config_home(who);
    let log = config.path().join("audit.jsonl");
    let script = format!(
        "export W='{}' HOME='{}/home'\n{}",
        w.display(),
        w.display(),
        client.script
    );
    let mut cmd = boundary_cmd(who, config.path(), &["timeout", "300"]);
    cmd.args(jail_flags).args(mirror.flags());
    match given {
        Given::Flag(name) => {
            cmd.args(["--preset", name]);
        }
        Given::Env(name) => {
            cmd.env("BOUNDARY_PRESETS", name);
        }
        Given::File(name) => {
            let file = config.path().join("policy.yaml");
            std::fs::write(&file, format!("presets:\n  - {name}\n")).unwrap();
            cmd.arg("--config").arg(file);
        }
    }
    let o = cmd
        .arg("--audit-log")
        .arg(&log)
        .args(["--", "sh", "-c", &script])
        .current_dir(w)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o, audit(&log))
}

fn check(client: Client, other: &str) {
    require_root().unwrap();
    let rules = preset_rules(client.preset);
    for (jail, jail_flags) in both_jails() {
        let mirror = Mirror::start();
        let ctx = format!("{} preset, {jail}", client.preset);
        // With the preset: the client gets its package, through the preset's rules only.
        let (o, records) = run(&mirror, &jail_flags, Given::Flag(client.preset), &client);
        let t = format!("{ctx}: {}\naudit: {records:?}", text(&o));
        assert_eq!(o.status.code(), Some(0), "{t}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(client.success),
            "{t}"
        );
        assert!(!records.is_empty(), "{t}");
        for (decision, host, rule) in &records {
            assert_eq!(decision, "allow", "{host} was denied: {t}");
            assert!(
                rules.contains(rule),
                "{host}: rule {rule:?} is not the preset's: {t}"
            );
        }
        let seen = mirror.hosts();
        for h in client.hosts {
            assert!(
                seen.iter().any(|s| s == h),
                "the mirror saw no {h}: {seen:?}\n{t}"
            );
        }
        // With another preset: the same command fails, the audit names the client's first
        // host as denied, and nothing reached the mirror.
        let before = mirror.hosts().len();
        let (o, records) = run(&mirror, &jail_flags, Given::Flag(other), &client);
        let t = format!(
            "{ctx}, run with --preset {other}: {}\naudit: {records:?}",
            text(&o)
        );
        assert_ne!(o.status.code(), Some(0), "{t}");
        assert!(
            records
                .iter()
                .any(|(d, h, _)| d == "deny" && h == client.hosts[0]),
            "{t}"
        );
        assert!(records.iter().all(|(d, _, _)| d == "deny"), "{t}");
        assert_eq!(mirror.hosts().len(), before, "{t}");
    }
}

#[test]
fn npm_install_works_with_the_npm_preset_and_only_with_it() {
    check(npm(), "pypi");
}

#[test]
fn pip_download_works_with_the_pypi_preset_and_only_with_it() {
    check(pip(), "npm");
}

#[test]
fn cargo_fetch_works_with_the_crates_preset_and_only_with_it() {
    check(cargo(), "npm");
}

#[test]
fn go_mod_download_works_with_the_go_preset_and_only_with_it() {
    check(go(), "npm");
}

#[test]
fn apt_get_works_with_the_debian_apt_preset_and_only_with_it() {
    let sources = [
        "http://deb.debian.org/debian bookworm main",
        "http://security.debian.org/debian-security bookworm-security main",
    ];
    let hosts = &["deb.debian.org", "security.debian.org"];
    check(apt("debian-apt", hosts, &sources), "ubuntu-apt");
}

#[test]
fn apt_get_works_with_the_ubuntu_apt_preset_and_only_with_it() {
    let sources = [
        "http://archive.ubuntu.com/ubuntu noble main",
        "http://security.ubuntu.com/ubuntu noble-security main",
    ];
    let hosts = &["archive.ubuntu.com", "security.ubuntu.com"];
    check(apt("ubuntu-apt", hosts, &sources), "debian-apt");
}

#[test]
fn skopeo_copy_works_with_the_docker_hub_preset_and_only_with_it() {
    check(skopeo(), "github");
}

#[test]
fn git_clone_works_with_the_github_preset_and_only_with_it() {
    check(git(), "npm");
}

/// The preset named by `BOUNDARY_PRESETS` or by the config file's `presets:` works as with
/// `--preset`; the file naming another preset leaves the clone denied.
#[test]
fn a_preset_from_the_environment_or_the_config_file_works_like_the_flag() {
    require_root().unwrap();
    let client = git();
    for (jail, jail_flags) in both_jails() {
        let mirror = Mirror::start();
        for given in [
            Given::Env("github"),
            Given::File("github"),
            Given::File("npm"),
        ] {
            let (o, records) = run(&mirror, &jail_flags, given, &client);
            let t = format!("{jail}, {given:?}: {}\naudit: {records:?}", text(&o));
            let allowed = !matches!(given, Given::File("npm"));
            assert_eq!(o.status.code() == Some(0), allowed, "{t}");
            assert_eq!(
                String::from_utf8_lossy(&o.stdout).contains(client.success),
                allowed,
                "{t}"
            );
            let want = if allowed { "allow" } else { "deny" };
            assert!(!records.is_empty(), "{t}");
            assert!(records.iter().all(|(d, _, _)| d == want), "{t}");
        }
    }
}

/// Started by an unprivileged user, in both jails, the clients that need no root get their
/// packages with their presets, through the presets' rules only.
#[test]
fn registry_clients_work_with_their_presets_as_an_unprivileged_user() {
    require_root().unwrap();
    for client in [npm(), pip(), go(), git()] {
        let rules = preset_rules(client.preset);
        for (jail, jail_flags) in both_jails() {
            let mirror = Mirror::start();
            let given = Given::Flag(client.preset);
            let (o, records) = run_as(As::User, &mirror, &jail_flags, given, &client);
            let t = format!(
                "{} preset, {jail}, User: {}\naudit: {records:?}",
                client.preset,
                text(&o)
            );
            assert_eq!(o.status.code(), Some(0), "{t}");
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(client.success),
                "{t}"
            );
            assert!(!records.is_empty(), "{t}");
            for (decision, host, rule) in &records {
                assert_eq!(decision, "allow", "{host} was denied: {t}");
                assert!(rules.contains(rule), "{host}: rule {rule:?}: {t}");
            }
        }
    }
}
