//! Secrets and boundary's own files against a hostile jailed command, in both jails (issue 11
//! items 5 and 6):
//! - the key that signs leaf certificates is never readable from inside, by any path, across
//!   runs and concurrent runs (rename of the config directory planted by a first jail, a second
//!   boundary starting while the first jail runs, the key paths next to the trusted cert);
//! - the caller's session keyring does not reach the target;
//! - nsjail: config.yaml, the config directory, `--log-dir` and `--audit-log` cannot be changed
//!   or renamed away; landjail: a change is reported loudly at exit and in the log.

mod nsjail_common;
use nsjail_common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Flags that are fresh for each run (landjail's port).
fn per_run(flags: &[&str]) -> Vec<String> {
    if flags == ["landjail"] {
        landjail_flags()
    } else {
        flags.iter().map(|s| s.to_string()).collect()
    }
}

const LAND: &[&str] = &["landjail"];

/// Public key (PEM) of a certificate, or of a private key file; None if it is neither.
fn public_key(path: &Path, is_cert: bool) -> Option<String> {
    let out = if is_cert {
        Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(path)
            .output()
    } else {
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(path)
            .output()
    }
    .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every private key in `loot` whose public key is `cert`'s.
fn matching_keys(loot: &Path, cert: &Path) -> Vec<PathBuf> {
    let want = public_key(cert, true).expect("certificate");
    let mut files = Vec::new();
    files_under(loot, &mut files);
    files
        .into_iter()
        .filter(|f| public_key(f, false).as_deref() == Some(want.as_str()))
        .collect()
}

fn world_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// A first jail renames the config directory and plants a fresh one, then, while it still
/// runs, a second boundary starts; the first jail copies everything it can reach (config
/// directories, every per-run CA directory, the key path next to the second run's trusted
/// cert). No copied file may hold the key of either run's CA.
fn ca_key_stays_out(who: As, flags: &[&str]) {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    let config = config_home(who);
    let work = shared_tempdir();
    world_writable(work.path());
    let loot = work.path().join("loot");
    let xdg = config.path().display().to_string();
    let first = format!(
        "cat \"$SSL_CERT_FILE\" > {w}/cert-a.pem; mv {xdg}/coder_boundary {xdg}/planted-old; \
         mkdir -p {xdg}/coder_boundary; ln {xdg}/coder_boundary/ca-key.pem {w}/link 2>/dev/null; \
         echo A-ready; read go; mkdir -p {l}; \
         for d in {xdg} /tmp/boundary-ca-* \"$(dirname \"$SSL_CERT_FILE\")\" {w}; do \
           cp -r \"$d\" {l}/ 2>/dev/null; done; \
         for f in $(cat {w}/b-paths 2>/dev/null); do cp \"$f\" {l}/ 2>/dev/null; done; echo A-done",
        w = work.path().display(),
        l = loot.display(),
    );
    let mut a = boundary_cmd(who, config.path(), &[])
        .args(per_run(flags))
        .args(["--log-level", "error", "--", "sh", "-c", &first])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut a_out = BufReader::new(a.stdout.take().unwrap());
    a_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "A-ready", "first jail did not start");
    let second = format!(
        "cat \"$SSL_CERT_FILE\" > {w}/cert-b.pem; d=$(dirname \"$SSL_CERT_FILE\"); \
         echo \"$d/ca-key.pem $d/ca-key.pem.tmp {xdg}/coder_boundary/ca-key.pem\" > {w}/b-paths; \
         cat $d/ca-key.pem {xdg}/coder_boundary/ca-key.pem > {w}/b-read.pem 2>/dev/null; \
         echo A; read go",
        w = work.path().display(),
    );
    let mut b = boundary_cmd(who, config.path(), &[])
        .args(per_run(flags))
        .args(["--log-level", "error", "--", "sh", "-c", &second])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bl = String::new();
    BufReader::new(b.stdout.take().unwrap())
        .read_line(&mut bl)
        .unwrap();
    // While the second run is live, the first jail takes what it can.
    if let Err(e) = a.stdin.take().unwrap().write_all(b"go\n") {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut a.stderr.take().unwrap(), &mut err);
        panic!("first jail ended early ({e}): {err} / {bl}");
    }
    let mut rest = String::new();
    a_out.read_line(&mut rest).unwrap();
    assert_eq!(rest.trim(), "A-done");
    let _ = b.stdin.take().unwrap().write_all(b"go\n");
    let b = b.wait_with_output().unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.status.success(), "second run: {}", text(&b));
    // Positive control: the matcher finds a key that belongs to a certificate.
    let ctl = work.path().join("control");
    std::fs::create_dir(&ctl).unwrap();
    self_signed(
        "control",
        &ctl.join("k.pem"),
        &work.path().join("control-cert.pem"),
    );
    assert_eq!(
        matching_keys(&ctl, &work.path().join("control-cert.pem")).len(),
        1,
        "control: the key matcher does not work"
    );
    for cert in ["cert-a.pem", "cert-b.pem"] {
        let cert = work.path().join(cert);
        assert!(cert.exists(), "{} missing", cert.display());
        let found = matching_keys(work.path(), &cert);
        assert!(
            found.is_empty(),
            "a jail read the key of the CA {}: {found:?}",
            cert.display()
        );
    }
}

