//! Selftest rows for what the jails' seccomp filter refuses: terminal injection, host-wide
//! kernel interfaces (vsock, keyrings, userfaultfd, io_uring) and changing host processes.
//! The probes behind them (`boundary_jail::probe`, file `seccomp.rs`) change nothing on the
//! host even where they succeed.

use super::{refused, Probe};

/// The rows; `me` is the selftest's own pid, a process outside the jail.
pub(super) fn probes(me: &str) -> Vec<Probe> {
    vec![
        Probe::new("terminal injection (TIOCSTI) is refused", &["tty"], refused),
        Probe::new(
            "vsock sockets (the hypervisor's, around the namespace) are refused",
            &["vsock"],
            refused,
        ),
        Probe::new(
            "keyrings, userfaultfd and io_uring are refused",
            &["kernel"],
            refused,
        ),
        Probe::new("host processes cannot be reniced", &["renice", me], refused),
    ]
}
