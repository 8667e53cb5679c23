//! nsjail where user namespaces are forbidden (issue 14 item 6): as a container runtime does,
//! a seccomp filter installed by root without `no_new_privs` refuses `unshare`/`clone` with
//! `CLONE_NEWUSER` (EPERM) and `clone3` (ENOSYS) for boundary and everything it starts; the
//! host's sysctls are not touched (other tests run in parallel). Then boundary builds the jail
//! without a user namespace through passwordless sudo, or through file capabilities on a copy of
//! its binary, and the target still runs as the calling user with no capabilities, behind the
//! proxy; with neither, the error names the three ways out.
//!
//! Needs root (to create the users, the sudoers entry and the filter) and Debian `sudo`,
//! `libcap2-bin` (setcap) and `python3` (the wrapper). Each is checked and its absence fails
//! the test with the reason.

mod nsjail_common;
use nsjail_common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The user with passwordless sudo (never `TEST_USER`: other tests rely on it having none).
const SUDO_USER: &str = "boundary-sudo";
/// A supplementary group of `SUDO_USER`, to see groups reach the target.
const EXTRA_GROUP: &str = "boundary-sudo-extra";

/// Installs a seccomp filter refusing new user namespaces, then execs argv[1:].
const NO_USERNS: &str = r#"
import ctypes, os, platform, struct, sys
AUDIT, CLONE, UNSHARE, CLONE3 = {
    "x86_64": (0xC000003E, 56, 272, 435),
    "aarch64": (0xC00000B7, 220, 97, 435),
}[platform.machine()]
CLONE_NEWUSER, EPERM, ENOSYS = 0x10000000, 1, 38
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
def ins(code, jt, jf, k): return struct.pack("HBBI", code, jt, jf, k)
prog = b"".join([
    ins(LD, 0, 0, 4), ins(JEQ, 1, 0, AUDIT), ins(RET, 0, 0, ALLOW),
    ins(LD, 0, 0, 0),
    ins(JEQ, 0, 1, CLONE3), ins(RET, 0, 0, ERRNO | ENOSYS),
    ins(JEQ, 1, 0, CLONE), ins(JEQ, 0, 3, UNSHARE),
    ins(LD, 0, 0, 16), ins(JSET, 0, 1, CLONE_NEWUSER), ins(RET, 0, 0, ERRNO | EPERM),
    ins(RET, 0, 0, ALLOW),
])
buf = ctypes.create_string_buffer(prog)
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(fp), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    sys.exit("installing the seccomp filter: errno %d" % ctypes.get_errno())
os.execvp(sys.argv[1], sys.argv[1:])
"#;

/// What the jail reports about itself, then the writes it must not make and the one it may.
const IDENTITY: &str = r#"
echo "uid=$(id -u) gid=$(id -g) groups=[$(id -G)]"
grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status
grep -E '^NoNewPrivs' /proc/self/status
echo "uidmap=[$(cat /proc/self/uid_map | tr -s ' ')]"
touch /etc/boundary-sudo14-escape 2>/dev/null && echo wrote-etc
touch /usr/boundary-sudo14-escape 2>/dev/null && echo wrote-usr
touch "$HOME/boundary-sudo14-ok" && echo wrote-home
command -v nft >/dev/null && echo have-nft
nft flush ruleset 2>/dev/null && echo flushed-ruleset
ip link add bnd-probe type dummy 2>/dev/null && echo added-link
test -d "$XDG_CONFIG_HOME/coder_boundary" && echo have-config-dir
touch "$XDG_CONFIG_HOME/coder_boundary/probe" 2>/dev/null && echo wrote-config
python3 - "$HOST_SOCKETS" <<'PY'
import socket, sys
d = sys.argv[1]
for name, kind in (("stream", socket.SOCK_STREAM), ("dgram", socket.SOCK_DGRAM)):
    path = d + "/" + name + ".sock"
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.connect(path)
        else:
            s.sendto(b"escape", path)
        print("host-unix", name, "reached")
    except OSError as e:
        print("host-unix", name, "refused", e.errno)
PY
"#;

fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: install Debian `{package}` (scripts/test.sh does)"
    );
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
}