#[test]
fn ca_key_stays_out_of_nsjail_as_root() {
    ca_key_stays_out(As::Root, &[]);
}

#[test]
fn ca_key_stays_out_of_nsjail_as_an_unprivileged_user() {
    ca_key_stays_out(As::User, &[]);
}

#[test]
fn ca_key_stays_out_of_landjail() {
    ca_key_stays_out(As::User, LAND);
}

/// A key added to the caller's session keyring outside is visible there (control) and not
/// inside, by search or by its id.
fn keyring_is_fresh(who: As, flags: &[&str]) {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    if Command::new("keyctl").arg("--version").output().is_err() {
        panic!("keyctl missing: install the Debian package keyutils");
    }
    let config = config_home(who);
    let bin = boundary_binary().unwrap();
    let inner = format!(
        "id=$(keyctl add user bnd-secret s3cr3t-bytes @s) || exit 9; \
         echo CONTROL $(keyctl print $id); export KID=$id; \
         {bin} {flags} --log-level error -- sh -c 'keyctl print $KID && echo LEAK-BY-ID; \
         keyctl search @s user bnd-secret && echo LEAK-BY-SEARCH; echo INSIDE-DONE'",
        bin = bin.display(),
        flags = per_run(flags).join(" "),
    );
    let mut cmd = Command::new(if who == As::User { "runuser" } else { "env" });
    if who == As::User {
        test_user();
        cmd.args(["-u", TEST_USER, "--", "env"]);
    }
    let out = cmd
        .arg(format!("PATH={PATH}"))
        .arg(format!("XDG_CONFIG_HOME={}", config.path().display()))
        .arg(format!("XDG_STATE_HOME={}", config.path().display()))
        .args(["keyctl", "session", "-", "sh", "-c", &inner])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("CONTROL s3cr3t-bytes"),
        "control: key not readable outside: {t}"
    );
    assert!(t.contains("INSIDE-DONE"), "the jail did not run: {t}");
    assert!(
        !t.contains("LEAK"),
        "the session keyring reached the jail: {t}"
    );
    assert!(
        !t.lines()
            .any(|l| l.contains("s3cr3t-bytes") && !l.starts_with("CONTROL")),
        "{t}"
    );
}

#[test]
fn session_keyring_is_fresh_in_nsjail() {
    keyring_is_fresh(As::Root, &[]);
    keyring_is_fresh(As::Root, &["--no-user-namespace"]);
    keyring_is_fresh(As::User, &[]);
}

#[test]
fn session_keyring_is_fresh_in_landjail() {
    keyring_is_fresh(As::Root, LAND);
    keyring_is_fresh(As::User, LAND);
}

