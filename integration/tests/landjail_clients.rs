//! `boundary --jail-type landjail` end to end with real clients (curl, git, Python, Node): an
//! allowed request goes through the proxy to a web server on the far host, a denied one gets the
//! proxy's 403, and going around the proxy fails without a packet reaching the far host, also
//! on the proxy's own port number (the Go landjail's bypass).
//!
//! Needs root (namespaces) and `cargo build -p boundary` first.
//! Run: `cargo build -p boundary && cargo test -p boundary-integration --test landjail_clients`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use boundary_integration::farhost::{boundary_binary, Counters, FarHost};

/// The port boundary's proxy listens on in these tests; the far host listens on it too.
const PROXY_PORT: &str = "8080";
const WEB_PORT: u16 = 8000;

/// A static web server on the far host (Python's http.server) with a file and a git repository.
struct Site {
    server: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn git(args: &[&str], dir: &Path) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git is needed");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn site(far: &FarHost) -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from far\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret\n").unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join("README"), "landjail repo\n").unwrap();
    git(&["add", "README"], &work);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ],
        &work,
    );
    git(&["clone", "-q", "--bare", "work", "repo.git"], dir.path());
    git(&["update-server-info"], &dir.path().join("repo.git"));
    let server = far
        .far_command("python3")
        .args(["-m", "http.server", &WEB_PORT.to_string(), "--bind"])
        .arg(far.far_v4.to_string())
        .arg("--directory")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server on the far host");
    // Wait until it accepts (polling a connect, no fixed sleep).
    let v4 = far.far_v4;
    far.in_near(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((v4, WEB_PORT)).is_err() {
            assert!(Instant::now() < deadline, "far web server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .unwrap();
    Site { server, _dir: dir }
}

fn boundary(far: &FarHost, home: &Path, allow: &[String], script: &str) -> Output {
    let bin = boundary_binary().expect("boundary binary");
    let mut cmd = far.near_command(bin);
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env("BOUNDARY_LOG_LEVEL", "warn")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT]);
    for a in allow {
        cmd.args(["--allow", a]);
    }
    cmd.args(["--", "sh", "-c", script]);
    cmd.output().expect("running boundary")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn node_get() -> &'static str {
    // Node's http module does not read HTTP_PROXY by itself: send the absolute-form request to
    // the proxy named there, as proxy-aware Node tools do.
    r#"const http = require('http');
const p = new URL(process.env.HTTP_PROXY);
const target = process.argv[1];
http.get({host: p.hostname, port: p.port, path: target, agent: false, headers: {host: new URL(target).host}}, r => {
  let b = ''; r.on('data', d => b += d); r.on('end', () => console.log('node ' + r.statusCode + ' ' + b.trim()));
}).on('error', e => { console.log('node error ' + e.code); });"#
}

