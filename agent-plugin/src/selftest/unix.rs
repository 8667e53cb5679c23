//! Selftest rows for the Unix socket policy and jailed listeners (issue 11 items 4 and 8).
//!
//! The sockets are the selftest's own, in its temporary directory (`Arg::HostSocket`, served
//! by the runner): a stand-in for a host service (a relay would sit on such a socket) and one
//! named like Docker's, and a datagram socket nobody reads (`Arg::HostDatagram`). They only
//! accept and close, so nothing happens even if a jail let a probe through. The listener probe binds every address and closes at once; it needs no
//! inbound traffic.

use super::table::{row, Arg::*, Expect::*, ProbeSpec, When::*};

/// The rows.
#[rustfmt::skip]
pub(super) const PROBES: &[ProbeSpec] = &[
    row("a host service's Unix socket is unreachable", Always, "unix", &[HostSocket("host-service.sock")], Refused),
    row("a datagram to a host service's Unix socket (sendto) is refused", Always, "udgram", &[HostDatagram("host-datagram.sock")], Refused),
    row("a container runtime socket (docker.sock) is unreachable", Always, "unix", &[HostSocket("docker.sock")], Refused),
    row("listening on every address (0.0.0.0) is refused", Landjail, "listen", &[Lit("0.0.0.0:0")], Refused),
    row("listening on every address works inside the jail's own network namespace", Nsjail, "listen", &[Lit("0.0.0.0:0")], Info),
];
