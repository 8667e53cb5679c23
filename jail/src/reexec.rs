//! The re-exec hook: `boundary` runs its own executable again as the jail's namespace helper.
//!
//! Re-executing `/proc/self/exe` (instead of forking a multi-threaded parent) gives the helper a
//! clean single-threaded process in which `unshare(CLONE_NEWUSER)` is allowed and every Rust
//! facility is safe to use.

use std::ffi::OsStr;

/// argv[1] that marks the namespace helper (never shown to users).
pub(crate) const HELPER_ARG: &str = "__boundary-nsjail-helper";
/// After [`HELPER_ARG`]: the helper was started by sudo and connects to boundary's abstract
/// socket named by the next argument (sudo closes inherited descriptors).
pub(crate) const SUDO_ARG: &str = "--sudo";

/// Must be the first call in `main()` (before any thread or tokio runtime): if this process was
/// re-executed as the jail's in-namespace helper, it runs that and never returns.
pub fn init_hook() {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    if first.as_deref() != Some(OsStr::new(HELPER_ARG)) {
        crate::nsjail::privilege::note_startup_capabilities();
    }
    if first.as_deref() == Some(OsStr::new(crate::probe::PROBE_ARG)) {
        std::process::exit(crate::probe::main(args.collect()));
    }
    if first.as_deref() != Some(OsStr::new(HELPER_ARG)) {
        return;
    }
    let next = args.next();
    if next.as_deref() == Some(OsStr::new(SUDO_ARG)) {
        std::process::exit(match args.next() {
            Some(name) => crate::nsjail::helper::main_from_sudo(&name),
            None => 125,
        });
    }
    let fd = next.and_then(|a| a.to_str().and_then(|s| s.parse::<i32>().ok()));
    let code = match fd {
        Some(fd) => crate::nsjail::helper::main(fd),
        None => {
            eprintln!(
                "boundary: {HELPER_ARG} is internal to boundary and needs its control socket"
            );
            125
        }
    };
    std::process::exit(code);
}