/// `SUDO_USER` with passwordless sudo and `EXTRA_GROUP`; returns its uid.
fn sudo_user() -> u32 {
    require_root().unwrap();
    require("sudo", "sudo");
    let exists = |args: &[&str]| {
        Command::new("getent")
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    };
    if !exists(&["group", EXTRA_GROUP]) {
        let _ = Command::new("groupadd").arg(EXTRA_GROUP).status();
    }
    if !exists(&["passwd", SUDO_USER]) {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-G", EXTRA_GROUP, SUDO_USER])
            .status();
    }
    run_ok(Command::new("usermod").args(["-aG", EXTRA_GROUP, SUDO_USER]));
    let sudoers = Path::new("/etc/sudoers.d/boundary-sudo-test");
    if !sudoers.exists() {
        let tmp = sudoers.with_extension("tmp");
        std::fs::write(&tmp, format!("{SUDO_USER} ALL=(ALL) NOPASSWD: ALL\n")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o440)).unwrap();
        std::fs::rename(&tmp, sudoers).unwrap();
    }
    run_ok(Command::new("runuser").args(["-u", SUDO_USER, "--", "sudo", "-n", "true"]));
    let out = Command::new("id").args(["-u", SUDO_USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `boundary FLAGS -- sh -c SCRIPT` as `user` under the no-user-namespace filter, from `bin`,
/// with `prefix` (e.g. `ip netns exec near`) in front.
fn run_forbidden(
    prefix: &[&str],
    user: &str,
    bin: &Path,
    config: &Path,
    flags: &[String],
    script: &str,
) -> Output {
    let wrapper = config.join("no-userns.py");
    std::fs::write(&wrapper, NO_USERNS).unwrap();
    let mut parts: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    parts.extend(["python3".into(), wrapper.display().to_string()]);
    parts.extend(["runuser", "-u", user, "--", "env"].map(String::from));
    parts.push(format!("PATH={PATH}"));
    parts.push(format!("XDG_CONFIG_HOME={}", config.display()));
    parts.push(format!("XDG_STATE_HOME={}", config.display()));
    parts.push(format!("HOME=/home/{user}"));
    parts.push(format!(
        "CODER_AGENT_BOUNDARY_LOG_PROXY_SOCKET_PATH={}/audit.sock",
        config.display()
    ));
    parts.push(bin.display().to_string());
    Command::new(&parts[0])
        .args(&parts[1..])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A config home owned by `uid`.
fn config_for(uid: u32) -> tempfile::TempDir {
    let d = shared_tempdir();
    std::os::unix::fs::chown(d.path(), Some(uid), Some(uid)).unwrap();
    d
}

/// `user`'s identity outside the jail, as the jail's script prints its own.
fn identity_of(user: &str) -> String {
    let o = Command::new("runuser")
        .args([
            "-u",
            user,
            "--",
            "sh",
            "-c",
            "echo \"uid=$(id -u) gid=$(id -g) groups=[$(id -G)]\"",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The identity, the proxy and the writes, for a jail built without a user namespace by
/// `user` (uid `uid`) from `bin`.
fn jail_holds(user: &str, uid: u32, bin: &Path) {
    let fx = Fixture::start();
    let config = config_for(uid);
    let mut flags = fx.flags(&["domain=fixture.test path=/allowed.txt"]);
    flags[1] = "warn".into();
    // Host services the jail must not reach (the connect supervisor decides, as always).
    let host = shared_tempdir();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stream = std::os::unix::net::UnixListener::bind(host.path().join("stream.sock")).unwrap();
    let dgram = std::os::unix::net::UnixDatagram::bind(host.path().join("dgram.sock")).unwrap();
    for name in ["stream.sock", "dgram.sock"] {
        let mode = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(host.path().join(name), mode).unwrap();
    }
    let script = format!(
        "HOST_SOCKETS={}\n{IDENTITY}\necho \"allowed=[$(curl -sS --max-time 20 https://fixture.test:{p}/allowed.txt)]\"\n\
         echo \"denied=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 20 https://fixture.test:{p}/denied.txt)\"\n",
        host.path().display(),
        p = fx.https_port
    );
    let o = run_forbidden(&[], user, bin, config.path(), &flags, &script);
    stream.set_nonblocking(true).unwrap();
    dgram.set_nonblocking(true).unwrap();
    let reached = stream.accept().is_ok() || dgram.recv(&mut [0u8; 16]).is_ok();
    // Positive control: the same sockets answer from outside the jail.
    std::os::unix::net::UnixStream::connect(host.path().join("stream.sock")).unwrap();
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{t}");
    let outside = identity_of(user);
    assert!(outside.starts_with(&format!("uid={uid} ")), "{outside}");
    assert!(
        out.contains(&outside),
        "the target is not the calling user ({outside}) with its groups:\n{t}"
    );
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set}:\n{t}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{t}");
    // No user namespace: the initial identity map.
    assert!(out.contains("uidmap=[ 0 0 4294967295]"), "{t}");
    assert!(
        !out.contains("wrote-etc") && !out.contains("wrote-usr"),
        "{t}"
    );
    assert!(out.contains("wrote-home"), "{t}");
    // The helper's capabilities did not reach the target: the jail's netfilter stays.
    assert!(out.contains("have-nft"), "{t}");
    assert!(
        !out.contains("flushed-ruleset") && !out.contains("added-link"),
        "{t}"
    );
    // boundary's own files stay read-only, host Unix sockets stay out of reach.
    assert!(
        out.contains("have-config-dir") && !out.contains("wrote-config"),
        "{t}"
    );
    assert!(!reached, "a host Unix socket received something:\n{t}");
    assert!(
        out.contains("host-unix stream refused") && out.contains("host-unix dgram refused"),
        "{t}"
    );
    assert!(out.contains(&format!("allowed=[{ALLOWED_BODY}]")), "{t}");
    assert!(out.contains("denied=403"), "{t}");
    assert!(
        err.contains("decision=\"deny\"") && err.contains("/denied.txt"),
        "the denied request is not audited:\n{t}"
    );
}

#[test]
fn passwordless_sudo_builds_the_jail_without_a_user_namespace() {
    let uid = sudo_user();
    jail_holds(SUDO_USER, uid, &boundary_binary().unwrap());
}

#[test]
fn through_sudo_nothing_reaches_the_far_host() {
    let uid = sudo_user();
    let far = FarHost::new().unwrap();
    let baseline = far.counters().unwrap();
    let config = config_for(uid);
    let probe = format!(
        r#"
import socket
for fam, host in ((socket.AF_INET, "{v4}"), (socket.AF_INET6, "{v6}")):
    for port in (80, 22, 443):
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
        try:
            s.connect((host, port)); s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); s.recv(100)
        except OSError: pass
    for port in (53, 123, 5000):
        u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(1)
        try:
            u.sendto(b"escape", (host, port)); u.recv(100)
        except OSError: pass
print("probes-done")
"#,
        v4 = far.far_v4,
        v6 = far.far_v6
    );
    let near = far.near_path();
    let near_name = near.rsplit('/').next().unwrap();
    let flags = ["--log-level".to_string(), "error".into()];
    let script = format!("id -u; python3 -c '{}'", probe.replace('\'', "'\\''"));
    let o = run_forbidden(
        &["ip", "netns", "exec", near_name],
        SUDO_USER,
        &boundary_binary().unwrap(),
        config.path(),
        &flags,
        &script,
    );
    let t = text(&o);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("probes-done"),
        "{t}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("{uid}\n")),
        "{t}"
    );
    far.assert_nothing_escaped(baseline, &t);
}

#[test]
fn file_capabilities_build_the_jail_without_sudo() {
    require_root().unwrap();
    require("setcap", "libcap2-bin");
    let uid = test_user();
    // TEST_USER has no sudo: only the copy's file capabilities can make it work.
    let no_sudo = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "sh", "-c", "sudo -n true"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !no_sudo.success(),
        "{TEST_USER} must not have passwordless sudo"
    );
    let dir = shared_tempdir();
    let copy: PathBuf = dir.path().join("boundary");
    std::fs::copy(boundary_binary().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_ok(
        Command::new("setcap")
            .arg("cap_sys_admin,cap_net_admin+p")
            .arg(&copy),
    );
    jail_holds(TEST_USER, uid, &copy);
    // Where user namespaces work, `--no-user-namespace` takes the same route directly.
    let config = config_for(uid);
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", TEST_USER, "--", "env"])
        .arg(format!("XDG_CONFIG_HOME={}", config.path().display()))
        .arg(format!("XDG_STATE_HOME={}", config.path().display()))
        .arg(format!("HOME=/home/{TEST_USER}"))
        .arg(&copy)
        .args(["--log-level", "error", "--no-user-namespace", "--"])
        .args([
            "sh",
            "-c",
            "id -u; grep CapEff /proc/self/status; cat /proc/self/uid_map",
        ])
        .stdin(Stdio::null());
    let o = cmd.output().unwrap();
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.starts_with(&format!("{uid}\n")),
        "{t}"
    );
    assert!(
        out.contains("CapEff:\t0000000000000000") && out.contains("4294967295"),
        "{t}"
    );

    // boundary's own process (the proxy) dropped the file's capabilities at start.
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", TEST_USER, "--", "env"])
        .arg(format!("XDG_CONFIG_HOME={}", config.path().display()))
        .arg(format!("XDG_STATE_HOME={}", config.path().display()))
        .arg(format!("HOME=/home/{TEST_USER}"))
        .arg(&copy)
        .args(["--log-level", "error", "--no-user-namespace", "--"])
        .args(["sh", "-c", "echo ready; read x"])
        .stdin(Stdio::piped());
    let mut child = spawn_ready(&mut cmd, "ready");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let boundary_pid = children.split_whitespace().next().expect("boundary's pid");
    let status = std::fs::read_to_string(format!("/proc/{boundary_pid}/status")).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
    assert!(status.contains("Name:\tboundary"), "{status}");
    for set in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert!(
            status.contains(&format!("{set}:\t0000000000000000")),
            "boundary's main process kept capabilities ({set}):\n{status}"
        );
    }
}

/// Plays a caller that runs a binary with file capabilities as the namespace helper itself, with
/// its own `ip` and `nft` first on PATH (they would run with CAP_NET_ADMIN), and sends a crafted
/// request: a plain one, then the test hook that leaves netfilter out. Prints the helper's reply
/// kind and text for each.
const CRAFTED: &str = r#"
import os, socket, struct, subprocess, sys
helper, tools = sys.argv[1], sys.argv[2]
def b(x): return struct.pack(">I", len(x)) + x
def u(n): return b(struct.pack(">I", n))
env = dict(os.environ, PATH=tools + ":/usr/sbin:/usr/bin:/sbin:/bin")
for skip in (0, 1):
    # program, args, env, env_remove, port, user_namespace=0, hide, read-only, writable=None,
    # tty=None, skip_netfilter, nested_sandboxes=0
    p = (b(b"/bin/true") + u(0) + u(0) + u(0) + u(8087) + u(0) + u(0) + u(0) + u(0) + u(0)
         + u(skip) + u(0))
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([helper, "__boundary-nsjail-helper", str(theirs.fileno())],
                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
    theirs.close()
    ours.sendall(struct.pack(">I", len(p)) + p)
    reply = ours.recv(65536)
    text = reply[5:].decode(errors="replace").replace("\n", " ")
    print("skip=%d reply=%s %s" % (skip, reply[4:5].decode(), text[:400]))
    ours.close()
    proc.wait(timeout=60)
"#;

#[test]
fn a_capable_helper_runs_no_tool_or_hook_its_caller_chooses() {
    require_root().unwrap();
    require("setcap", "libcap2-bin");
    let uid = test_user();
    let dir = config_for(uid);
    let copy: PathBuf = dir.path().join("boundary");
    std::fs::copy(boundary_binary().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_ok(
        Command::new("setcap")
            .arg("cap_sys_admin,cap_net_admin+p")
            .arg(&copy),
    );
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    std::os::unix::fs::chown(&marks, Some(uid), Some(uid)).unwrap();
    // The caller's own `ip` and `nft`, first on the helper's PATH.
    let tools = dir.path().join("callers-tools");
    std::fs::create_dir(&tools).unwrap();
    for name in ["ip", "nft"] {
        let tool = tools.join(name);
        std::fs::write(
            &tool,
            format!(
                "#!/bin/sh\ngrep CapEff /proc/self/status > {}/ran-$$\ncat >/dev/null\n",
                marks.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = dir.path().join("crafted.py");
    std::fs::write(&script, CRAFTED).unwrap();
    let o = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "python3"])
        .arg(&script)
        .arg(&copy)
        .arg(&tools)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    let ran: Vec<_> = std::fs::read_dir(&marks).unwrap().flatten().collect();
    assert!(
        ran.is_empty(),
        "the helper ran the caller's tool with its capabilities ({} times):\n{t}",
        ran.len()
    );
    // The jail itself is built (its links and rules are the helper's own netlink requests) ...
    assert!(out.contains("skip=0 reply=R"), "{t}");
    // ... but never without its netfilter rules.
    assert!(
        out.contains("skip=1 reply=F") && out.contains("insecure test hook"),
        "{t}"
    );
}

#[test]
fn without_sudo_or_capabilities_the_error_names_the_three_ways() {
    require_root().unwrap();
    let uid = test_user();
    let config = config_for(uid);
    let flags = ["--log-level".to_string(), "error".into()];
    let o = run_forbidden(
        &[],
        TEST_USER,
        &boundary_binary().unwrap(),
        config.path(),
        &flags,
        "echo RAN-UNJAILED",
    );
    let t = text(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{t}");
    assert!(!t.contains("RAN-UNJAILED"), "{t}");
    assert!(err.contains("creating a user namespace"), "{t}");
    for way in [
        "user.max_user_namespaces",
        "sudo -n true",
        "setcap cap_sys_admin,cap_net_admin+p",
        "--jail-type landjail",
    ] {
        assert!(err.contains(way), "the error does not name `{way}`:\n{t}");
    }
}
