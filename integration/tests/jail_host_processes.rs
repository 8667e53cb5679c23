//! Processes outside the jail (issue 11 item 7): a victim process the test starts outside any
//! jail, as the same user boundary runs as (root, and an unprivileged user), is attacked from
//! inside both jails: CPU-time limit (`prlimit`, which would make the kernel kill it), nice
//! value by pid, by process group and (for the user) by uid, CPU affinity, I/O priority,
//! `/proc/<pid>/oom_score_adj`, and reading `/proc/<pid>/environ` (its secrets). The victim's
//! state, read from `/proc` before and after, must not change. Positive control: the same
//! program outside the jail changes every one of them. landjail shares the host's PID
//! namespace, so its filter and Landlock rules are what stop it; in nsjail the victim's pid
//! does not exist. The jailed program's calls on itself (`nice`, `ulimit`, affinity) still work.
//!
//! Needs root and `cargo build -p boundary` first. Packages: python3, util-linux (setpriv).

mod nsjail_common;
use nsjail_common::*;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A `sleep` outside any jail, as `who`, leading its own process group.
struct Victim(Child);

impl Victim {
    fn start(who: As) -> Victim {
        let mut cmd = if who == As::User {
            let uid = test_user().to_string();
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                &uid,
                "--regid",
                &uid,
                "--clear-groups",
                "sleep",
                "600",
            ]);
            c
        } else {
            let mut c = Command::new("sleep");
            c.arg("600");
            c
        };
        cmd.process_group(0).stdin(Stdio::null());
        Victim(cmd.spawn().expect("setpriv and sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// CPU-time limit, nice value, allowed CPUs, oom_score_adj and I/O priority, from `/proc`.
    fn state(&self) -> String {
        let p = self.pid();
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap();
        let limits = read("limits");
        let cpu = limits
            .lines()
            .find(|l| l.starts_with("Max cpu time"))
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_string();
        let stat = read("stat");
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = after_comm.split_whitespace().nth(16).unwrap().to_string();
        let status = read("status");
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        let oom = read("oom_score_adj").trim().to_string();
        let ioprio = Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import ctypes; print(ctypes.CDLL(None).syscall({}, 1, {p}))",
                    nix::libc::SYS_ioprio_get
                ),
            ])
            .output()
            .unwrap();
        let ioprio = String::from_utf8_lossy(&ioprio.stdout).trim().to_string();
        format!("cpu-limit={cpu} nice={nice} cpus={cpus} oom_score_adj={oom} ioprio={ioprio}")
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Attacks pid argv[1] and prints `<name> <ok|errno>` per attempt; argv[2] == "user" adds the
/// by-uid renice (as root it would renice every root process on the machine). Then the same
/// calls on itself, which must keep working.
fn attack_script() -> String {
    format!(
        "import os, sys, resource, ctypes\n\
         v = int(sys.argv[1]); libc = ctypes.CDLL(None, use_errno=True)\n\
         def t(name, f):\n    \
             try:\n        f(); print(name, 'ok')\n    \
             except OSError as e:\n        print(name, e.errno)\n\
         def ioprio(who):\n    \
             if libc.syscall({ioprio_set}, 1, who, 3 << 13) < 0:\n        \
                 raise OSError(ctypes.get_errno(), 'ioprio_set')\n\
         def write(path, text):\n    \
             with open(path, 'w') as f: f.write(text)\n\
         t('prlimit', lambda: resource.prlimit(v, resource.RLIMIT_CPU, (1, 1)))\n\
         t('renice', lambda: os.setpriority(os.PRIO_PROCESS, v, 10))\n\
         t('renice-pgrp', lambda: os.setpriority(os.PRIO_PGRP, v, 12))\n\
         if sys.argv[2] == 'user':\n    \
             t('renice-user', lambda: os.setpriority(os.PRIO_USER, os.getuid(), 14))\n\
         t('affinity', lambda: os.sched_setaffinity(v, {{0}}))\n\
         t('ioprio', lambda: ioprio(v))\n\
         t('oom_score_adj', lambda: write(f'/proc/{{v}}/oom_score_adj', '1000'))\n\
         t('environ', lambda: open(f'/proc/{{v}}/environ', 'rb').read())\n\
         t('self-prlimit', lambda: resource.setrlimit(resource.RLIMIT_CPU, (1000, 1000)))\n\
         t('self-renice', lambda: os.setpriority(os.PRIO_PROCESS, 0, 19))\n\
         t('self-affinity', lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)))\n\
         t('self-ioprio', lambda: ioprio(0))\n",
        ioprio_set = nix::libc::SYS_ioprio_set,
    )
}

const ATTACKS: [&str; 7] = [
    "prlimit",
    "renice",
    "renice-pgrp",
    "affinity",
    "ioprio",
    "oom_score_adj",
    "environ",
];
const ON_ITSELF: [&str; 4] = [
    "self-prlimit",
    "self-renice",
    "self-affinity",
    "self-ioprio",
];

