//! landjail listeners are loopback only (issue 11 item 8): landjail shares the host's network
//! namespace, so a jailed server on `0.0.0.0` or `::` would take connections from other hosts,
//! a two-way channel around the proxy. boundary runs in the near namespace next to a far host;
//! the jailed command tries to listen on every address (IPv4, IPv6, the host's own address, an
//! unbound socket) and then the far host tries to connect to that port. Positive control: a
//! listener outside the jail, in the same namespace, is reachable from the far host. As root
//! and as an unprivileged user. The reverse also holds: landjail's proxy, on the host's
//! loopback, serves only the jail's processes.

mod nsjail_common;
use nsjail_common::*;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

const JAILED: &str = r#"
import errno, os, socket, sys, time
port, near4, near6, own = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
keep = []

def listen(name, fam, addr, p):
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        if addr is not None:
            s.bind((addr, p))
        s.listen(5)
        keep.append(s)
        print("%s=listening" % name, flush=True)
    except OSError as e:
        print("%s=%s" % (name, errno.errorcode.get(e.errno, e.errno)), flush=True)

listen("v4_any", socket.AF_INET, "0.0.0.0", port)
listen("v6_any", socket.AF_INET6, "::", port + 1)
listen("near_v4", socket.AF_INET, near4, port + 2)
listen("near_v6", socket.AF_INET6, near6, port + 3)
listen("unbound", socket.AF_INET, None, 0)
listen("loopback", socket.AF_INET, "127.0.0.1", port + 4)
open(os.path.join(own, "listening"), "w").close()
for _ in range(600):
    if os.path.exists(os.path.join(own, "done")):
        break
    time.sleep(0.05)
"#;

const FAR_CONNECT: &str = r#"
import socket, sys
for host, port in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        print("%s:%s=connected" % (host, port), flush=True)
    except OSError as e:
        print("%s:%s=%s" % (host, port, type(e).__name__), flush=True)
"#;

fn wait_for(p: &Path) -> bool {
    for _ in 0..1200 {
        if p.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

fn jailed_listeners_are_loopback_only(who: As) {
    let far = FarHost::new().unwrap();
    let config = config_home(who);
    let dir = shared_tempdir();
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let script = dir.path().join("listen.py");
    std::fs::write(&script, JAILED).unwrap();
    let port: u16 = 20000 + (std::process::id() % 20000) as u16;
    // The control: a server outside the jail, next to boundary, on every address.
    let control = far
        .in_near(|| TcpListener::bind("0.0.0.0:0").unwrap())
        .unwrap();
    let control_port = control.local_addr().unwrap().port();

    let prefix = ["ip", "netns", "exec", far.near.as_str()];
    let child = boundary_cmd(who, config.path(), &prefix)
        .args([
            "--jail-type",
            "landjail",
            "--log-level",
            "warn",
            "--",
            "python3",
        ])
        .arg(&script)
        .arg(port.to_string())
        .arg(far.near_v4.to_string())
        .arg(far.near_v6.to_string())
        .arg(&own)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&own.join("listening")),
        "the jailed command never listened"
    );
    let (n4, n6) = (far.near_v4.to_string(), far.near_v6.to_string());
    let p = |d: u16| (port + d).to_string();
    let far_out = far
        .far_command("python3")
        .args(["-c", FAR_CONNECT])
        .args([&n4, &p(0), &n6, &p(1), &n4, &p(1), &n4, &p(2), &n6, &p(3)])
        .args([&n4, &control_port.to_string()])
        .output()
        .unwrap();
    std::fs::write(own.join("done"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let far_text = String::from_utf8_lossy(&far_out.stdout).into_owned();
    assert!(o.status.success(), "{who:?}: {t}");
    for name in ["v4_any", "v6_any", "near_v4", "near_v6", "unbound"] {
        let got = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")));
        assert_eq!(got, Some("EACCES"), "{who:?} {name}: {t}");
    }
    assert!(out.contains("loopback=listening"), "{who:?}: {t}");
    // Nothing in the jail took a connection from the far host; the control did.
    for (host, d) in [(&n4, 0), (&n6, 1), (&n4, 1), (&n4, 2), (&n6, 3)] {
        let key = format!("{host}:{}=", port + d);
        let line = far_text.lines().find(|l| l.starts_with(&key)).unwrap_or("");
        assert!(
            !line.ends_with("=connected") && !line.is_empty(),
            "{who:?}: the far host reached a jailed listener: {line:?}\n{far_text}\n{t}"
        );
    }
    assert!(
        far_text.contains(&format!("{n4}:{control_port}=connected")),
        "control: the far host cannot reach a listener outside the jail: {far_text}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refused listen() on a non-loopback address"),
        "{who:?}: the refusal is not logged: {t}"
    );
    drop(control);
}

#[test]
fn landjail_listeners_are_loopback_only_as_root() {
    jailed_listeners_are_loopback_only(As::Root);
}

#[test]
fn landjail_listeners_are_loopback_only_as_user() {
    jailed_listeners_are_loopback_only(As::User);
}

/// landjail's proxy listens on the host's loopback: another process of the machine (here the
/// test itself, as root, outside the jail) connecting to it is closed unserved and leaves no
/// audit record, while the jailed client beside it is served (the positive control).
#[test]
fn the_landjail_proxy_serves_only_the_jail() {
    require_root().unwrap();
    let fx = Fixture::start();
    let config = config_home(As::Root);
    let audit = config.path().join("audit.jsonl");
    let flags = landjail_flags();
    let port = flags.last().unwrap().clone();
    let url = format!("http://fixture.test:{}/allowed.txt", fx.http_port);
    let script = format!(
        "curl -s -o /dev/null -w 'jailed %{{http_code}}\\n' --max-time 20 {url}; \
         echo READY; read done"
    );
    let mut child = boundary_cmd(As::Root, config.path(), &[])
        .args(&flags)
        .args(fx.flags(&["domain=fixture.test"]))
        .arg("--audit-log")
        .arg(&audit)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = lines_until_ready(&mut child);
    let jailed = printed
        .iter()
        .find_map(|l| l.strip_prefix("jailed "))
        .map(str::trim);
    let outside = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(["-x", &format!("http://127.0.0.1:{port}"), &url])
        .output()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"done\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(jailed, Some("200"), "the jailed client: {err}");
    // curl: "empty reply from server" (52) and no status.
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout),
        "000",
        "a process outside the jail was served"
    );
    let records = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(records.lines().count(), 1, "{records}");
}
