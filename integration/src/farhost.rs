//! The far host of the end-to-end tests is the workspace's one far host, `boundary-farhost`
//! (also used by `boundary selftest` and the jail crate's tests); this module re-exports it
//! next to `boundary_binary()`, which finds the `boundary` executable the tests run.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub use boundary_farhost::{
    in_netns, require_root, Counters, Error, FarHost, Verdict, FAR_TCP_PORTS, FAR_UDP_PORTS,
};

/// The `boundary` executable of this workspace: `<target>/<profile>/boundary`, found next to the
/// running test executable (`target/<profile>/deps/<test>-<hash>`). Build it first with
/// `cargo build -p boundary` (same profile as the tests); this fails with that instruction when
/// it is missing. `BOUNDARY_BIN` overrides the path.
pub fn boundary_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOUNDARY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target/<profile> parent")?;
    let bin = profile_dir.join("boundary");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build -p boundary` (same profile as the tests), or set BOUNDARY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}
