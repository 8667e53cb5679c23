//! Host files against a jailed command that is uid 0 (issue 11 item 1): boundary started by
//! root, in both jails, the target tries to plant a cron job, create files in `/etc` and
//! `/var/lib`, append to, truncate, rename and remove a file the test put in `/etc`, and write
//! to the kernel log through `/dev/kmsg`. Judged by host state read after the run: nothing
//! appears, the victim file is unchanged, the kernel log has no line of the jail's. Positive
//! controls: the same script writes its working directory, `$HOME`, `/tmp` and a
//! `--writable-path` directory; with `--root-filesystem writable` the file in `/etc` does
//! appear (and a warning says why that is dangerous); root outside the jail writes the kernel
//! log. A system directory as working directory is refused before anything runs. Started by an
//! unprivileged user, the jail keeps writing where that user may.
//!
//! Needs root and `cargo build -p boundary` first. Packages: coreutils, util-linux (dmesg,
//! runuser).

mod nsjail_common;
use nsjail_common::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A name no other run uses.
fn tag(what: &str) -> String {
    format!("boundary-jailsec-{what}-{}", std::process::id())
}

/// `script` in `jail` as `who`, from working directory `cwd`, with `HOME` = `home`.
fn run_in(
    jail: &[String],
    who: As,
    cwd: &Path,
    home: &Path,
    extra: &[&str],
    script: &str,
) -> Output {
    let config = config_home(who);
    boundary_cmd(who, config.path(), &[])
        .current_dir(cwd)
        .env("HOME", home)
        .args(jail)
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `script` in nsjail started by root with `--nested-sandboxes`, from working directory `cwd`.
fn nested_as_root(cwd: &Path, script: &str) -> Output {
    let jail = ["--jail-type".to_string(), "nsjail".into()];
    run_in(
        &jail,
        As::Root,
        cwd,
        Path::new("/root"),
        &["--nested-sandboxes"],
        script,
    )
}

/// `script` as root outside any jail, from working directory `cwd`: the positive controls.
fn outside_jail(cwd: &Path, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn kernel_log() -> String {
    let out = Command::new("dmesg").output().expect("dmesg (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The attacks; each line reports its own result so a failure shows which one got through.
fn attacks(victim: &Path, cron: &Path, new_etc: &Path, new_var: &Path, kmsg: &str) -> String {
    format!(
        "try() {{ if sh -c \"$1\" 2>/dev/null; then echo \"GOT THROUGH: $1\"; else echo \"refused: $1\"; fi; }}\n\
         try 'echo \"* * * * * root touch /tmp/pwned\" > {cron}'\n\
         try 'echo x > {new_etc}'\n\
         try 'mkdir {new_var}'\n\
         try 'echo appended >> {victim}'\n\
         try ': > {victim}'\n\
         try 'truncate -s0 {victim}'\n\
         try 'mv {victim} {victim}.moved'\n\
         try 'rm -f {victim}'\n\
         try 'ln -s /tmp {new_etc}.link'\n\
         try 'echo {kmsg} > /dev/kmsg'\n",
        cron = cron.display(),
        new_etc = new_etc.display(),
        new_var = new_var.display(),
        victim = victim.display(),
    )
}

/// Started by root, neither jail lets the target change a host file outside the writable
/// list; the writable list itself works.
#[test]
fn root_target_cannot_change_host_files() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (the attack is uid 0 writing host files)");
        return;
    }
    for (name, jail) in both_jails() {
        let t = tag(name);
        let victim = Path::new("/etc").join(format!("{t}-victim"));
        std::fs::write(&victim, "original\n").unwrap();
        let cron = Path::new("/etc/cron.d").join(&t);
        let new_etc = Path::new("/etc").join(format!("{t}-new"));
        let new_var = Path::new("/var/lib").join(format!("{t}-new"));
        let (work, home, extra) = (shared_tempdir(), shared_tempdir(), shared_tempdir());
        let tmp_file = Path::new("/tmp").join(format!("{t}-tmp"));
        let kmsg = format!("{t}-kmsg-from-jail");
        let script = format!(
            "{}echo ok > cwd-file; echo ok > \"$HOME/home-file\"; echo ok > {tmp}; \
             echo ok > {extra}/extra-file; echo done",
            attacks(&victim, &cron, &new_etc, &new_var, &kmsg),
            tmp = tmp_file.display(),
            extra = extra.path().display(),
        );
        let extra_flag = ["--writable-path", extra.path().to_str().unwrap()];
        let out = run_in(
            &jail,
            As::Root,
            work.path(),
            home.path(),
            &extra_flag,
            &script,
        );
        let log = kernel_log();
        let victim_after = std::fs::read_to_string(&victim);
        let planted: Vec<_> = [&cron, &new_etc, &new_var]
            .into_iter()
            .filter(|p| p.exists())
            .cloned()
            .collect();
        let link = std::fs::symlink_metadata(format!("{}.link", new_etc.display())).is_ok();
        // Clean up before asserting, so a failure leaves nothing behind on the host.
        for p in &planted {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
        }
        let _ = std::fs::remove_file(format!("{}.link", new_etc.display()));
        let _ = std::fs::remove_file(format!("{}.moved", victim.display()));
        let _ = std::fs::remove_file(&victim);
        let tmp_ok = std::fs::read_to_string(&tmp_file);
        let _ = std::fs::remove_file(&tmp_file);
        let o = text(&out);
        assert!(
            out.status.success(),
            "{name}: the jailed script failed: {o}"
        );
        assert!(!o.contains("GOT THROUGH"), "{name}: an attack worked: {o}");
        assert!(
            planted.is_empty(),
            "{name}: files appeared on the host: {planted:?}\n{o}"
        );
        assert!(!link, "{name}: a symlink appeared in /etc\n{o}");
        assert_eq!(
            victim_after.ok().as_deref(),
            Some("original\n"),
            "{name}: {o}"
        );
        assert!(
            !log.contains(&kmsg),
            "{name}: the jail wrote the kernel log\n{o}"
        );
        for (what, f) in [
            ("working directory", work.path().join("cwd-file")),
            ("$HOME", home.path().join("home-file")),
            ("--writable-path", extra.path().join("extra-file")),
        ] {
            let got = std::fs::read_to_string(&f).ok();
            assert_eq!(
                got.as_deref(),
                Some("ok\n"),
                "{name}: {what} not writable: {o}"
            );
        }
        assert_eq!(
            tmp_ok.ok().as_deref(),
            Some("ok\n"),
            "{name}: /tmp not writable: {o}"
        );
    }
}

/// Positive controls: root outside the jail reaches the kernel log, and with the opt-out the
/// jailed command does create the file in `/etc` (so the refusal above is the limit's doing),
/// with a warning at start.
#[test]
fn opt_out_makes_host_files_writable_again_and_warns() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (the attack is uid 0 writing host files)");
        return;
    }
    let marker = tag("kmsg-control");
    std::fs::write("/dev/kmsg", format!("{marker}\n")).expect("root writes /dev/kmsg");
    assert!(
        kernel_log().contains(&marker),
        "dmesg does not show /dev/kmsg writes"
    );
    for (name, jail) in both_jails() {
        let new_etc = Path::new("/etc").join(format!("{}-optout", tag(name)));
        let work = shared_tempdir();
        let script = format!("echo x > {}", new_etc.display());
        let flags = ["--root-filesystem", "writable"];
        let out = run_in(&jail, As::Root, work.path(), work.path(), &flags, &script);
        let planted = new_etc.exists();
        let _ = std::fs::remove_file(&new_etc);
        let o = text(&out);
        assert!(
            planted && out.status.success(),
            "{name}: opt-out did not apply: {o}"
        );
        assert!(
            o.contains("WARNING") && o.contains("root_filesystem"),
            "{name}: {o}"
        );
    }
}

