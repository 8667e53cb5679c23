//! The Unix socket policy, attacked from inside both jails, as root and as an unprivileged user
//! (issue 11 item 4, issue 12 item 6): filesystem Unix sockets of host services must not lead
//! out of the jail.
//!
//! Outside the jail, in the namespace boundary runs in, the test starts:
//! - a relay: a Unix socket that forwards every connection to the far host (counters move when
//!   the test itself uses it: the positive control);
//! - a Docker-socket stand-in `docker.sock`, group-owned by a supplementary group of the test
//!   user (mode 0660, so the kernel's own permission check lets the user in), also reached
//!   through a hard link and a bind mount of its file, and a second one bound as
//!   `docker.sock` and then renamed;
//! - an SSH-agent-like echo socket the configuration allows;
//! - a stand-in for the Coder agent's audit socket, renamed and re-created while the jail runs.
//!
//! Inside the jail a Python script connects to each, and hard-links the Docker stand-in into an
//! allowed directory and onto an allowed path (an allow entry goes by the listener's bound
//! name, not by the path the jail made). Everything but the allowed socket and a
//! socket the jail creates itself must fail with `EACCES`, even with `unix_socket_default:
//! allow` for the runtime and agent sockets, and boundary logs each refusal with the path.

mod nsjail_common;
use nsjail_common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// The supplementary group that opens the Docker stand-in to the test user.
const GROUP: &str = "boundary-test-dock";

const PROBE: &str = r#"
import errno, json, os, socket, sys, threading, time
cfg = json.loads(sys.argv[1])

def attempt(name, path, payload=b"ping\n"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
    except OSError as e:
        print("%s=%s" % (name, errno.errorcode.get(e.errno, e.errno)), flush=True)
        return
    try:
        s.sendall(payload)
        data = s.recv(200)
        print("%s=open:%s" % (name, data.decode(errors="replace").strip()), flush=True)
    except OSError as e:
        print("%s=open-then-%s" % (name, errno.errorcode.get(e.errno, e.errno)), flush=True)

def own_server():
    path = os.path.join(cfg["own_dir"], "own-%d.sock" % os.getpid())
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    def serve():
        c, _ = srv.accept()
        c.sendall(b"own:" + c.recv(100))
        c.close()
    threading.Thread(target=serve, daemon=True).start()
    attempt("own", path)

attempt("relay", cfg["relay"], b"GET / HTTP/1.0\r\n\r\n")
for name in ["docker", "docker_hardlink", "docker_bindmount", "docker_renamed"]:
    attempt(name, cfg[name])
attempt("allowed", cfg["allowed"])
# Docker's socket hard-linked by the jail into an allowed directory and onto an allowed path.
for name, target in [("docker_linked_in", "linked.sock"), ("docker_linked_as", "app.sock")]:
    p = os.path.join(cfg["own_dir"], target)
    try:
        os.link(cfg["docker"], p)
    except OSError as e:
        print("%s=link-%s" % (name, errno.errorcode.get(e.errno, e.errno)), flush=True)
        continue
    attempt(name, p)
own_server()
attempt("agent", cfg["agent"])
open(os.path.join(cfg["own_dir"], "phase1"), "w").close()
for _ in range(600):
    if os.path.exists(os.path.join(cfg["own_dir"], "phase2")):
        break
    time.sleep(0.05)
attempt("agent_recreated", cfg["agent"])
attempt("agent_renamed", cfg["agent_renamed"])
"#;

/// A Unix listener that answers every client that sends something with `reply`, and counts
/// them.
fn serve(l: UnixListener, reply: &'static str) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            // Counted when a client sent something (the supervisor's own look at a listener
            // outside its network namespace connects and sends nothing).
            if c.read(&mut [0u8; 200]).is_ok_and(|n| n > 0) {
                n2.fetch_add(1, Ordering::SeqCst);
                let _ = c.write_all(reply.as_bytes());
            }
        }
    });
    n
}

/// The agent stand-in: takes whatever boundary forwards.
fn sink(l: UnixListener) {
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || std::io::copy(&mut &c, &mut std::io::sink()));
        }
    });
}