const TAMPER: &str =
    "echo 'allowlist: [\"domain=*\"]' > $XDG_CONFIG_HOME/coder_boundary/config.yaml; \
    mv $XDG_CONFIG_HOME/coder_boundary $XDG_CONFIG_HOME/moved; \
    mv $XDG_CONFIG_HOME $XDG_CONFIG_HOME-moved; \
    cp /dev/null $BND_AUDIT; echo '{\"forged\":\"allow\"}' >> $BND_AUDIT; \
    echo forged-log-line >> $BND_LOGS/boundary.log; \
    mv $BND_AUDIT $BND_AUDIT.moved; echo TAMPER-DONE";

struct Files {
    config: tempfile::TempDir,
    conf_yaml: PathBuf,
    audit: PathBuf,
    logs: PathBuf,
}

fn files(who: As) -> Files {
    let config = config_home(who);
    let dir = config.path().join("coder_boundary");
    std::fs::create_dir(&dir).unwrap();
    let conf_yaml = dir.join("config.yaml");
    std::fs::write(&conf_yaml, "allowlist: [\"domain=only.example\"]\n").unwrap();
    let audit = config.path().join("audit.log");
    std::fs::write(&audit, "{\"earlier\":\"record\"}\n").unwrap();
    let logs = config.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    if who == As::User {
        let uid = test_user();
        for p in [&dir, &conf_yaml, &audit, &logs] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        }
    }
    Files {
        config,
        conf_yaml,
        audit,
        logs,
    }
}

fn tamper(who: As, f: &Files, flags: &[&str]) -> std::process::Output {
    let script = format!(
        "export BND_AUDIT={} BND_LOGS={}; {TAMPER}",
        f.audit.display(),
        f.logs.display()
    );
    boundary_cmd(who, f.config.path(), &[])
        .args(per_run(flags))
        .args(["--log-level", "info", "--audit-log"])
        .arg(&f.audit)
        .arg("--log-dir")
        .arg(&f.logs)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn nsjail_protects_own_files(who: As, flags: &[&str]) {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    let f = files(who);
    let out = tamper(who, &f, flags);
    let t = text(&out);
    assert!(t.contains("TAMPER-DONE"), "{t}");
    assert_eq!(
        std::fs::read_to_string(&f.conf_yaml).unwrap(),
        "allowlist: [\"domain=only.example\"]\n",
        "config.yaml changed: {t}"
    );
    assert!(!f.config.path().join("moved").exists(), "{t}");
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(
        audit.starts_with("{\"earlier\":\"record\"}\n"),
        "audit log rewritten: {audit}"
    );
    assert!(!audit.contains("forged"), "forged audit line: {audit}");
    let log = std::fs::read_to_string(f.logs.join("boundary.log")).unwrap_or_default();
    assert!(!log.contains("forged-log-line"), "forged log line: {log}");
}

#[test]
fn nsjail_protects_its_own_files_as_root() {
    nsjail_protects_own_files(As::Root, &[]);
    nsjail_protects_own_files(As::Root, &["--no-user-namespace"]);
}

/// An audit log on a stream (`--audit-log /dev/stdout`) is the caller's, not a file to protect:
/// the jail starts and the records arrive.
#[test]
fn an_audit_log_on_stdout_still_works() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root");
        return;
    }
    for flags in [vec![], landjail_flags()] {
        let config = config_home(As::Root);
        let out = boundary_cmd(As::Root, config.path(), &[])
            .args(&flags)
            .args(["--log-level", "error", "--audit-log", "/dev/stdout", "--"])
            .args([
                "sh",
                "-c",
                "echo jailed-ran; curl -s -o /dev/null http://denied.example/ || true",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success() && t.contains("jailed-ran"), "{t}");
        assert!(
            t.contains("denied.example"),
            "no audit record on stdout: {t}"
        );
    }
}

#[test]
fn nsjail_protects_its_own_files_as_an_unprivileged_user() {
    nsjail_protects_own_files(As::User, &[]);
}