/// A system directory as working directory would be writable: boundary refuses to start and
/// says how to fix it; the command never runs.
#[test]
fn system_directory_as_working_directory_is_refused() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (the limit applies to root only)");
        return;
    }
    for (name, jail) in both_jails() {
        let marker = Path::new("/tmp").join(format!("{}-ran", tag(name)));
        let script = format!("touch {}", marker.display());
        let home = shared_tempdir();
        let out = run_in(
            &jail,
            As::Root,
            Path::new("/etc"),
            home.path(),
            &[],
            &script,
        );
        let ran = marker.exists();
        let _ = std::fs::remove_file(&marker);
        let o = text(&out);
        assert!(
            !out.status.success() && !ran,
            "{name}: started from /etc: {o}"
        );
        assert!(o.contains("/etc is a system directory"), "{name}: {o}");
        assert!(
            o.contains("--root-filesystem writable"),
            "{name}: no fix named: {o}"
        );
    }
}

/// Started by an unprivileged user the target is that user for host files: `/etc` stays
/// refused by the host's permissions and the user's own directory stays writable.
#[test]
fn user_target_writes_where_the_user_may() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    let uid = test_user();
    for (name, jail) in both_jails() {
        let t = tag(&format!("user-{name}"));
        let new_etc = Path::new("/etc").join(&t);
        let work = shared_tempdir();
        std::os::unix::fs::chown(work.path(), Some(uid), Some(uid)).unwrap();
        let script = format!(
            "echo x > {} 2>/dev/null && echo GOT-THROUGH; echo ok > cwd-file",
            new_etc.display()
        );
        let home = Path::new("/home").join(TEST_USER);
        let out = run_in(&jail, As::User, work.path(), &home, &[], &script);
        let planted = new_etc.exists();
        let _ = std::fs::remove_file(&new_etc);
        let o = text(&out);
        assert!(!planted && !o.contains("GOT-THROUGH"), "{name}: {o}");
        let got = std::fs::read_to_string(work.path().join("cwd-file")).ok();
        assert_eq!(got.as_deref(), Some("ok\n"), "{name}: {o}");
    }
}

