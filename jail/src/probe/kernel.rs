//! Probes for the host kernel's settings (issue 11 item 1): can the jail open sysctl, sysfs and
//! cgroup files, or host devices, for writing? A file is only opened (no create, no truncate)
//! and closed at once; nothing is ever written, so the probe is safe even where it succeeds.

use std::fs::OpenOptions;

/// The probe kinds of this file.
pub(super) const KINDS: &[&str] = &["kwrite"];

pub(super) fn one(kind: &str, args: &[String]) -> Result<String, String> {
    match kind {
        "kwrite" => kwrite(args),
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
}