/// Unmounts a test mount when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A file system mounted inside the config directory is read-only in the jail too: the
/// directory's bind is made read-only with every mount beneath it (one recursive
/// `mount_setattr`). As the unprivileged user, whose jail leaves the rest of the host writable,
/// so only that bind stands between the target and the files; the same write works outside.
#[test]
fn a_mount_inside_the_config_directory_is_read_only_in_nsjail() {
    require_root().unwrap();
    let f = files(As::User);
    let sub = f.config.path().join("coder_boundary").join("sub");
    std::fs::create_dir(&sub).unwrap();
    let uid = test_user();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size=64k,mode=0755,uid={uid}").as_str()),
    )
    .expect("mounting a tmpfs for the test");
    let _mounted = Mounted(sub.clone());
    let control = sub.join("written-outside");
    let out = outside(As::User, &["touch", &control.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        control.exists(),
        "the user writes there outside the jail: {}",
        text(&out)
    );

    let planted = sub.join("planted");
    let script = format!("touch {} ; echo touch=$?", planted.display());
    let out = boundary_cmd(As::User, f.config.path(), &[])
        .args(["--log-level", "error", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(t.contains("touch=1"), "{t}");
    assert!(!planted.exists(), "written through the jail: {t}");
}

/// landjail cannot stop its own uid; boundary says so at exit, on stderr and in the log.
#[test]
fn landjail_reports_changes_to_its_own_files() {
    if require_root().is_err() {
        eprintln!("SKIPPING: needs root (creates the test user)");
        return;
    }
    let f = files(As::User);
    let out = tamper(As::User, &f, LAND);
    let t = text(&out);
    assert!(t.contains("TAMPER-DONE"), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config_dir = f.config.path().join("coder_boundary");
    for what in [
        config_dir.display().to_string(),
        f.audit.display().to_string(),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("WARNING") && l.contains(&what)),
            "no warning about {what}: {t}"
        );
    }
    // The jail renamed the whole config home away; boundary's open log file moved with it.
    let moved = PathBuf::from(format!("{}-moved", f.config.path().display()));
    let log = std::fs::read_to_string(f.logs.join("boundary.log"))
        .or_else(|_| std::fs::read_to_string(moved.join("logs/boundary.log")))
        .unwrap_or_default();
    assert!(
        log.contains("boundary's own files changed") && log.contains("coder_boundary"),
        "no log record of the change: {log}"
    );
    // Control: a run that leaves the files alone reports nothing.
    let g = files(As::User);
    let quiet = boundary_cmd(As::User, g.config.path(), &[])
        .args(landjail_flags())
        .args(["--log-level", "error", "--audit-log"])
        .arg(&g.audit)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("WARNING"),
        "{}",
        text(&quiet)
    );
    let _ = std::fs::remove_dir_all(moved);
}

/// boundary holds the run's CA key in memory: landjail's target runs as the same uid, so
/// boundary makes itself non-dumpable (no core file with the key in it; the files of its
/// `/proc/<pid>` belong to root, so the target cannot read its memory or environment). Control:
/// the target's own `/proc/<pid>` files belong to the user.
#[test]
fn boundary_is_not_dumpable_for_landjails_target() {
    let uid = test_user();
    let out = jailed(
        As::User,
        &landjail_flags(),
        &[
            "sh",
            "-c",
            "echo parent=$(cat /proc/$PPID/comm) owner=$(stat -c %u /proc/$PPID/mem) self=$(stat -c %u /proc/$$/mem); \
             cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ=read || echo environ=refused",
        ],
    );
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("parent=boundary"),
        "the target's parent is boundary: {text}"
    );
    assert!(text.contains(&format!("self={uid}")), "control: {text}");
    assert!(
        text.contains("owner=0 "),
        "boundary's /proc files belong to root: {text}"
    );
    assert!(text.contains("environ=refused"), "{text}");
}

/// `boundary_cmd`, but starting the boundary executable at `bin`.
fn boundary_cmd_at(who: As, config: &Path, bin: &Path) -> Command {
    let c = boundary_cmd(who, config, &[]);
    let mut args: Vec<_> = c.get_args().map(|a| a.to_os_string()).collect();
    *args.last_mut().expect("boundary_cmd ends with the binary") = bin.as_os_str().into();
    let mut cmd = Command::new(c.get_program());
    cmd.args(args);
    cmd
}