#[test]
fn clients_through_the_landjail_proxy_allowed_and_denied() {
    let far = FarHost::new().expect("far host");
    let _site = site(&far);
    let home = tempfile::tempdir().unwrap();
    let f = far.far_v4;
    let base = format!("http://{f}:{WEB_PORT}");
    let allow = format!("domain={f} path=/hello.txt,/repo.git/*");
    let clone_dir = home.path().join("clone");
    let script = format!(
        "set -u\n\
         curl -sS --max-time 20 {base}/hello.txt\n\
         curl -sS --max-time 20 -o /dev/null -w 'curl-denied %{{http_code}}\\n' {base}/secret.txt\n\
         python3 -c \"import urllib.request as u; print('python', u.urlopen('{base}/hello.txt').read().decode().strip())\"\n\
         python3 -c \"import urllib.request as u, urllib.error as e\n\
try: u.urlopen('{base}/secret.txt')\n\
except e.HTTPError as x: print('python-denied', x.code, 'Request Blocked by Boundary' in x.read().decode())\"\n\
         node -e \"$NODE_GET\" {base}/hello.txt\n\
         node -e \"$NODE_GET\" {base}/secret.txt\n\
         git clone -q {base}/repo.git {clone} && echo \"git $(cat {clone}/README)\"\n\
         git clone -q {base}/other.git {clone}2 2>&1 | grep -q 403 && echo git-denied 403\n\
         exit 0\n",
        clone = clone_dir.display()
    );
    let bin = boundary_binary().expect("boundary binary");
    let out = far
        .near_command(bin)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env("NODE_GET", node_get())
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT])
        .args(["--allow", &allow, "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "hello from far",
        "curl-denied 403",
        "python hello from far",
        "python-denied 403 True",
        "node 200 hello from far",
        "git landjail repo",
        "git-denied 403",
    ] {
        assert!(stdout.contains(want), "missing {want:?}:\n{t}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("node 403 ") && l.contains("Request Blocked by Boundary")),
        "node denied request not blocked:\n{t}"
    );
}

#[test]
fn going_around_the_landjail_proxy_reaches_nothing() {
    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let (v4, v6) = (far.far_v4, far.far_v6);
    // The far host is the resolver (it answers UDP and TCP 53): a DNS lookup from the jail
    // would be counted there, so it must fail before sending anything.
    far.set_near_resolv_conf(&format!("nameserver {v4}\noptions timeout:1 attempts:1\n"))
        .unwrap();
    // The far host listens on the proxy's port too: the Go landjail lets this through.
    let script = format!(
        "curl -sS --max-time 5 --noproxy '*' http://{v4}:{PROXY_PORT}/; echo \"proxy-port-v4=$?\"\n\
         curl -sS --max-time 5 --noproxy '*' 'http://[{v6}]:{PROXY_PORT}/'; echo \"proxy-port-v6=$?\"\n\
         curl -sS --max-time 5 --noproxy '*' http://{v4}:80/; echo \"port80=$?\"\n\
         curl -sS --max-time 5 --noproxy '*' http://127.0.0.2:{PROXY_PORT}/; echo \"lo2=$?\"\n\
         python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('{v4}', 53))\" 2>/dev/null; echo \"udp=$?\"\n\
         getent hosts secret.exfil.example; echo \"dns=$?\"\n\
         getent ahostsv4 secret.exfil.example; echo \"dns4=$?\"\n\
         exit 0\n"
    );
    let out = boundary(
        &far,
        home.path(),
        &["domain=example.com".to_string()],
        &script,
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let wants = [
        "proxy-port-v4=7",
        "proxy-port-v6=7",
        "port80=7",
        "lo2=7",
        "udp=1",
        "dns=2",
        "dns4=2",
    ];
    assert_all_in(&out, &wants, &t);
    // Nothing reached the far host since it was made; the positive control from outside the
    // jail then does.
    far.assert_nothing_escaped(Counters::default(), &t);
}

#[test]
fn landjail_exit_code_and_local_servers() {
    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let out = boundary(&far, home.path(), &["domain=example.com".into()], "exit 42");
    assert_eq!(out.status.code(), Some(42), "{}", text(&out));
    // A dev server started in the jail is reachable from the jail.
    let script = "python3 -m http.server 18123 --bind 127.0.0.1 >/dev/null 2>&1 & \
                  for i in $(seq 100); do curl -s --noproxy '*' -o /dev/null http://127.0.0.1:18123/ && break; sleep 0.1; done; \
                  curl -sS --noproxy '*' -o /dev/null -w 'local %{http_code}\\n' http://127.0.0.1:18123/; kill %1";
    let out = boundary(&far, home.path(), &["domain=example.com".into()], script);
    let t = text(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("local 200"),
        "{t}"
    );
    // Something listening on loopback outside the jail is not.
    let port = far
        .in_near(|| {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let p = l.local_addr().unwrap().port();
            std::mem::forget(l);
            p
        })
        .unwrap();
    let script = format!("curl -sS --noproxy '*' http://127.0.0.1:{port}/; echo \"outside=$?\"");
    let out = boundary(&far, home.path(), &["domain=example.com".into()], &script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("outside=7"),
        "{}",
        text(&out)
    );
}

/// Issue 17 item 3: proxy-aware clients reach a server the jailed command started on loopback
/// directly (`NO_PROXY` lists loopback), without `--noproxy`: the server's answer, not the
/// proxy's 403 page. A loopback server that is not the jail's stays unreachable with the same
/// environment (the connect supervisor refuses it), and the proxy is not asked either.
#[test]
fn landjail_loopback_skips_the_proxy() {
    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("m.txt"), "jail-server-answer\n").unwrap();
    // A web server outside the jail on near loopback, answering with a marker of its own.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("m.txt"), "outside-server-answer\n").unwrap();
    let outside_port: u16 = 18131;
    let mut host_server = far
        .near_command("python3")
        .args([
            "-m",
            "http.server",
            &outside_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(outside.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server in the near namespace");
    far.in_near(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, outside_port)).is_err() {
            assert!(Instant::now() < deadline, "near web server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .unwrap();
    let dir = site.path().display();
    let script = format!(
        "echo \"no_proxy=$no_proxy NO_PROXY=$NO_PROXY\"\n\
         python3 -m http.server 18129 --bind 127.0.0.1 --directory {dir} >/dev/null 2>&1 &\n\
         python3 -m http.server 18130 --bind ::1 --directory {dir} >/dev/null 2>&1 &\n\
         for i in $(seq 200); do curl -s --noproxy '*' -o /dev/null http://127.0.0.1:18129/ \
           && curl -s --noproxy '*' -o /dev/null 'http://[::1]:18130/' && break; sleep 0.1; done\n\
         echo \"localhost=$(curl -sS http://localhost:18129/m.txt)\"\n\
         echo \"v4=$(curl -sS http://127.0.0.1:18129/m.txt)\"\n\
         echo \"v6=$(curl -sS 'http://[::1]:18130/m.txt')\"\n\
         python3 -c \"import urllib.request as u; print('python=' + u.urlopen('http://localhost:18129/m.txt').read().decode().strip())\"\n\
         curl -sS http://127.0.0.1:{outside_port}/m.txt; echo \"outside=$?\"\n\
         kill %1 %2\n"
    );
    let out = boundary(&far, home.path(), &["domain=example.com".into()], &script);
    let _ = host_server.kill();
    let _ = host_server.wait();
    let t = text(&out);
    let wants = [
        "no_proxy=localhost,127.0.0.1,::1 NO_PROXY=localhost,127.0.0.1,::1",
        "localhost=jail-server-answer",
        "v4=jail-server-answer",
        "v6=jail-server-answer",
        "python=jail-server-answer",
        "outside=7",
    ];
    assert_all_in(&out, &wants, &t);
    assert!(!t.contains("outside-server-answer"), "{t}");
    assert!(!t.contains("Request Blocked by Boundary"), "{t}");
}

/// landjail is for hosts without namespaces, where boundary runs as an ordinary user.
#[test]
fn landjail_works_for_an_unprivileged_user() {
    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    nix::unistd::chown(
        home.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let v4 = far.far_v4;
    let script = format!(
        "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; \
         curl -sS --max-time 10 http://example.invalid/ | head -1; \
         curl -sS --max-time 5 --noproxy '*' http://{v4}:{PROXY_PORT}/; echo \"direct=$?\"; \
         python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\" 2>/dev/null; echo \"udp=$?\""
    );
    let out = far
        .near_command("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(boundary_binary().expect("boundary binary"))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT])
        .arg("--log-proxy-socket-path")
        .arg(home.path().join("audit.sock"))
        .args(["--allow", "domain=example.com", "--", "sh", "-c", &script])
        .output()
        .expect("setpriv (util-linux) and boundary");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let wants = [
        "65534",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Request Blocked by Boundary",
        "direct=7",
        "udp=1",
    ];
    assert_all_in(&out, &wants, &t);
    far.assert_nothing_escaped(Counters::default(), &t);
}

/// On a terminal the target is the foreground process group: Ctrl-C reaches it (and boundary
/// exits 130 like the target), job control sees it in the foreground.
#[test]
fn landjail_target_owns_the_terminal() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;

    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let script = "ps -o pid=,pgid=,tpgid= -p $$; echo ready; exec sleep 300";
    let mut cmd = far.near_command(boundary_binary().expect("boundary binary"));
    cmd.env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT])
        .args(["--log-level", "error", "--allow", "domain=example.com"])
        .args(["--", "sh", "-c", script])
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: signal, setsid and TIOCSCTTY are async-signal-safe syscalls (the last on fd 0,
    // the pty slave). SIGINT back to its default, as in a terminal's shell: a test runner
    // started in the background has it ignored, and the target would inherit that.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::signal(nix::libc::SIGINT, nix::libc::SIG_DFL);
            if nix::libc::setsid() < 0 || nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("boundary on a pty");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("ready") {
        let n = master.read(&mut buf).expect("reading the pty");
        assert!(n > 0, "pty closed before the target was ready: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let ids: Vec<&str> = seen.split_whitespace().take(2).collect();
    assert_eq!(ids.len(), 2, "{seen}");
    assert_eq!(
        ids[0], ids[1],
        "the target is not the terminal's foreground group: {seen}"
    );
    master.write_all(b"\x03").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C did not end the target: {seen}"
    );
}

/// SIGTERM to boundary reaches the jailed command, whose own exit code boundary returns.
#[test]
fn landjail_forwards_sigterm() {
    use std::io::{BufRead, BufReader};

    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let mut child = far
        .near_command(boundary_binary().expect("boundary binary"))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT])
        .args([
            "--log-level",
            "error",
            "--allow",
            "domain=example.com",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // `ip netns exec` execs boundary, so the child's pid is boundary's. Wait until boundary
    // handles SIGTERM (its supervision has started), as a supervisor killing it later would.
    let status = format!("/proc/{}/status", child.id());
    loop {
        let text = std::fs::read_to_string(&status).unwrap();
        let caught = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (15 - 1)) != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

/// If boundary itself is killed, the jailed command does not live on unsupervised.
#[test]
fn landjail_target_dies_with_boundary() {
    use std::io::{BufRead, BufReader};

    let far = FarHost::new().expect("far host");
    let home = tempfile::tempdir().unwrap();
    let mut child = far
        .near_command(boundary_binary().expect("boundary binary"))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .args(["--jail-type", "landjail", "--proxy-port", PROXY_PORT])
        .args([
            "--log-level",
            "error",
            "--allow",
            "domain=example.com",
            "--",
        ])
        .args(["sh", "-c", "echo $$; exec sleep 300"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let target: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{target}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        if state.is_empty() || state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jailed command outlived boundary: {state}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every one of `wants` is in the run's stdout (`t`: both streams, for the message).
fn assert_all_in(out: &Output, wants: &[&str], t: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in wants {
        assert!(stdout.contains(want), "missing {want:?}:\n{t}");
    }
}