/// landjail started by root keeps the host's `/dev`: only the standard nodes open; block and
/// loop devices and the kernel log do not (nsjail: its own minimal `/dev`). Reads only.
#[test]
fn root_target_opens_only_standard_devices() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (devices are open to uid 0)");
        return;
    }
    let block = std::fs::read_dir("/sys/class/block")
        .unwrap()
        .flatten()
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .find(|p| Path::new(p).exists())
        .expect("a block device in /dev");
    for (name, jail) in both_jails() {
        let work = shared_tempdir();
        let script = format!(
            "for d in /dev/kmsg {block} /dev/loop-control; do [ -e $d ] || continue; \
               if python3 -c 'import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY))' $d \
               2>/dev/null; then echo \"GOT THROUGH: $d\"; fi; done; \
             head -c4 /dev/zero >/dev/null && head -c4 /dev/urandom >/dev/null && \
             echo ok > /dev/null && python3 -c 'import pty; pty.openpty()' && echo standard-ok"
        );
        let out = run_in(&jail, As::Root, work.path(), work.path(), &[], &script);
        let o = text(&out);
        assert!(!o.contains("GOT THROUGH"), "{name}: {o}");
        assert!(
            o.contains("standard-ok"),
            "{name}: standard devices broke: {o}"
        );
    }
}

/// The set-id attack: a target started by root makes files the host sees as root's (working
/// directory, `/tmp`); one with the setuid bit would run as root for every host user, outside
/// the jail's `no_new_privs`. In both jails `chmod u+s`/`g+s`, `install -m 4755`, and creating
/// a file with a set-id mode (`open`, `mknod`) fail; plain modes still work. Judged by the
/// files' modes read on the host after the run. Positive control: the same script as root
/// outside any jail makes set-id files.
#[test]
fn root_target_makes_no_setuid_files() {
    require_root().unwrap();
    let script = |tmp: &Path| {
        format!(
            "cp /bin/true p1 && chmod u+s p1; cp /bin/true p2 && chmod 2755 p2; \
             install -m 4755 /bin/true p3; \
             python3 -c 'import os; os.close(os.open(\"p4\", os.O_CREAT | os.O_WRONLY, 0o4755))'; \
             python3 -c 'import os, stat; os.mknod(\"p5\", stat.S_IFREG | 0o6755)'; \
             cp /bin/true {tmp} && chmod 4755 {tmp}; \
             cp /bin/true plain && chmod 755 plain && echo PLAIN-OK",
            tmp = tmp.display()
        )
    };
    let set_id = |dir: &Path, tmp: &Path| -> Vec<String> {
        let mut found = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.push(tmp.to_path_buf());
        for p in paths {
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o6000 != 0 {
                    found.push(p.display().to_string());
                }
            }
        }
        let _ = std::fs::remove_file(tmp);
        found
    };
    // Positive control: outside a jail the script makes set-id files.
    let work = shared_tempdir();
    let tmp = Path::new("/tmp").join(tag("setid-control"));
    let out = outside_jail(work.path(), &script(&tmp));
    let found = set_id(work.path(), &tmp);
    assert_eq!(found.len(), 6, "control: {found:?} {}", text(&out));
    for (name, jail) in both_jails() {
        let work = shared_tempdir();
        let tmp = Path::new("/tmp").join(tag(&format!("setid-{name}")));
        let out = run_in(
            &jail,
            As::Root,
            work.path(),
            Path::new("/root"),
            &[],
            &script(&tmp),
        );
        let o = text(&out);
        let found = set_id(work.path(), &tmp);
        assert!(
            found.is_empty(),
            "{name}: set-id files made: {found:?}\n{o}"
        );
        assert!(o.contains("PLAIN-OK"), "{name}: plain modes must work: {o}");
    }
}

