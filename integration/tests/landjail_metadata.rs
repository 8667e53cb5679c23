//! File metadata against a landjail target (issue 11, siblings of items 1 and 6): Landlock does
//! not control `chmod`, `chown`, times or extended attributes, so a target started by root
//! (uid 0 without capabilities, the owner of system files) could make an interpreter setuid
//! root or open `/etc/shadow` to everyone. The supervisor makes those changes only beneath the
//! writable paths (`jail/src/supervisor/meta.rs`).
//!
//! Started by root, the jailed command runs every metadata call (`ops.py`: the chmod, chown,
//! times and xattr families, by path, by directory descriptor, by a read-only descriptor opened
//! earlier, through `/proc/self/fd`, the inode flags `ioctl` of `chattr`, plus a hard link and a
//! symbolic link into the working directory) on a root-owned file the test makes under a fresh
//! directory in `/var/lib`: each call fails and the file's mode, owner, group, times (ctime
//! included, which any change moves) and extended attributes read before and after are the
//! same. The same calls on a file in the working directory work (but `FS_IOC_FSSETXATTR`,
//! `setxattrat` and setuid or setgid bits, by `chmod` or on new files, refused everywhere:
//! no such file appears), and so does everyday work (`everyday.sh`: `chmod +x`,
//! `touch`, `cp -p`, `tar x`, `git checkout`, `npm install` where npm exists). The supervisor
//! makes the changes with the target's rights, not boundary's: a file in the working directory
//! owned by another user cannot be chmodded, and no file can be given away. Started by an
//! unprivileged user, the same calls and everyday work succeed on the user's files, and a
//! root-owned file in `/tmp` stays unchanged.
//!
//! Needs root and `cargo build -p boundary` first. Packages: python3, coreutils, tar, git,
//! util-linux (runuser); nodejs's npm when present.

mod nsjail_common;
use nsjail_common::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const OPS: &str = include_str!("landjail_metadata/ops.py");
const EVERYDAY: &str = include_str!("landjail_metadata/everyday.sh");

/// What a metadata change would move: mode, owner, group, times (ns) and extended attributes.
#[derive(Debug, PartialEq, Eq)]
struct State {
    mode: u32,
    uid: u32,
    gid: u32,
    times: [(i64, i64); 3],
    xattrs: String,
}

fn state(p: &Path) -> State {
    let m = std::fs::symlink_metadata(p).unwrap();
    let x = Command::new("python3")
        .args([
            "-c",
            "import os,sys; p=sys.argv[1]; \
             print(sorted((n, os.getxattr(p, n, follow_symlinks=False)) \
             for n in os.listxattr(p, follow_symlinks=False)))",
        ])
        .arg(p)
        .output()
        .expect("python3");
    assert!(x.status.success(), "reading xattrs of {}", p.display());
    State {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        times: [
            (m.atime(), m.atime_nsec()),
            (m.mtime(), m.mtime_nsec()),
            (m.ctime(), m.ctime_nsec()),
        ],
        xattrs: String::from_utf8_lossy(&x.stdout).into_owned(),
    }
}

/// A file with the extended attributes `ops.py` removes, group `gid`, mode 0644.
fn victim_file(p: &Path, gid: u32) {
    std::fs::write(p, "original\n").unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(p, None, Some(gid)).unwrap();
    let st = Command::new("python3")
        .args([
            "-c",
            "import os,sys; [os.setxattr(sys.argv[1], 'user.keep%d' % i, b'1') for i in (1, 2, 3)]",
        ])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "setting xattrs on {}", p.display());
}

/// A directory no other run uses, under `/var/lib` (outside every writable path).
struct HostDir(PathBuf);

