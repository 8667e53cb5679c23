//! Selftest probes for the Unix socket policy and jailed listeners (issue 11 items 4 and 8).
//!
//! The sockets are the selftest's own, in its temporary directory: a stand-in for a host
//! service (a relay would sit on such a socket) and one named like Docker's. They only accept
//! and close, so nothing happens even if a jail let a probe through. The listener probe binds
//! every address and closes at once; it needs no inbound traffic.

use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{Context, Result};

use super::{refused, Probe};

/// Creates the sockets under `dir` and returns the probes that aim at them.
pub(super) fn probes(dir: &Path, landjail: bool) -> Result<Vec<Probe>> {
    let service = dir.join("host-service.sock");
    let docker = dir.join("docker.sock");
    for p in [&service, &docker] {
        let l = UnixListener::bind(p).with_context(|| format!("binding {}", p.display()))?;
        std::thread::spawn(move || for _ in l.incoming() {});
    }
    let mut v = vec![
        Probe::new(
            "a host service's Unix socket is unreachable",
            &["unix", &service.to_string_lossy()],
            refused,
        ),
        Probe::new(
            "a container runtime socket (docker.sock) is unreachable",
            &["unix", &docker.to_string_lossy()],
            refused,
        ),
    ];
    v.push(if landjail {
        Probe::new(
            "listening on every address (0.0.0.0) is refused",
            &["listen", "0.0.0.0:0"],
            refused,
        )
    } else {
        Probe::informational(
            "listening on every address works inside the jail's own network namespace",
            &["listen", "0.0.0.0:0"],
        )
    });
    Ok(v)
}