/// Files in `dir` (and `tmp`) that carry a file capability, by `getcap` (libcap2-bin).
fn file_capabilities(dir: &Path, tmp: &Path) -> String {
    let out = Command::new("getcap")
        .arg("-r")
        .arg(dir)
        .arg(tmp)
        .output()
        .expect("getcap (libcap2-bin)");
    let _ = std::fs::remove_file(tmp);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `--nested-sandboxes` started by root: the uid 0 target keeps `CAP_SETFCAP` so bubblewrap
/// can map uid 0 into its own user namespace (Codex's arguments; the sandbox is uid 0 with
/// `0 0 1` as its map), but neither it, nor a user namespace it makes (every capability there,
/// its root the host's root), nor the bubblewrap sandbox can put a file capability on a file:
/// written there it would hold on the host (`cap_setuid` on an interpreter copy in `/tmp`, for
/// every user). Judged by `getcap` on the host after the run; the positive control is the same
/// script as root outside a jail, which makes three such files.
#[test]
fn root_target_with_nested_sandboxes_makes_no_file_capabilities() {
    require_root().unwrap();
    let bwrap = "bwrap --as-pid-1 --new-session --die-with-parent --ro-bind / / --dev /dev \
                 --bind \"$PWD\" \"$PWD\" --unshare-user --unshare-pid --unshare-ipc";
    let script = |tmp: &Path| {
        format!(
            "cp /bin/true c1 && setcap cap_setuid+ep c1; \
             cp /bin/true c2 && unshare -Ur setcap cap_setuid+ep c2; \
             cp /bin/true {tmp} && setcap cap_net_raw+ep {tmp}; \
             {bwrap} -- sh -c 'echo map=$(cat /proc/self/uid_map); cp /bin/true c3; \
             setcap cap_setuid+ep c3'; echo bwrap=$?",
            tmp = tmp.display()
        )
    };
    let work = shared_tempdir();
    let tmp = Path::new("/tmp").join(tag("fcaps-control"));
    let out = outside_jail(work.path(), &script(&tmp));
    let found = file_capabilities(work.path(), &tmp);
    assert_eq!(found.lines().count(), 4, "control: {found}\n{}", text(&out));

    let work = shared_tempdir();
    let tmp = Path::new("/tmp").join(tag("fcaps-nsjail"));
    let out = nested_as_root(work.path(), &script(&tmp));
    let o = text(&out);
    let found = file_capabilities(work.path(), &tmp);
    assert!(found.is_empty(), "file capabilities made: {found}\n{o}");
    // bubblewrap did run, as uid 0 mapped to the jail's uid 0.
    let map = o.lines().find(|l| l.starts_with("map="));
    assert!(
        map.is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["map=", "0", "0", "1"]),
        "bubblewrap did not run as root: {o}"
    );
    assert!(o.contains("bwrap=1"), "{o}");
}