fn answer<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or("missing")
}

fn attacks(who: As) -> Vec<&'static str> {
    let mut a = ATTACKS.to_vec();
    if who == As::User {
        a.push("renice-user");
    }
    a
}

fn who_arg(who: As) -> &'static str {
    if who == As::User {
        "user"
    } else {
        "root"
    }
}

#[test]
fn jailed_commands_cannot_change_or_read_host_processes() {
    require_root().unwrap();
    let script = attack_script();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for who in [As::Root, As::User] {
        let victim = Victim::start(who);
        let before = victim.state();
        let pid = victim.pid().to_string();
        let o = outside(who, &["python3", "-c", &script, &pid, who_arg(who)])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        for name in attacks(who).into_iter().chain(ON_ITSELF) {
            assert_eq!(
                answer(&stdout, name),
                "ok",
                "control {who:?} {name}: {}",
                text(&o)
            );
        }
        let after = victim.state();
        for part in ["cpu-limit", "nice", "oom_score_adj", "ioprio"] {
            let field = |s: &str| {
                s.split(' ')
                    .find(|f| f.starts_with(part))
                    .unwrap()
                    .to_string()
            };
            assert_ne!(
                field(&before),
                field(&after),
                "control {who:?} left {part} alone"
            );
        }
        if cpus > 1 {
            assert!(
                !after.contains(&format!("cpus=0-{}", cpus - 1)),
                "control: {after}"
            );
        } else {
            eprintln!("NOTE: one CPU only: affinity changes cannot be seen here");
        }
        drop(victim);

        for (jail, flags) in both_jails() {
            let victim = Victim::start(who);
            let before = victim.state();
            let pid = victim.pid().to_string();
            let o = jailed(who, &flags, &["python3", "-c", &script, &pid, who_arg(who)]);
            let t = text(&o);
            assert_eq!(o.status.code(), Some(0), "{jail} {who:?}: {t}");
            let stdout = String::from_utf8_lossy(&o.stdout);
            for name in attacks(who) {
                if jail == "nsjail" && name == "renice-user" {
                    // Allowed there: it reaches only processes in the jail's PID namespace
                    // (the victim's state below shows it).
                    continue;
                }
                let got = answer(&stdout, name);
                assert!(
                    got != "ok" && got != "missing",
                    "{jail} {who:?} {name}: {t}"
                );
            }
            for name in ON_ITSELF {
                assert_eq!(answer(&stdout, name), "ok", "{jail} {who:?} {name}: {t}");
            }
            assert_eq!(
                victim.state(),
                before,
                "{jail} {who:?} changed the victim: {t}"
            );
        }
    }
}

/// A System V shared memory segment made outside the jail by the same user (a database's
/// shared buffers, say) is out of the jail's reach: in landjail, which shares the host's IPC
/// namespace, removing it (`ipcrm`) and attaching it fail; in nsjail its id does not exist.
/// Judged by the segment still being in the host's `/proc/sysvipc/shm` afterwards. Positive control: the
/// same `ipcrm` outside the jail removes it.
#[test]
fn jailed_commands_cannot_reach_host_ipc_objects() {
    require_root().unwrap();
    let make = |who: As| -> String {
        let o = outside(who, &["ipcmk", "-M", "4096"]).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let id = s.trim().rsplit(' ').next().unwrap_or("").to_string();
        assert!(
            id.parse::<u32>().is_ok(),
            "ipcmk (util-linux): {}",
            text(&o)
        );
        id
    };
    // The host's list (`ipcs -i` exits 0 for ids that do not exist): the second column.
    let exists = |id: &str| {
        std::fs::read_to_string("/proc/sysvipc/shm")
            .unwrap()
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(id))
    };
    let attach = "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True); \
                  libc.shmat.restype = ctypes.c_void_p; \
                  p = libc.shmat(int(sys.argv[1]), None, 0); \
                  print('attach', 'ok' if p not in (None, 2**64 - 1) else ctypes.get_errno())";
    for who in [As::Root, As::User] {
        for (jail, flags) in both_jails() {
            let id = make(who);
            let o = jailed(
                who,
                &flags,
                &[
                    "sh",
                    "-c",
                    &format!("python3 -c \"{attach}\" {id}; ipcrm -m {id} && echo REMOVED"),
                ],
            );
            let t = text(&o);
            let still = exists(&id);
            // Positive control (and cleanup): outside, the same user removes it.
            let control = outside(who, &["ipcrm", "-m", &id]).output().unwrap();
            assert!(
                still,
                "{jail} {who:?}: the jail removed the host's segment: {t}"
            );
            assert!(
                !t.contains("REMOVED") && !t.contains("attach ok"),
                "{jail} {who:?}: {t}"
            );
            assert!(
                control.status.success(),
                "control {who:?}: {}",
                text(&control)
            );
            assert!(!exists(&id), "control {who:?}: the segment is still there");
        }
    }
}