fn listen(path: &Path, mode: u32) -> UnixListener {
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    l
}

/// A relay on a Unix socket to the far host's port 80, started in the near namespace.
fn relay(far: &FarHost, path: PathBuf) {
    let target = (far.far_v4, 80);
    let l = listen(&path, 0o777);
    far.in_near(move || {
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Ok(up) = TcpStream::connect(target) else {
                    continue;
                };
                let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut up2);
                    let _ = up2.shutdown(Shutdown::Write);
                });
                let (mut up, mut c) = (up, c);
                let _ = std::io::copy(&mut up, &mut c);
                let _ = c.shutdown(Shutdown::Both);
            }
        });
    })
    .unwrap();
}

fn ensure_group(uid_user: &str) {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    *done = true;
    let _ = Command::new("groupadd")
        .arg(GROUP)
        .stderr(std::process::Stdio::null())
        .status();
    let st = Command::new("usermod")
        .args(["-aG", GROUP, uid_user])
        .status()
        .unwrap();
    assert!(st.success(), "usermod -aG {GROUP} {uid_user}");
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
}

fn unix_sockets_do_not_lead_out(jail: &str, who: As) {
    let far = FarHost::new().unwrap();
    let config = config_home(who);
    let dir = shared_tempdir();
    let d = dir.path();
    test_user();
    ensure_group(TEST_USER);
    let gid = gid_of(GROUP);

    relay(&far, d.join("relay.sock"));
    // The Docker stand-in and its other names.
    let docker_path = d.join("docker.sock");
    let docker = serve(listen(&docker_path, 0o660), "docker-stand-in");
    std::os::unix::fs::chown(&docker_path, Some(0), Some(gid)).unwrap();
    std::fs::hard_link(&docker_path, d.join("hardlink")).unwrap();
    let bind_target = d.join("bindmount");
    std::fs::write(&bind_target, "").unwrap();
    let st = Command::new("mount")
        .arg("--bind")
        .arg(&docker_path)
        .arg(&bind_target)
        .status()
        .unwrap();
    assert!(st.success(), "mount --bind of the stand-in socket");
    let _unmount = Unmount(bind_target.clone());
    std::fs::create_dir(d.join("sub")).unwrap();
    let second = d.join("sub/docker.sock");
    let docker2 = serve(listen(&second, 0o777), "docker-stand-in-2");
    std::fs::rename(&second, d.join("renamed.sock")).unwrap();
    // An allowed, SSH-agent-like socket.
    let allowed = serve(listen(&d.join("agent-like.sock"), 0o777), "allowed-echo");
    // The agent's audit socket (boundary connects to it itself).
    let agent_path = config.path().join("audit.sock");
    sink(listen(&agent_path, 0o777));
    let own_dir = d.join("own");
    std::fs::create_dir(&own_dir).unwrap();
    std::fs::set_permissions(&own_dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    // Positive controls, outside the jail: the relay reaches the far host, and the test user
    // may connect to the stand-in through its supplementary group.
    far.reset_counters().unwrap();
    let relay_path = d.join("relay.sock");
    let got = far
        .in_near(move || {
            let mut s = UnixStream::connect(relay_path).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .unwrap();
    assert!(got.contains("far-host"), "relay control: {got:?}");
    assert!(
        far.counters().unwrap().total() > 0,
        "relay control moved no counter"
    );
    let control = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "python3", "-c"])
        .arg("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'x'); print(s.recv(50).decode())")
        .arg(&docker_path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&control.stdout).contains("docker-stand-in"),
        "group control: {}",
        text(&control)
    );
    let docker_before = docker.load(Ordering::SeqCst);
    far.reset_counters().unwrap();

    // Rename and re-create the agent's socket once the jail has tried it.
    let (phase1, phase2) = (own_dir.join("phase1"), own_dir.join("phase2"));
    let agent_renamed = config.path().join("audit-renamed.sock");
    let (ap, ar) = (agent_path.clone(), agent_renamed.clone());
    let swapper = thread::spawn(move || {
        for _ in 0..1200 {
            if phase1.exists() {
                std::fs::rename(&ap, &ar).unwrap();
                sink(listen(&ap, 0o777));
                std::fs::write(&phase2, "").unwrap();
                return true;
            }
            thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    });

    let s = |p: PathBuf| format!("\"{}\"", p.display());
    let cfg = format!(
        "{{\"relay\": {}, \"docker\": {}, \"docker_hardlink\": {}, \"docker_bindmount\": {}, \
         \"docker_renamed\": {}, \"allowed\": {}, \"agent\": {}, \"agent_renamed\": {}, \"own_dir\": {}}}",
        s(d.join("relay.sock")),
        s(docker_path.clone()),
        s(d.join("hardlink")),
        s(bind_target.clone()),
        s(d.join("renamed.sock")),
        s(d.join("agent-like.sock")),
        s(agent_path.clone()),
        s(agent_renamed.clone()),
        s(own_dir.clone()),
    );
    let script = d.join("probe.py");
    std::fs::write(&script, PROBE).unwrap();
    let allow_dir = format!("{}/", config.path().display());
    let prefix = ["ip", "netns", "exec", far.near.as_str()];
    let o = boundary_cmd(who, config.path(), &prefix)
        .args(["--jail-type", jail, "--log-level", "warn"])
        .args(["--unix-socket-allow"])
        .arg(d.join("agent-like.sock"))
        // Allowing the agent's directory must not open the agent's socket.
        .args(["--unix-socket-allow", &allow_dir])
        // A directory and a path the jail can write to: what it links there stays what it was.
        .arg("--unix-socket-allow")
        .arg(format!("{}/", own_dir.display()))
        .arg("--unix-socket-allow")
        .arg(own_dir.join("app.sock"))
        .args(["--", "python3"])
        .arg(&script)
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let recreated = swapper.join().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let t = text(&o);
    assert!(o.status.success(), "{jail} {who:?}: {t}");

    for name in [
        "relay",
        "docker",
        "docker_hardlink",
        "docker_bindmount",
        "docker_renamed",
        "agent_recreated",
    ] {
        assert_eq!(
            field(&out, name),
            Some("EACCES"),
            "{jail} {who:?} {name}: {t}"
        );
    }
    // nsjail also covers the agent's socket with a mount (/dev/null: "not a socket"), which
    // moves with it when it is renamed.
    let hidden = |name: &str| match (jail, field(&out, name)) {
        (_, Some("EACCES")) => true,
        ("nsjail", Some("ECONNREFUSED")) => false,
        (_, other) => panic!("{jail} {who:?} {name}: {other:?}: {t}"),
    };
    let agent_logged = hidden("agent");
    let renamed_logged = hidden("agent_renamed");
    assert_eq!(field(&out, "allowed"), Some("open:allowed-echo"), "{t}");
    // A link the jail made (or could not make: Landlock refuses links across directories for
    // an unprivileged landjail) never opens the socket it names.
    for name in ["docker_linked_in", "docker_linked_as"] {
        let got = field(&out, name).unwrap_or_else(|| panic!("{name} not tried: {t}"));
        assert!(
            !got.starts_with("open"),
            "{jail} {who:?} {name}: {got}: {t}"
        );
    }
    assert_eq!(field(&out, "own"), Some("open:own:ping"), "{t}");
    // Counted since the reset before the run; the positive control then reaches the far host.
    far.assert_nothing_escaped(
        Counters::default(),
        &format!("{jail} {who:?}: the relay carried traffic out"),
    );
    assert_eq!(
        docker.load(Ordering::SeqCst),
        docker_before,
        "stand-in reached"
    );
    assert_eq!(
        docker2.load(Ordering::SeqCst),
        0,
        "renamed stand-in reached"
    );
    assert!(recreated, "the jail never reached phase 1: {t}");
    let _ = allowed;
    // Every refusal is logged with the path the jail asked for.
    let mut logged = vec![
        d.join("relay.sock"),
        docker_path,
        d.join("hardlink"),
        bind_target,
        d.join("renamed.sock"),
    ];
    if agent_logged {
        logged.push(agent_path);
    }
    if renamed_logged {
        logged.push(agent_renamed);
    }
    for p in logged {
        let shown = p.display().to_string();
        assert!(
            err.lines()
                .any(|l| l.contains("refused a connect to a Unix socket") && l.contains(&shown)),
            "{jail} {who:?}: no refusal logged for {shown}: {t}"
        );
    }
}

#[test]
fn nsjail_as_root() {
    unix_sockets_do_not_lead_out("nsjail", As::Root);
}

#[test]
fn nsjail_as_user() {
    unix_sockets_do_not_lead_out("nsjail", As::User);
}

#[test]
fn landjail_as_root() {
    unix_sockets_do_not_lead_out("landjail", As::Root);
}

#[test]
fn landjail_as_user() {
    unix_sockets_do_not_lead_out("landjail", As::User);
}

const DEFAULT_ALLOW_PROBE: &str = r#"
import errno, json, socket, sys
cfg = json.loads(sys.argv[1])
for name, path in cfg.items():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(b"ping\n")
        print("%s=open:%s" % (name, s.recv(100).decode(errors="replace").strip()), flush=True)
    except OSError as e:
        print("%s=%s" % (name, errno.errorcode.get(e.errno, e.errno)), flush=True)
"#;

/// With `unix_socket_default: allow`, runtime sockets stay refused under any name, also when
/// their listener lives in another network namespace than boundary (the Docker socket of the
/// host mounted into a workspace container): here the listeners are in the test's namespace
/// and boundary runs in the near one.
fn runtime_sockets_stay_refused_with_default_allow(jail: &str) {
    let far = FarHost::new().unwrap();
    let config = config_home(As::Root);
    let dir = shared_tempdir();
    let d = dir.path();
    let plain = serve(listen(&d.join("plain.sock"), 0o777), "plain-service");
    let docker_path = d.join("docker.sock");
    let docker = serve(listen(&docker_path, 0o777), "docker-stand-in");
    std::fs::hard_link(&docker_path, d.join("hardlink")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let docker2 = serve(listen(&d.join("sub/docker.sock"), 0o777), "docker-2");
    std::fs::rename(d.join("sub/docker.sock"), d.join("renamed.sock")).unwrap();
    let s = |p: PathBuf| format!("\"{}\"", p.display());
    let cfg = format!(
        "{{\"plain\": {}, \"docker\": {}, \"docker_hardlink\": {}, \"docker_renamed\": {}}}",
        s(d.join("plain.sock")),
        s(docker_path),
        s(d.join("hardlink")),
        s(d.join("renamed.sock")),
    );
    let script = d.join("probe.py");
    std::fs::write(&script, DEFAULT_ALLOW_PROBE).unwrap();
    let prefix = ["ip", "netns", "exec", far.near.as_str()];
    let o = boundary_cmd(As::Root, config.path(), &prefix)
        .args(["--jail-type", jail, "--log-level", "warn"])
        .args(["--unix-socket-default", "allow", "--", "python3"])
        .arg(&script)
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let t = text(&o);
    assert_eq!(
        field(&out, "plain"),
        Some("open:plain-service"),
        "{jail}: {t}"
    );
    for name in ["docker", "docker_hardlink", "docker_renamed"] {
        assert_eq!(field(&out, name), Some("EACCES"), "{jail} {name}: {t}");
    }
    assert_eq!(plain.load(Ordering::SeqCst), 1, "{t}");
    assert_eq!(docker.load(Ordering::SeqCst), 0, "stand-in reached: {t}");
    assert_eq!(
        docker2.load(Ordering::SeqCst),
        0,
        "renamed stand-in reached: {t}"
    );
}

#[test]
fn nsjail_runtime_sockets_refused_with_default_allow() {
    runtime_sockets_stay_refused_with_default_allow("nsjail");
}

#[test]
fn landjail_runtime_sockets_refused_with_default_allow() {
    runtime_sockets_stay_refused_with_default_allow("landjail");
}
