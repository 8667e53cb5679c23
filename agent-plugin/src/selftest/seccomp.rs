//! Selftest rows for what the jails' seccomp filter refuses: terminal injection, host-wide
//! kernel interfaces (vsock, keyrings, userfaultfd, io_uring) and changing host processes.
//! The probes behind them (`boundary_jail::probe`, file `seccomp.rs`) change nothing on the
//! host even where they succeed.

use super::table::{row, Arg::*, Expect::*, ProbeSpec, When::*};

/// The rows.
#[rustfmt::skip]
pub(super) const PROBES: &[ProbeSpec] = &[
    row("terminal injection (TIOCSTI) is refused", Always, "tty", &[], Refused),
    row("vsock sockets (the hypervisor's, around the namespace) are refused", Always, "vsock", &[], Refused),
    row("keyrings, userfaultfd and io_uring are refused", Always, "kernel", &[], Refused),
    row("host processes cannot be reniced", Always, "renice", &[Me], Refused),
];
