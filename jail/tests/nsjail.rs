//! nsjail from the library API, with a stand-in proxy: every connection accepted on the handed
//! listeners is answered with an HTTP response naming its original destination, so a jailed `curl`
//! shows whether (and where) its connection was intercepted. Real namespaces, real netfilter.
//!
//! Own `main` (harness = false): the jail re-executes this binary as its helper, so
//! `init_hook()` runs first. Run: `cargo test -p boundary-jail --test nsjail` (as root, as CI
//! does; the rootless path is covered through the `boundary` binary in integration/tests).

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;

use boundary_jail::{nsjail, JailSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The destination the jailed client asked for: the jail's `divert` chain hands connections to
/// the listener unchanged (TPROXY), so an accepted socket's own address is that destination;
/// `None` for a connection made to the listener itself.
fn original_dst(s: &tokio::net::TcpStream, listener: SocketAddr) -> Option<SocketAddr> {
    let own = s.local_addr().ok()?;
    (own != listener).then_some(own)
}

/// Serves the stand-in proxy on the jail's listeners.
fn serve(listeners: &mut Vec<std::net::TcpListener>) {
    for l in listeners.drain(..) {
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let body = match original_dst(&s, addr) {
                        Some(a) => format!("orig={a}\n"),
                        None => "orig=none\n".to_string(),
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
    }
}

struct Outcome {
    code: i32,
    stdout: String,
}

/// Runs `sh -c script` in a jail, capturing stdout through a file (the jail inherits our fds).
fn jailed(script: &str, tweak: impl FnOnce(&mut JailSpec)) -> Outcome {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut spec = JailSpec {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            format!("exec >{} 2>&1; {script}", out.path().display()).into(),
        ],
        proxy_port: 8080,
        ..Default::default()
    };
    tweak(&mut spec);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut jail =
        nsjail::start(&spec, &Default::default()).unwrap_or_else(|e| panic!("nsjail::start: {e}"));
    let code = rt.block_on(async {
        serve(&mut jail.listeners);
        jail.wait().await
    });
    let stdout = std::fs::read_to_string(out.path()).unwrap();
    Outcome { code, stdout }
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn tcp_to_any_address_and_port_lands_on_the_proxy_with_its_original_destination() {
    assert!(
        have("curl"),
        "curl is needed for this test (Debian package curl)"
    );
    let o = jailed(
        "curl -sS --max-time 10 http://203.0.113.7:81/a; curl -sS --max-time 10 'http://[2001:db8::5]:82/'; \
         curl -sS --max-time 10 http://10.213.0.2:22/",
        |_| {},
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("orig=203.0.113.7:81"), "{}", o.stdout);
    assert!(o.stdout.contains("orig=[2001:db8::5]:82"), "{}", o.stdout);
    assert!(o.stdout.contains("orig=10.213.0.2:22"), "{}", o.stdout);
}

fn dns_answers_are_the_fixed_addresses() {
    let o = jailed(
        "python3 -c 'import socket; print(sorted({a[4][0] for a in socket.getaddrinfo(\"example.com\", 443)}))'",
        |_| {},
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(
        o.stdout.contains("6.6.6.6") && o.stdout.contains("2001:db8::1"),
        "{}",
        o.stdout
    );
}

fn exit_codes_pass_through() {
    assert_eq!(jailed("exit 0", |_| {}).code, 0);
    assert_eq!(jailed("exit 3", |_| {}).code, 3);
    assert_eq!(jailed("kill -TERM $$", |_| {}).code, 143);
    assert_eq!(jailed("kill -KILL $$", |_| {}).code, 137);
    let missing = jailed("true", |s| s.program = "/nonexistent/prog".into());
    assert_eq!(missing.code, 127);
}

fn target_has_no_capabilities_no_new_privs_and_our_uid() {
    let o = jailed(
        "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id -u; id -g",
        |_| {},
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_else(|| panic!("{set} in {}", o.stdout));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(o.stdout.contains("NoNewPrivs:\t1"), "{}", o.stdout);
    let uid = nix::unistd::getuid().to_string();
    let gid = nix::unistd::getgid().to_string();
    let ids: Vec<&str> = o.stdout.lines().rev().take(2).collect();
    assert_eq!(ids, vec![gid.as_str(), uid.as_str()]);
}

fn only_jail_processes_are_visible() {
    let o = jailed(
        "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '",
        |_| {},
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    let pids: Vec<u32> = o
        .stdout
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // init (1), sh, and the pipeline's own children, numbered together from the jail's
    // random start (pid1.rs); nothing from the host, which runs hundreds of processes.
    assert_eq!(pids.first(), Some(&1), "{pids:?}");
    assert!(pids.len() >= 2 && pids.len() <= 6, "{pids:?}");
    assert!(pids[1..].iter().all(|&p| p - pids[1] < 20), "{pids:?}");
}

fn hidden_paths_are_unreadable_and_ca_cert_next_to_them_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ca-key.pem");
    let cert = dir.path().join("ca-cert.pem");
    std::fs::write(&key, "SECRET-KEY").unwrap();
    std::fs::write(&cert, "PUBLIC-CERT").unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("x"), "SECRET-DIR").unwrap();
    let script = format!(
        "cat {k}; cat {c}; ls -A {d}; cat {d}/x; echo end",
        k = key.display(),
        c = cert.display(),
        d = secret_dir.path().display()
    );
    let (k2, d2) = (key.clone(), secret_dir.path().to_path_buf());
    let o = jailed(&script, move |s| s.hide_paths = vec![k2, d2]);
    assert!(!o.stdout.contains("SECRET"), "{}", o.stdout);
    assert!(o.stdout.contains("PUBLIC-CERT"), "{}", o.stdout);
    assert!(o.stdout.contains("end"), "{}", o.stdout);
    // Nothing changed outside.
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SECRET-KEY");
}

fn env_is_applied_and_loopback_servers_work_inside() {
    let o = jailed(
        "echo \"v=$BOUNDARY_TEST_VAR\"; python3 -m http.server --bind 127.0.0.1 8099 >/dev/null 2>&1 & \
         for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:8099/ && break; sleep 0.1; done; \
         curl -s -o /dev/null -w 'local=%{http_code}\\n' http://127.0.0.1:8099/",
        |s| s.env = vec![(OsString::from("BOUNDARY_TEST_VAR"), OsString::from("hello"))],
    );
    assert!(o.stdout.contains("v=hello"), "{}", o.stdout);
    assert!(o.stdout.contains("local=200"), "{}", o.stdout);
}

fn netfilter_and_links_cannot_be_changed_from_inside() {
    let o = jailed(
        "nft flush ruleset; echo nft=$?; ip link add x type veth peer name y; echo link=$?; \
         ip rule del pref 100; echo rule=$?; ip route del local default table 100; \
         echo route=$?; curl -sS --max-time 10 http://203.0.113.9:80/",
        |_| {},
    );
    assert!(o.stdout.contains("nft=1"), "{}", o.stdout);
    assert!(o.stdout.contains("link=2"), "{}", o.stdout);
    // The policy routing that sends TCP back in through lo to the `divert` chain.
    assert!(o.stdout.contains("rule=2"), "{}", o.stdout);
    assert!(o.stdout.contains("route=2"), "{}", o.stdout);
    assert!(
        o.stdout.contains("orig=203.0.113.9:80"),
        "redirect survived: {}",
        o.stdout
    );
}

fn signal_to_the_jail_reaches_the_target() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let ready = tempfile::NamedTempFile::new().unwrap();
    let spec = JailSpec {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            format!(
                "trap 'echo got-term >{o}; exit 7' TERM; echo up >{r}; while :; do sleep 0.05; done",
                o = out.path().display(),
                r = ready.path().display()
            )
            .into(),
        ],
        proxy_port: 8080,
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut jail = nsjail::start(&spec, &Default::default()).unwrap();
    let code = rt.block_on(async {
        // Handshake: wait until the trap is installed (the script says so).
        while std::fs::read_to_string(ready.path())
            .unwrap_or_default()
            .is_empty()
        {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        jail.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        jail.wait().await
    });
    assert_eq!(code, 7);
    assert_eq!(
        std::fs::read_to_string(out.path()).unwrap().trim(),
        "got-term"
    );
}

fn main() {
    boundary_jail::init_hook();
    // Rootless: run this binary as an unprivileged user with BOUNDARY_TEST_ROOTLESS=1 (the
    // integration tests do that with the boundary binary as well).
    if !nix::unistd::geteuid().is_root() && std::env::var_os("BOUNDARY_TEST_ROOTLESS").is_none() {
        eprintln!(
            "nsjail tests: run as root (CI does), or as a user with BOUNDARY_TEST_ROOTLESS=1"
        );
        std::process::exit(1);
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tests: &[(&str, fn())] = &[
        (
            "tcp_to_any_address_and_port_lands_on_the_proxy_with_its_original_destination",
            tcp_to_any_address_and_port_lands_on_the_proxy_with_its_original_destination,
        ),
        (
            "dns_answers_are_the_fixed_addresses",
            dns_answers_are_the_fixed_addresses,
        ),
        ("exit_codes_pass_through", exit_codes_pass_through),
        (
            "target_has_no_capabilities_no_new_privs_and_our_uid",
            target_has_no_capabilities_no_new_privs_and_our_uid,
        ),
        (
            "only_jail_processes_are_visible",
            only_jail_processes_are_visible,
        ),
        (
            "hidden_paths_are_unreadable_and_ca_cert_next_to_them_is_readable",
            hidden_paths_are_unreadable_and_ca_cert_next_to_them_is_readable,
        ),
        (
            "env_is_applied_and_loopback_servers_work_inside",
            env_is_applied_and_loopback_servers_work_inside,
        ),
        (
            "netfilter_and_links_cannot_be_changed_from_inside",
            netfilter_and_links_cannot_be_changed_from_inside,
        ),
        (
            "signal_to_the_jail_reaches_the_target",
            signal_to_the_jail_reaches_the_target,
        ),
    ];
    let mut failed = Vec::new();
    for (name, f) in tests {
        if filter.as_deref().is_some_and(|p| !name.contains(p)) {
            continue;
        }
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        match std::panic::catch_unwind(f) {
            Ok(()) => println!("ok"),
            Err(_) => {
                println!("FAILED");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}
