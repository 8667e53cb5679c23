//! nsjail keeps the host kernel's settings out of the jail's reach (issue 11 item 1): a jailed
//! uid 0 without capabilities is still kuid 0, and sysctl, sysfs and cgroupfs check the file's
//! owner, not capabilities. From inside, the target tries `kernel.core_pattern`, the hostname
//! (sethostname and `/proc/sys/kernel/hostname`), `vm.drop_caches`, a `/sys/kernel/mm` knob,
//! freezing a victim host cgroup, reaching block devices and `/dev/kmsg`, and undoing the
//! jail's mounts (remount read-write, unmount, also from a nested user namespace). The host's
//! state is read before and after and must be unchanged; a positive control shows the readers
//! see a change made from outside. Runs as root with and without --no-user-namespace, and as an
//! unprivileged user the test creates.

mod nsjail_common;
use nsjail_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
const HOSTNAME: &str = "/proc/sys/kernel/hostname";
const KSM: &str = "/sys/kernel/mm/ksm/pages_to_scan";

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

/// A host cgroup holding a sleeping process: v1 freezer where mounted, else cgroup v2.
struct Victim {
    dir: PathBuf,
    state_file: PathBuf,
    freeze_file: PathBuf,
    child: std::process::Child,
}

impl Victim {
    fn new(tag: &str) -> Option<Victim> {
        let name = format!("bnd-kernel-{}-{tag}", std::process::id());
        let (dir, state_file, freeze_file) = if Path::new("/sys/fs/cgroup/freezer").is_dir() {
            let d = Path::new("/sys/fs/cgroup/freezer").join(&name);
            (d.clone(), d.join("freezer.state"), d.join("freezer.state"))
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let d = Path::new("/sys/fs/cgroup").join(&name);
            (d.clone(), d.join("cgroup.events"), d.join("cgroup.freeze"))
        } else {
            eprintln!("SKIPPING the cgroup part: no freezer cgroup on this host");
            return None;
        };
        std::fs::create_dir(&dir).unwrap();
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        Some(Victim {
            dir,
            state_file,
            freeze_file,
            child,
        })
    }

    fn frozen(&self) -> bool {
        let s = read(self.state_file.to_str().unwrap());
        s.contains("FROZEN") || s.contains("FREEZING") || s.contains("frozen 1")
    }