/// What starts the next session must not be changeable from this one: the Coder module's
/// wrapper script (named with `--protect-path`, as the module's wrapper does) and boundary's own
/// executable, here both in a directory the jail may write (as an `install_command` under
/// `$HOME` would put them). The jailed command rewrites the script, appends to the executable
/// and renames another file over it. nsjail: nothing changes. landjail (cannot stop its own
/// uid): each change is reported at exit. Control: the same script against a copy that is not
/// the running executable, without `--protect-path`, changes both.
fn starting_files_are_protected(who: As, land: bool) {
    let work = shared_tempdir();
    let (bin_dir, scripts) = (work.path().join("bin"), work.path().join("scripts"));
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::create_dir(&scripts).unwrap();
    let bin = bin_dir.join("boundary");
    std::fs::copy(boundary_binary().unwrap(), &bin).unwrap();
    let wrapper = scripts.join("agent-firewall-wrapper.sh");
    let original = format!("#!/bin/sh\nexec {} \"$@\"\n", bin.display());
    std::fs::write(&wrapper, &original).unwrap();
    if who == As::User {
        let uid = test_user();
        for p in [work.path(), &bin_dir, &scripts, &bin, &wrapper] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
        }
    }
    let size = std::fs::metadata(&bin).unwrap().len();
    let script = format!(
        "echo 'echo UNJAILED' > {w}; echo x >> {b}; cp /bin/true {b}.new && mv {b}.new {b}; \
         echo TAMPER-DONE",
        w = wrapper.display(),
        b = bin.display()
    );
    let config = config_home(who);
    let run = |bin: &Path, protect: bool| {
        let mut cmd = boundary_cmd_at(who, config.path(), bin);
        if land {
            cmd.args(landjail_flags());
        }
        if protect {
            cmd.arg("--protect-path").arg(&scripts);
        }
        cmd.args(["--log-level", "error", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&bin, true);
    let t = text(&out);
    let ctx = format!("{who:?}, landjail {land}");
    assert!(t.contains("TAMPER-DONE"), "{ctx}: {t}");
    if land {
        let stderr = String::from_utf8_lossy(&out.stderr);
        for what in [&scripts, &bin] {
            assert!(
                stderr
                    .lines()
                    .any(|l| l.contains("WARNING") && l.contains(&*what.to_string_lossy())),
                "{ctx}: no warning about {}: {t}",
                what.display()
            );
        }
    } else {
        assert_eq!(
            std::fs::read_to_string(&wrapper).unwrap(),
            original,
            "{ctx}: {t}"
        );
        assert_eq!(std::fs::metadata(&bin).unwrap().len(), size, "{ctx}: {t}");
    }
    // Control: the same script changes both when they are not protected.
    std::fs::write(&wrapper, &original).unwrap();
    std::fs::copy(boundary_binary().unwrap(), &bin).unwrap();
    let out = run(&boundary_binary().unwrap(), false);
    let t = text(&out);
    assert!(t.contains("TAMPER-DONE"), "{ctx}: control: {t}");
    assert_ne!(
        std::fs::read_to_string(&wrapper).unwrap(),
        original,
        "{ctx}: control: {t}"
    );
    assert_ne!(
        std::fs::metadata(&bin).unwrap().len(),
        size,
        "{ctx}: control: {t}"
    );
}

#[test]
fn nsjail_protects_what_starts_the_next_session() {
    require_root().unwrap();
    starting_files_are_protected(As::Root, false);
    starting_files_are_protected(As::User, false);
}

#[test]
fn landjail_reports_changes_to_what_starts_the_next_session() {
    require_root().unwrap();
    starting_files_are_protected(As::Root, true);
    starting_files_are_protected(As::User, true);
}

/// The upstream proxy's credentials do not reach the jailed command: not through the
/// environment (boundary removes its own settings' variables, `BOUNDARY_UPSTREAM_PROXY` with
/// them), not through the config file in nsjail (hidden when it holds them), and landjail
/// refuses them on its command line (every jailed process could read `/proc/<pid>/cmdline`).
/// Positive controls: an unrelated variable reaches the target, and the config file is
/// readable in the jail when it holds no credentials.
#[test]
fn upstream_proxy_credentials_stay_out_of_the_jail() {
    require_root().unwrap();
    let secret = "s3cr3t-proxy-pass";
    let url = format!("http://alice:{secret}@192.0.2.1:3128");
    let probe = "env; cat \"$XDG_CONFIG_HOME/coder_boundary/config.yaml\" 2>&1; echo end";
    for (jail, flags) in both_jails() {
        let config = config_home(As::Root);
        let out = boundary_cmd(As::Root, config.path(), &[])
            .env("BOUNDARY_UPSTREAM_PROXY", &url)
            .env("KEEP_ME", "kept-value")
            .args(&flags)
            .args(["--", "sh", "-c", probe])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "{jail}: {t}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("KEEP_ME=kept-value"), "{jail}: {t}");
        assert!(
            !stdout.contains(secret),
            "{jail}: the password reached the jail: {t}"
        );
        assert!(!stdout.contains("BOUNDARY_UPSTREAM_PROXY"), "{jail}: {t}");
    }
    // The config file: hidden in nsjail when it holds credentials, readable otherwise.
    for (creds, hidden) in [(true, true), (false, false)] {
        let config = config_home(As::Root);
        let dir = config.path().join("coder_boundary");
        std::fs::create_dir_all(&dir).unwrap();
        let value = if creds {
            url.clone()
        } else {
            "http://192.0.2.1:3128".into()
        };
        std::fs::write(
            dir.join("config.yaml"),
            format!("# marker-line\nupstream_proxy: {value}\n"),
        )
        .unwrap();
        let out = boundary_cmd(As::Root, config.path(), &[])
            .args(["--jail-type", "nsjail", "--log-level", "error", "--config"])
            .arg(dir.join("config.yaml"))
            .args(["--", "sh", "-c", probe])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert!(out.status.success(), "creds={creds}: {t}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains(secret), "creds={creds}: {t}");
        assert_eq!(
            !stdout.contains("marker-line"),
            hidden,
            "creds={creds}: {t}"
        );
    }
    // landjail: on the command line, refused with the fix in the message.
    let config = config_home(As::Root);
    let out = boundary_cmd(As::Root, config.path(), &[])
        .args(landjail_flags())
        .args(["--upstream-proxy", &url, "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("BOUNDARY_UPSTREAM_PROXY"), "{t}");
    assert!(!t.contains(secret), "the refusal shows the password: {t}");
}

/// The default config file's directory (`~/.config/coder_boundary`, read by the next run when
/// no `--config` is given) is protected even when `XDG_CONFIG_HOME` moves the config directory
/// elsewhere and no config file exists yet: nsjail refuses to create the file there (the jail
/// wrote one and the next run loaded its rules, attack16 F13); landjail reports it at exit.
/// Positive control: the jail can write a sibling directory under `~/.config`.
#[test]
fn the_default_config_file_cannot_be_planted_for_the_next_run() {
    require_root().unwrap();
    let home = format!("/home/{TEST_USER}");
    let dir = format!("{home}/.config/coder_boundary");
    let _ = std::fs::remove_file(format!("{dir}/config.yaml"));
    let script = format!(
        "mkdir -p {dir} 2>/dev/null; \
         echo 'allowlist: [domain=planted.test]' > {dir}/config.yaml 2>/dev/null \
           && echo PLANTED || echo refused; \
         mkdir -p {home}/.config/other-tool && echo x > {home}/.config/other-tool/f \
           && echo control-written"
    );
    for (jail, flags) in both_jails() {
        let config = config_home(As::User);
        let out = boundary_cmd(As::User, config.path(), &[])
            .args(&flags)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("control-written"), "{jail}: {t}");
        if jail == "nsjail" {
            assert!(stdout.contains("refused"), "{jail}: {t}");
            assert!(!std::path::Path::new(&format!("{dir}/config.yaml")).exists());
        } else {
            // Same uid: cannot be prevented, must be reported.
            assert!(stdout.contains("PLANTED"), "{jail}: {t}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr
                    .lines()
                    .any(|l| l.contains("WARNING") && l.contains("coder_boundary")),
                "{jail}: the planted config file was not reported: {t}"
            );
            let _ = std::fs::remove_file(format!("{dir}/config.yaml"));
        }
    }
}
