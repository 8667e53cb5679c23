//! The Landlock side: checking the kernel's ABI and preparing the ruleset in the parent.
//!
//! The ruleset is created before the fork (allocation and error handling are ordinary there);
//! the child only calls `landlock_restrict_self` on its descriptor.

use std::os::fd::OwnedFd;

use std::path::{Path, PathBuf};

use landlock::{
    make_bitflags, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope,
};
use tracing::{debug, info, warn};

use super::LandjailError;

/// The first ABI with TCP network rules (Linux 6.7).
pub const MIN_ABI: i32 = 4;
/// The first ABI with scoping of signals and abstract Unix sockets (Linux 6.12).
pub const SCOPE_ABI: i32 = 6;

/// Test builds only: pretend the kernel offers this ABI, to test the refusal path.
#[cfg(feature = "insecure-test-hooks")]
pub const FORCE_ABI_ENV: &str = "BOUNDARY_INSECURE_TEST_LANDLOCK_ABI";

/// Test builds only: `1` runs the target without the seccomp filter and supervisor (Landlock
/// alone, as the Go landjail), to show what the supervisor closes.
#[cfg(feature = "insecure-test-hooks")]
pub const NO_SECCOMP_ENV: &str = "BOUNDARY_INSECURE_TEST_LANDJAIL_NO_SECCOMP";

/// The Landlock ABI the running kernel offers: 0 when Landlock is missing or disabled.
pub fn kernel_abi() -> i32 {
    #[cfg(feature = "insecure-test-hooks")]
    if let Some(v) = std::env::var(FORCE_ABI_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        warn!(
            abi = v,
            "insecure test hook: pretending the kernel's Landlock ABI"
        );
        return v;
    }
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version (or an error); it reads no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(v).unwrap_or(0).max(0)
}

/// Fails with a clear message when the kernel cannot enforce landjail's network rules.
pub fn check_abi() -> Result<i32, LandjailError> {
    let abi = kernel_abi();
    if abi < MIN_ABI {
        return Err(LandjailError::UnsupportedKernel { found: abi });
    }
    info!(abi, "landjail: Landlock ABI found");
    if abi < SCOPE_ABI {
        warn!(
            abi,
            "landjail: this kernel has no Landlock scoping (ABI 6, Linux 6.12): jailed processes \
             can signal processes outside the jail"
        );
    }
    Ok(abi)
}

/// Top-level directories the target may not write in. `/proc`: every process's
/// `/proc/<pid>/oom_score_adj`, `autogroup`, `coredump_filter` and the like are writable by a
/// process of the same user, and landjail shares the host's PID namespace, so a write there
/// acts on processes outside the jail (a rule cannot tell `/proc/self` from another pid, so the
/// jail's own entries are read-only too). For root, `/proc/sys` too: without capabilities, uid
/// 0 still passes the owner permission bits (for example `net.ipv4.conf.*.route_localnet`:
/// the host's network configuration), `/proc/sysrq-trigger`; and `/sys`.
const NO_WRITE: &[&str] = &["proc", "sys"];

/// Device nodes a root target may open (read and write) in `/dev`, besides `pts/` and `shm/`
/// beneath: the harmless ones and the terminal, as nsjail's minimal `/dev`.
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "ptmx"];

/// Builds the ruleset: TCP connect only to `proxy_port`, TCP bind forbidden only when asked,
/// signals and abstract Unix sockets scoped to the jail when the kernel can, and the file
/// rules: with `writable` (boundary started by root, see `crate::writable`) changing files only
/// beneath those paths and opening only the standard device nodes in `/dev`; otherwise writing
/// files beneath every top-level directory except `/proc` and `/sys` (and not in `/` itself).
pub(crate) fn ruleset(
    abi: i32,
    proxy_port: u16,
    deny_bind: bool,
    writable: Option<&[PathBuf]>,
) -> Result<OwnedFd, LandjailError> {
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessNet::ConnectTcp)
        .map_err(err)?;
    if deny_bind {
        rs = rs.handle_access(AccessNet::BindTcp).map_err(err)?;
    }
    if abi >= SCOPE_ABI {
        rs = rs
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(err)?;
    }
    let handled = match writable {
        Some(_) => ROOT_WRITE | AccessFs::ReadFile,
        None => AccessFs::WriteFile.into(),
    };
    rs = rs.handle_access(handled).map_err(err)?;
    let created = rs
        .create()
        .map_err(err)?
        .add_rule(NetPort::new(proxy_port, AccessNet::ConnectTcp))
        .map_err(err)?;
    let created = match writable {
        Some(paths) => root_file_rules(created, paths)?,
        None => user_file_rules(created)?,
    };
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| LandjailError::Landlock("the kernel did not create a Landlock ruleset".into()))
}