impl HostDir {
    fn new(what: &str) -> HostDir {
        let d = Path::new("/var/lib").join(format!("boundary-meta-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        HostDir(d)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `script` in landjail as `who` from `cwd` (also `$HOME`), with `ops.py` and `everyday.sh`
/// in `tools`.
fn landjail(who: As, cwd: &Path, script: &str) -> Output {
    let config = config_home(who);
    boundary_cmd(who, config.path(), &[])
        .current_dir(cwd)
        .env("HOME", cwd)
        .args(landjail_flags())
        .args(["--log-level", "error", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The test user's primary group.
fn user_gid() -> u32 {
    let out = Command::new("id").args(["-g", TEST_USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn tools() -> tempfile::TempDir {
    let d = shared_tempdir();
    std::fs::write(d.path().join("ops.py"), OPS).unwrap();
    std::fs::write(d.path().join("everyday.sh"), EVERYDAY).unwrap();
    d
}

/// The lines `ops.py` printed for the run between `start` and `end` markers.
fn section<'a>(out: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    let from = out
        .find(start)
        .map(|i| i + start.len())
        .unwrap_or(out.len());
    let to = out[from..].find(end).map(|i| from + i).unwrap_or(out.len());
    out[from..to]
        .lines()
        .filter(|l| l.starts_with("OK ") || l.starts_with("ERR "))
        .collect()
}

/// Every call worked but those landjail refuses everywhere: `setxattrat` (ENOSYS, libc falls
/// back), `FS_IOC_FSSETXATTR` (EPERM) and the setuid and setgid bits (`setid-`).
fn assert_all_worked(lines: &[&str], what: &str, o: &str) {
    assert!(lines.len() >= 20, "{what}: ops.py did not run: {o}");
    for l in lines {
        let refused_everywhere = l.starts_with("ERR setxattrat 38 ")
            || l.starts_with("ERR fssetxattr-read-only-fd 1 ")
            || l.starts_with("ERR setid-");
        assert!(
            l.starts_with("OK ") || refused_everywhere,
            "{what}: {l}\n{o}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERR setid-openat-create")),
        "{what}: {o}"
    );
}

/// Regular files with a setuid or setgid bit beneath `dir`.
fn set_id_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            out.extend(set_id_files(&e.path()));
        } else if m.is_file() && m.mode() & 0o6000 != 0 {
            out.push(e.path());
        }
    }
    out
}

/// Started by root, nothing outside the writable paths changes; inside they all work.
#[test]
fn root_target_cannot_change_metadata_outside_the_writable_paths() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (the attack is uid 0 owning system files)");
        return;
    }
    let uid = test_user();
    let host = HostDir::new("root");
    let victim = host.0.join("victim");
    victim_file(&victim, 65534);
    let (tools, work) = (tools(), shared_tempdir());
    let ctl = work.path().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    victim_file(&ctl.join("f"), 65534);
    // Another user's file in the working directory, and a root file to give away.
    let theirs = work.path().join("theirs");
    victim_file(&theirs, uid);
    std::os::unix::fs::chown(&theirs, Some(uid), None).unwrap();
    let mine = work.path().join("mine");
    victim_file(&mine, 0);
    let before = [state(&victim), state(&host.0), state(&theirs), state(&mine)];
    let t = tools.path().display();
    let script = format!(
        "echo ATTACK; python3 {t}/ops.py attack {v} {d} 0; echo END\n\
         echo CONTROL; python3 {t}/ops.py control {c}/f {c} 0; echo END\n\
         echo THEIRS; python3 {t}/ops.py control {theirs} {w} 0; echo END\n\
         python3 -c 'import os; os.chown(\"{mine}\", {uid}, -1)' 2>/dev/null && echo GAVE-AWAY\n\
         mkdir every && cd every && sh {t}/everyday.sh",
        v = victim.display(),
        d = host.0.display(),
        c = ctl.display(),
        theirs = theirs.display(),
        w = work.path().display(),
        mine = mine.display(),
    );
    let out = landjail(As::Root, work.path(), &script);
    let after = [state(&victim), state(&host.0), state(&theirs), state(&mine)];
    let o = text(&out);
    let attack = section(&o, "ATTACK", "END");
    assert!(attack.len() >= 20, "the attack did not run: {o}");
    let through: Vec<_> = attack.iter().filter(|l| l.starts_with("OK ")).collect();
    assert!(through.is_empty(), "attacks got through: {through:?}\n{o}");
    assert_eq!(before[0], after[0], "the victim file changed: {o}");
    assert_eq!(before[1], after[1], "the victim's directory changed: {o}");
    assert_all_worked(&section(&o, "CONTROL", "END"), "working directory", &o);
    let theirs_lines = section(&o, "THEIRS", "END");
    assert!(theirs_lines.len() >= 20, "{o}");
    // Reading times to now needs only write access (the file is 0644: none for root without
    // capabilities), so nothing on another user's file may work.
    let worked: Vec<_> = theirs_lines
        .iter()
        .filter(|l| l.starts_with("OK ") && !l.contains("chmod-dir"))
        .collect();
    assert!(
        worked.is_empty(),
        "the supervisor changed another user's file: {worked:?}\n{o}"
    );
    assert_eq!(before[2], after[2], "another user's file changed: {o}");
    assert!(!o.contains("GAVE-AWAY"), "a file was given away: {o}");
    assert_eq!(before[3], after[3], "{o}");
    assert!(o.contains("POSITIVE-OK"), "everyday work failed: {o}");
    let set_id = set_id_files(work.path());
    assert!(set_id.is_empty(), "setuid or setgid files: {set_id:?}\n{o}");
    assert!(out.status.success(), "{o}");
}

/// Started by a user, the same calls work on the user's files and a root file in `/tmp`
/// stays unchanged.
#[test]
fn user_target_changes_its_own_files_and_nothing_more() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    let uid = test_user();
    let gid = user_gid();
    let (tools, work, rootdir) = (tools(), shared_tempdir(), shared_tempdir());
    std::os::unix::fs::chown(work.path(), Some(uid), Some(uid)).unwrap();
    let ctl = work.path().join("ctl");
    std::fs::create_dir(&ctl).unwrap();
    victim_file(&ctl.join("f"), gid);
    std::os::unix::fs::chown(&ctl, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(ctl.join("f"), Some(uid), None).unwrap();
    let root_file = rootdir.path().join("root-file");
    victim_file(&root_file, 0);
    let before = state(&root_file);
    let t = tools.path().display();
    let script = format!(
        "echo CONTROL; python3 {t}/ops.py control {c}/f {c} {gid}; echo END\n\
         echo ROOTS; python3 {t}/ops.py control {r} {rd} {gid}; echo END\n\
         mkdir every && cd every && sh {t}/everyday.sh",
        c = ctl.display(),
        r = root_file.display(),
        rd = rootdir.path().display(),
    );
    let out = landjail(As::User, work.path(), &script);
    let o = text(&out);
    assert_all_worked(&section(&o, "CONTROL", "END"), "the user's file", &o);
    let roots = section(&o, "ROOTS", "END");
    assert!(roots.len() >= 20, "{o}");
    let worked: Vec<_> = roots.iter().filter(|l| l.starts_with("OK ")).collect();
    assert!(worked.is_empty(), "root's file changed: {worked:?}\n{o}");
    assert_eq!(before, state(&root_file), "{o}");
    assert!(o.contains("POSITIVE-OK"), "everyday work failed: {o}");
    let set_id = set_id_files(work.path());
    assert!(set_id.is_empty(), "setuid or setgid files: {set_id:?}\n{o}");
    assert!(out.status.success(), "{o}");
}