/// Set-id files anywhere beneath `dir`, by mode (`find -perm /6000`, so copied-up files in an
/// overlay's upper directory count).
fn set_id_files_beneath(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(dir)
        .args(["-xdev", "-type", "f", "-perm", "/6000"])
        .output()
        .expect("find (findutils)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Mounts the file system type in a buffer that another thread keeps switching between
/// `tmpfs` and `overlay` (with overlay's options, which tmpfs refuses): a supervisor that
/// checked the type and then let the kernel read it again would sometimes mount the overlay.
/// Prints how many overlay mounts got through and copies `su` up through each one. Then bind
/// mounts each `/proc/self/fd/<n>`: made by the supervisor, that path must not name one of
/// boundary's own descriptors (its CA key, its sockets); the caller's own are not reachable
/// that way either (`ENOENT`).
const TYPE_RACE: &str = r#"
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(b"tmpfs\0\0\0", 8)
done = False
def flip():
    while not done:
        ctypes.memmove(buf, b"overlay\0", 8)
        ctypes.memmove(buf, b"tmpfs\0\0\0", 8)
t = threading.Thread(target=flip)
t.start()
opts = b"lowerdir=/usr/bin,upperdir=ru,workdir=rw"
won = 0
for _ in range(1500):
    if libc.mount(b"x", b"rm", buf, 0, opts) == 0:
        if " overlay " in open("/proc/self/mountinfo").read():
            won += 1
            os.utime("rm/su")
        libc.umount2(b"rm", 2)
done = True
t.join()
print("RACE-OVERLAY-MOUNTS=%d" % won)
os.open("/usr", os.O_RDONLY | os.O_DIRECTORY)
fds = [n for n in range(256)
       if libc.mount(b"/proc/self/fd/%d" % n, b"rm", None, 4096, None) == 0
       and libc.umount2(b"rm", 2) == 0]
print("FD-BINDS=%s" % fds)
"#;

/// `--nested-sandboxes` started by root: a nested user namespace's root is the host's root,
/// and an overlay mount there (lower `/usr/bin`, upper in the working directory) would copy
/// `su` up, setuid root, onto the host, inside the kernel. The jail's supervisor makes every
/// mount from its own copy of the arguments and mounts only memory and kernel file systems
/// fresh: the overlay fails, also when another thread swaps the type under the check, and
/// bubblewrap (tmpfs, binds, remounts) still works. A fresh `cgroup2` (host cgroup settings
/// the host's root owns) fails too. Judged by the working directory's files
/// on the host after the run. Positive control: the same script as root outside a jail (in
/// its own `unshare -Urm`) leaves setuid-root copies of `su`, by the plain mount and by the race.
#[test]
fn root_target_with_nested_sandboxes_cannot_copy_setuid_files_up() {
    require_root().unwrap();
    let script = format!(
        "mkdir -p u w m ru rw rm; \
         unshare -Urm sh -c 'mount -t overlay overlay -o lowerdir=/usr/bin,upperdir=u,workdir=w m \
         && touch m/su && echo OVERLAY-MOUNTED; \
         mount -t tmpfs scratch m && echo TMPFS-MOUNTED && umount m; \
         unshare -C mount -t cgroup2 none m && echo CGROUP2-MOUNTED && umount m; \
         python3 -c \"$0\"' '{TYPE_RACE}'; \
         bwrap --unshare-all --ro-bind / / --dev /dev --tmpfs /tmp --bind \"$PWD\" \"$PWD\" \
         -- sh -c 'touch /tmp/t && echo BWRAP-OK $(cat /proc/self/uid_map)'",
    );
    let control = shared_tempdir();
    let out = outside_jail(control.path(), &script);
    let o = text(&out);
    let found = set_id_files_beneath(control.path());
    assert!(
        o.contains("OVERLAY-MOUNTED") && found.iter().any(|f| f.ends_with("/u/su")),
        "control: the plain overlay should copy su up: {found:?}\n{o}"
    );
    assert!(
        !o.contains("RACE-OVERLAY-MOUNTS=0") && found.iter().any(|f| f.ends_with("/ru/su")),
        "control: the race should mount the overlay: {found:?}\n{o}"
    );
    assert!(
        o.contains("CGROUP2-MOUNTED"),
        "control: cgroup2 should mount: {o}"
    );
    assert!(
        o.contains("FD-BINDS=[") && !o.contains("FD-BINDS=[]"),
        "control: descriptors should bind: {o}"
    );

    let work = shared_tempdir();
    let out = nested_as_root(work.path(), &script);
    let o = text(&out);
    let found = set_id_files_beneath(work.path());
    assert!(found.is_empty(), "set-id files copied up: {found:?}\n{o}");
    assert!(!o.contains("OVERLAY-MOUNTED"), "{o}");
    assert!(o.contains("RACE-OVERLAY-MOUNTS=0"), "{o}");
    assert!(
        o.contains("FD-BINDS=[]"),
        "a descriptor was bind-mounted: {o}"
    );
    assert!(
        !o.contains("CGROUP2-MOUNTED"),
        "a fresh cgroup2 was mounted: {o}"
    );
    assert!(
        o.contains("refused a nested sandbox's mount"),
        "no reason logged: {o}"
    );
    // What nested sandboxes need still works: a fresh tmpfs, and bubblewrap as uid 0.
    assert!(o.contains("TMPFS-MOUNTED"), "{o}");
    assert!(
        o.contains("BWRAP-OK 0 0 1"),
        "bubblewrap did not run as root: {o}"
    );
}
