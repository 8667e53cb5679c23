//! The host's filesystem read-only to a root target, except the writable list.
//!
//! Built by init in the jail's mount namespace before anything else is mounted (the writable
//! list comes from `crate::writable`): each writable path's mount tree is cloned first, as it
//! is on the host (`open_tree`), then every mount of the namespace is made read-only in one
//! call (`mount_setattr(AT_RECURSIVE)`), then the clones are attached over their paths, so a
//! writable path keeps the host's own flags (a read-only mount under `$HOME` stays read-only).
//! The fresh `/proc`, sysfs and `/dev` come later, on top, as before.
//!
//! The target cannot undo it: it has no capabilities in the mount namespace (mounting,
//! remounting and `mount_setattr` need `CAP_SYS_ADMIN` there), and a nested user namespace is
//! refused by seccomp (and would find the mounts locked).

use std::path::PathBuf;

use crate::sys;

/// Makes every mount read-only except the trees at `writable` (canonical paths that exist).
pub fn readonly_except(writable: &[PathBuf]) -> Result<(), String> {
    let mut order: Vec<&PathBuf> = writable.iter().collect();
    // Outer paths first, so a writable path inside another is attached on top of it.
    order.sort_by_key(|p| p.components().count());
    let trees = order
        .iter()
        .map(|p| {
            sys::clone_tree(p).map(|fd| (*p, fd)).map_err(|e| {
                format!(
                    "cannot copy the mounts at {} for the jail: {e}",
                    p.display()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    sys::mount_tree_readonly(std::path::Path::new("/")).map_err(|e| {
        format!(
            "cannot make the host's files read-only in the jail (mount_setattr, Linux 5.12): \
             {e}; boundary started by root needs it to keep the jail from changing host \
             files; use a newer kernel, run boundary as an unprivileged user, or accept the \
             risk with root_filesystem: writable (--root-filesystem writable)"
        )
    })?;
    for (path, tree) in &trees {
        use std::os::fd::AsFd;
        sys::attach_tree(tree.as_fd(), path)
            .map_err(|e| format!("cannot make {} writable in the jail: {e}", path.display()))?;
    }
    Ok(())
}

/// Enters the working directory again by its path, so the target's relative paths resolve
/// through the writable copy on top (the old descriptor points at the read-only mount).
pub fn reenter_workdir() -> Result<(), String> {
    let cwd = std::env::current_dir()
        .map_err(|e| format!("reading the jail's working directory: {e}"))?;
    std::env::set_current_dir(&cwd)
        .map_err(|e| format!("entering the working directory {}: {e}", cwd.display()))
}
