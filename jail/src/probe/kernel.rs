//! Probes for the host kernel's settings (issue 11 item 1): can the jail open sysctl, sysfs and
//! cgroup files, or host devices, for writing? A file is only opened (no create, no truncate)
//! and closed at once; nothing is ever written, so the probe is safe even where it succeeds.
//! And can it change a host file's metadata (mode, owner, attributes)? Asked without changing
//! anything: replacing an extended attribute the file does not have.

use std::fs::OpenOptions;

/// The probe kinds of this file.
pub(super) const KINDS: &[&str] = &["kwrite", "kmeta"];

pub(super) fn one(kind: &str, args: &[String]) -> Result<String, String> {
    match kind {
        "kwrite" => kwrite(args),
        "kmeta" => kmeta(args),
        _ => Err(format!("unknown probe {kind}")),
    }
}

/// `kwrite PATH...`: "refused" when no path opens for writing, else names the ones that did.
fn kwrite(args: &[String]) -> Result<String, String> {
    if args.is_empty() {
        return Err("missing paths".into());
    }
    let mut opened = Vec::new();
    let mut refusals = Vec::new();
    for path in args {
        match OpenOptions::new().write(true).open(path) {
            // Dropped unwritten.
            Ok(_file) => opened.push(path.as_str()),
            Err(e) => refusals.push(format!("{path}: {e}")),
        }
    }
    Ok(if opened.is_empty() {
        format!("refused: {}", refusals.join("; "))
    } else {
        format!(
            "opened-for-writing (nothing written): {}",
            opened.join(", ")
        )
    })
}

/// The attribute `kmeta` asks to replace; no file has it, so nothing is ever set.
const ABSENT_XATTR: &str = "user.boundary-selftest-absent";

/// `kmeta PATH...`: `setxattr(XATTR_REPLACE)` of an attribute the file does not have. Where
/// metadata may change, the kernel reaches the filesystem and answers `ENODATA` (or
/// `EOPNOTSUPP`) without changing anything: "reachable". Where it may not, the jail or the
/// permission check answers `EPERM`, `EACCES` or `EROFS`: "refused" when every path is.
fn kmeta(args: &[String]) -> Result<String, String> {
    use rustix::io::Errno;
    if args.is_empty() {
        return Err("missing paths".into());
    }
    let mut reachable = Vec::new();
    let mut refusals = Vec::new();
    for path in args {
        let flags = rustix::fs::XattrFlags::REPLACE;
        match rustix::fs::setxattr(path.as_str(), ABSENT_XATTR, b"", flags) {
            Err(e) if [Errno::PERM, Errno::ACCESS, Errno::ROFS].contains(&e) => {
                refusals.push(format!("{path}: {e}"))
            }
            Err(e) if e == Errno::NOENT => refusals.push(format!("{path}: missing")),
            Err(e) => reachable.push(format!("{path} ({e})")),
            Ok(()) => reachable.push(format!("{path} (replaced?)")),
        }
    }
    Ok(if reachable.is_empty() {
        format!("refused: {}", refusals.join("; "))
    } else {
        format!(
            "reachable (metadata could change; nothing changed): {}",
            reachable.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_file_is_reported_and_left_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "keep").unwrap();
        let out = kwrite(&[f.display().to_string()]).unwrap();
        assert!(out.starts_with("opened-for-writing"), "{out}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
        let missing = d.path().join("missing").display().to_string();
        let out = kwrite(std::slice::from_ref(&missing)).unwrap();
        assert!(
            out.starts_with("refused") && out.contains(&missing),
            "{out}"
        );
        assert!(
            !d.path().join("missing").exists(),
            "the probe created a file"
        );
        assert!(kwrite(&[]).is_err());
    }

    #[test]
    fn metadata_that_may_change_is_reported_and_left_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "keep").unwrap();
        let before = std::fs::metadata(&f).unwrap();
        let out = kmeta(&[f.display().to_string()]).unwrap();
        assert!(out.starts_with("reachable"), "{out}");
        let after = std::fs::metadata(&f).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.mode(), before.ctime(), before.ctime_nsec()),
            (after.mode(), after.ctime(), after.ctime_nsec())
        );
        let missing = d.path().join("missing").display().to_string();
        let out = kmeta(&[missing]).unwrap();
        assert!(out.starts_with("refused"), "{out}");
        assert!(kmeta(&[]).is_err());
    }
}