/// Every way to change a file Landlock ABI 4 can refuse (write, truncate, create, remove,
/// rename and link across directories).
const ROOT_WRITE: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    WriteFile | Truncate | RemoveDir | RemoveFile | MakeChar | MakeDir | MakeReg | MakeSock
        | MakeFifo | MakeBlock | MakeSym | Refer
});

fn err(e: landlock::RulesetError) -> LandjailError {
    LandjailError::Landlock(e.to_string())
}

fn top_level() -> Result<Vec<std::fs::DirEntry>, LandjailError> {
    let entries = std::fs::read_dir("/")
        .map_err(|e| LandjailError::Landlock(format!("cannot list / for the file rules: {e}")))?;
    Ok(entries.flatten().collect())
}

/// The paths beneath which the target may change files, for Landlock's rules and for the
/// supervisor's metadata checks (`supervisor::meta`) alike: started by root, `writable`;
/// otherwise every top-level entry but `/proc` and `/sys`, resolved (`/bin` is `/usr/bin`).
pub(crate) fn writable_roots(writable: Option<&[PathBuf]>) -> Result<Vec<PathBuf>, LandjailError> {
    if let Some(w) = writable {
        return Ok(w.to_vec());
    }
    let mut out = Vec::new();
    for entry in top_level()? {
        let name = entry.file_name();
        if NO_WRITE.iter().any(|n| name == *n) {
            continue;
        }
        // Entries that cannot be resolved (a dangling symlink) get no rule: nothing to write.
        if let Ok(p) = std::fs::canonicalize(entry.path()) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Unprivileged target: writing files beneath every top-level entry but `/proc` and `/sys`.
fn user_file_rules(mut rs: RulesetCreated) -> Result<RulesetCreated, LandjailError> {
    for path in writable_roots(None)? {
        let Ok(fd) = PathFd::new(path) else {
            continue;
        };
        rs = rs
            .add_rule(PathBeneath::new(fd, AccessFs::WriteFile))
            .map_err(err)?;
    }
    debug!("landjail: no file under /proc or /sys is writable");
    Ok(rs)
}

/// Root target: reading everywhere but `/dev` (there only the standard nodes), changing files
/// only beneath `writable`.
fn root_file_rules(
    mut rs: RulesetCreated,
    writable: &[PathBuf],
) -> Result<RulesetCreated, LandjailError> {
    for entry in top_level()? {
        if entry.file_name() == "dev" {
            continue;
        }
        let Ok(fd) = PathFd::new(entry.path()) else {
            continue;
        };
        rs = rs
            .add_rule(PathBeneath::new(fd, AccessFs::ReadFile))
            .map_err(err)?;
    }
    let dev = Path::new("/dev");
    let rw = AccessFs::ReadFile | AccessFs::WriteFile;
    let nodes = DEV_NODES.iter().map(|n| (dev.join(n), rw));
    let dirs = [("pts", rw), ("shm", ROOT_WRITE | AccessFs::ReadFile)];
    let dirs = dirs.into_iter().map(|(n, a)| (dev.join(n), a));
    let paths = writable
        .iter()
        .map(|p| (p.clone(), ROOT_WRITE | AccessFs::ReadFile));
    for (path, access) in nodes.chain(dirs).chain(paths) {
        let Ok(fd) = PathFd::new(&path) else {
            continue;
        };
        // A rule on a file may only carry the rights that apply to files.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(landlock::ABI::V4)
        };
        rs = rs.add_rule(PathBeneath::new(fd, access)).map_err(err)?;
    }
    info!(
        writable = ?writable,
        "landjail: started by root, the jailed command may change files only beneath these paths"
    );
    Ok(rs)
}