    fn freeze_value(&self, on: bool) -> &'static str {
        match (self.freeze_file == self.state_file, on) {
            (true, true) => "FROZEN",
            (true, false) => "THAWED",
            (false, true) => "1",
            (false, false) => "0",
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.freeze_file, self.freeze_value(false));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Restores the host values if a write got through, so a failing run does not leave the host
/// changed.
struct Restore(Vec<(&'static str, String)>);

impl Drop for Restore {
    fn drop(&mut self) {
        for (p, v) in &self.0 {
            if read(p) != *v {
                let _ = std::fs::write(p, v.trim_end());
            }
        }
    }
}

/// Mount syscalls by hand (util-linux's mount(8) refuses before calling the kernel when not
/// uid 0): each prints `<what> <errno or OK>`.
const MOUNTS_PY: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MNT_DETACH = 1, 32, 4096, 2
def report(what, r):
    print(what, "OK" if r == 0 else os.strerror(ctypes.get_errno()), flush=True)
tag = sys.argv[1]
for p in [b"/proc/sys", b"/sys", b"/dev", b"/proc/sysrq-trigger"]:
    report(tag + " remount-rw " + p.decode(), libc.mount(None, p, None, MS_REMOUNT | MS_BIND, None))
for p in [b"/proc/kcore", b"/proc/sys", b"/sys", b"/dev", b"/proc"]:
    report(tag + " umount " + p.decode(), libc.umount2(p, MNT_DETACH))
os.makedirs("/tmp/bnd-kernel-mnt", exist_ok=True)
report(tag + " bind-proc", libc.mount(b"/proc", b"/tmp/bnd-kernel-mnt", None, MS_BIND, None))
report(tag + " new-proc", libc.mount(b"proc", b"/tmp/bnd-kernel-mnt", b"proc", 0, None))
report(tag + " new-sysfs", libc.mount(b"sysfs", b"/tmp/bnd-kernel-mnt", b"sysfs", 0, None))
"#;

fn attack_script(victim: Option<&Victim>, py: &Path) -> String {
    let mut s = String::from("exec 2>&1\n");
    s += "echo '|/bin/sh -c \"touch /tmp/bnd-kernel-core-escape\"' > /proc/sys/kernel/core_pattern; echo core_pattern=$?\n";
    s += "echo bnd-evil-host > /proc/sys/kernel/hostname; echo proc-hostname=$?\n";
    s += "hostname bnd-evil-host2; echo sethostname=$? now=$(hostname)\n";
    s += "echo 3 > /proc/sys/vm/drop_caches; echo drop_caches=$?\n";
    s += "echo 4321 > /sys/kernel/mm/ksm/pages_to_scan; echo ksm=$?\n";
    // 'h' only prints the SysRq help to the kernel log: harmless even if the write got through.
    s += "echo h > /proc/sysrq-trigger; echo sysrq=$?\n";
    s += "for d in /dev/sda /dev/vda /dev/loop0 /dev/kmsg /dev/tty1 /dev/vcs /dev/kvm /dev/mem; do [ -e $d ] && echo present $d; done\n";
    s += "echo bnd-kmsg > /dev/kmsg; echo kmsg=$?\n";
    if let Some(v) = victim {
        s += &format!(
            "echo {} > {}; echo cgroup-freeze=$?\n",
            v.freeze_value(true),
            v.freeze_file.display()
        );
    }
    s += &format!("python3 {} direct\n", py.display());
    // `-r`: root of the nested namespace keeps its capabilities across exec (an unmapped uid
    // would lose them and prove nothing); where the map cannot be written (a jail started by
    // root lacks CAP_SETFCAP), the unmapped run is the fallback.
    s += &format!(
        "unshare -Urm python3 {p} nested || unshare -Um python3 {p} nested-unmapped; echo unshare=$?\n",
        p = py.display()
    );
    s += "echo ATTACK-DONE\n";
    s
}

/// One attack at a time: each compares host-wide values before and after.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kernel_settings_hold(who: As, flags: &[&str], tag: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates a host cgroup and the test user)");
        return;
    }
    let config = config_home(who);
    let py = config.path().join("mounts.py");
    std::fs::write(&py, MOUNTS_PY).unwrap();
    let victim = Victim::new(tag);
    // Positive control: the readers see a change made from outside.
    if let Some(v) = &victim {
        std::fs::write(&v.freeze_file, v.freeze_value(true)).unwrap();
        assert!(
            v.frozen(),
            "control: freezing the victim from outside is not visible"
        );
        std::fs::write(&v.freeze_file, v.freeze_value(false)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ksm_before = read(KSM);
    if Path::new(KSM).exists() {
        let other = if ksm_before.trim() == "4321" {
            "100"
        } else {
            "4321"
        };
        std::fs::write(KSM, other).unwrap();
        assert_eq!(
            read(KSM).trim(),
            other,
            "control: a /sys/kernel/mm write from outside is not visible"
        );
        std::fs::write(KSM, ksm_before.trim()).unwrap();
    }
    let before = [read(CORE_PATTERN), read(HOSTNAME), read(KSM)];
    let _restore = Restore(vec![
        (CORE_PATTERN, before[0].clone()),
        (HOSTNAME, before[1].clone()),
        (KSM, before[2].clone()),
    ]);
    let out = jailed_sh(
        who,
        config.path(),
        &[],
        flags,
        &attack_script(victim.as_ref(), &py),
    );
    let t = text(&out);
    assert!(
        t.contains("ATTACK-DONE"),
        "the attack script did not run: {t}"
    );
    let after = [read(CORE_PATTERN), read(HOSTNAME), read(KSM)];
    assert_eq!(
        before, after,
        "host kernel settings changed from inside the jail: {t}"
    );
    if let Some(v) = &victim {
        assert!(!v.frozen(), "the jail froze a host cgroup: {t}");
    }
    assert!(!Path::new("/tmp/bnd-kernel-core-escape").exists(), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    for l in &lines {
        // Every device that gives raw access to the host is gone from the jail's /dev.
        assert!(
            !l.starts_with("present "),
            "host device reachable in the jail: {l}\n{t}"
        );
        for name in [
            "core_pattern=",
            "proc-hostname=",
            "drop_caches=",
            "ksm=",
            "sysrq=",
            "kmsg=",
            "cgroup-freeze=",
        ] {
            if let Some(code) = l.strip_prefix(name) {
                assert_ne!(code, "0", "{name} write succeeded inside the jail:\n{t}");
            }
        }
        if let Some(rest) = l.strip_prefix("sethostname=") {
            assert!(
                !rest.starts_with('0'),
                "sethostname succeeded in the jail: {t}"
            );
        }
        // No mount of the jail can be undone, directly or from a nested user namespace.
        if l.starts_with("direct ") || l.starts_with("nested ") {
            assert!(
                !l.ends_with(" OK"),
                "mount change succeeded inside the jail: {l}\n{t}"
            );
        }
    }
    // A nested user namespace either cannot be created at all (the jail's seccomp filter) or
    // finds every mount locked (checked line by line above).
    let nested_ran = t.lines().any(|l| l.starts_with("nested "));
    if !nested_ran {
        assert!(
            t.contains("unshare failed: Operation not permitted"),
            "the nested user namespace neither ran nor was refused: {t}"
        );
        eprintln!(
            "NOTE: the jail refuses nested user namespaces; the lock checks ran directly only"
        );
    }
}

#[test]
fn kernel_settings_hold_as_root() {
    kernel_settings_hold(As::Root, &["--log-level", "error"], "root");
}

#[test]
fn kernel_settings_hold_as_root_without_a_user_namespace() {
    kernel_settings_hold(
        As::Root,
        &["--log-level", "error", "--no-user-namespace"],
        "nouserns",
    );
}

#[test]
fn kernel_settings_hold_as_an_unprivileged_user() {
    kernel_settings_hold(As::User, &["--log-level", "error"], "user");
}

/// The jail's hostname is its own (UTS namespace): a change inside, where allowed, never
/// reaches the host. With no capabilities the target cannot change it at all; the test checks
/// that the host's name read before and after the attack is the same, and that the jail sees a
/// UTS namespace different from the host's.
#[test]
fn the_jail_has_its_own_uts_ipc_and_cgroup_namespaces() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    let config = config_home(As::Root);
    for flags in [
        &["--log-level", "error"][..],
        &["--log-level", "error", "--no-user-namespace"],
    ] {
        let out = jailed_sh(
            As::Root,
            config.path(),
            &[],
            flags,
            "readlink /proc/self/ns/uts /proc/self/ns/ipc /proc/self/ns/cgroup",
        );
        let inside = String::from_utf8_lossy(&out.stdout).to_string();
        for ns in ["uts", "ipc", "cgroup"] {
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            let host = host.to_string_lossy().to_string();
            assert!(inside.contains(&format!("{ns}:[")), "{}", text(&out));
            assert!(
                !inside.contains(&host),
                "the jail shares the host's {ns} namespace: {}",
                text(&out)
            );
        }
    }
}
