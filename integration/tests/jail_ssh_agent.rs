//! Without `--ssh-agent filtered` the jail has no SSH agent (a jailed program with signing
//! access could sign for a session someone outside opened: attack16 F18). With it, the jail's
//! SSH agent is boundary's filter, not the user's agent: listing keys and signing
//! work (git over SSH, commit signing), while every request that changes the agent or makes it
//! run code is refused before it reaches it: `ssh-add -s` (load a PKCS#11 provider: with
//! p11-kit's proxy module and a jail-written `~/.config/pkcs11/modules/`, code of the jail's
//! choosing ran unjailed; attack16 F7), `ssh-add -D` (remove every key), adding a key. The
//! user's agent socket itself is refused in the jail.
//!
//! Needs root, openssh-client, and `cargo build -p boundary` first.

mod nsjail_common;
use nsjail_common::*;

use std::process::{Command, Stdio};

#[test]
fn the_jail_s_ssh_agent_lists_and_signs_but_changes_nothing() {
    require_root().unwrap();
    let nsjail: Vec<String> = vec!["--jail-type".into(), "nsjail".into()];
    for (jail, flags) in [("nsjail", nsjail), ("landjail", landjail_flags())] {
        let dir = shared_tempdir();
        let d = dir.path().display().to_string();
        let sock = format!("{d}/agent.sock");
        let mut agent = Command::new("ssh-agent")
            .args(["-D", "-a", &sock])
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is needed");
        for _ in 0..100 {
            if std::path::Path::new(&sock).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
        for name in ["key", "other"] {
            ok(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(format!("{d}/{name}")));
        }
        ok(Command::new("ssh-add")
            .arg(format!("{d}/key"))
            .env("SSH_AUTH_SOCK", &sock));
        std::fs::write(format!("{d}/msg"), "signed text\n").unwrap();
        let script = format!(
            "ssh-add -l >/dev/null && echo list-ok\n\
             ssh-keygen -Y sign -f {d}/key.pub -n file {d}/msg >/dev/null 2>&1 && echo sign-ok\n\
             ssh-add -D >/dev/null 2>&1 && echo REMOVED-ALL\n\
             ssh-add {d}/other >/dev/null 2>&1 && echo ADDED\n\
             SSH_ASKPASS=/bin/echo SSH_ASKPASS_REQUIRE=force timeout 20 \
               ssh-add -s /usr/lib/x86_64-linux-gnu/libp11-kit.so.0 </dev/null >/dev/null 2>&1 \
               && echo PROVIDER-LOADED\n\
             SSH_AUTH_SOCK={sock} ssh-add -l >/dev/null 2>&1 && echo REAL-AGENT-REACHED\n\
             echo done\n"
        );
        // The default: no agent in the jail at all.
        let config = config_home(As::Root);
        let none = boundary_cmd(As::Root, config.path(), &[])
            .env("SSH_AUTH_SOCK", &sock)
            .args(&flags)
            .args(["--", "sh", "-c", "echo \"sock=$SSH_AUTH_SOCK\"; ssh-add -l >/dev/null 2>&1 && echo LISTED; echo done"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let nt = text(&none);
        let nout = String::from_utf8_lossy(&none.stdout);
        assert!(
            nout.contains("sock=\n") && nout.contains("done"),
            "{jail}: {nt}"
        );
        assert!(!nout.contains("LISTED"), "{jail}: {nt}");
        let config = config_home(As::Root);
        let out = boundary_cmd(As::Root, config.path(), &[])
            .env("SSH_AUTH_SOCK", &sock)
            .args(&flags)
            .args([
                "--ssh-agent",
                "filtered",
                "--log-level",
                "warn",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Outside, after the run: the agent still holds exactly the one key, and it never
        // started its PKCS#11 helper.
        let listed = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        let helpers = Command::new("pgrep")
            .args(["-P", &agent.id().to_string()])
            .output()
            .unwrap();
        let _ = agent.kill();
        let _ = agent.wait();
        assert!(
            stdout.contains("list-ok"),
            "{jail}: listing keys failed: {t}"
        );
        assert!(stdout.contains("sign-ok"), "{jail}: signing failed: {t}");
        assert!(stdout.contains("done"), "{jail}: {t}");
        for bad in [
            "REMOVED-ALL",
            "ADDED",
            "PROVIDER-LOADED",
            "REAL-AGENT-REACHED",
        ] {
            assert!(!stdout.contains(bad), "{jail}: {bad}: {t}");
        }
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout).lines().count(),
            1,
            "{jail}: the agent's keys changed: {:?}",
            listed
        );
        assert!(
            helpers.stdout.is_empty(),
            "{jail}: the agent started a helper: {}",
            String::from_utf8_lossy(&helpers.stdout)
        );
        assert!(t.contains("refused a request from the jail"), "{jail}: {t}");
        assert!(
            std::path::Path::new(&format!("{d}/msg.sig")).exists(),
            "{jail}: {t}"
        );
    }
}

/// An allow entry that hands the jail gpg-agent or the user's SSH agent itself is warned about
/// at start (both can be made to run programs outside the jail); an ordinary entry is not.
#[test]
fn allowing_an_agent_socket_is_warned_about() {
    require_root().unwrap();
    for (entry, warned) in [
        ("/run/user/0/gnupg/S.gpg-agent", true),
        ("/run/user/0/gnupg/S.gpg-agent.ssh", true),
        ("/tmp/agent-dir/", true),
        ("/tmp/my-language-server.sock", false),
    ] {
        let config = config_home(As::Root);
        let out = boundary_cmd(As::Root, config.path(), &[])
            .env("SSH_AUTH_SOCK", "/tmp/agent-dir/agent.1")
            .args([
                "--jail-type",
                "nsjail",
                "--unix-socket-allow",
                entry,
                "--",
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{entry}: {t}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr)
                .contains("can be made to run programs outside the jail"),
            warned,
            "{entry}: {t}"
        );
    }
}
