//! Probes for the Unix socket policy and for jailed listeners (issue 11 items 4 and 8).
//!
//! `listen ADDR` binds a TCP socket to `ADDR` (an `IP:PORT`, port 0 for any), calls `listen()`
//! and closes it at once: it reports whether a jailed server could listen there, and never
//! waits for, or accepts, a connection.
//!
//! `udgram PATH` sends one datagram (`sendto` from an unconnected socket, the way around
//! `connect()`) to the datagram socket at `PATH`, which the selftest creates itself.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// `listen ADDR`: `listening ADDR` or `refused ...`.
pub(super) fn listen(args: &[String]) -> Result<String, String> {
    let addr: SocketAddr = args
        .first()
        .ok_or("missing address")?
        .parse()
        .map_err(|_| "bad address (IP:PORT)".to_string())?;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    if let Err(e) = s.bind(&addr.into()) {
        return Ok(format!("refused bind {addr}: {e}"));
    }
    match s.listen(1) {
        Ok(()) => Ok(format!(
            "listening {}",
            s.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| addr.to_string(), |a| a.to_string())
        )),
        Err(e) => Ok(format!("refused listen {addr}: {e}")),
    }
}

/// `udgram PATH`: `sent ...` or `refused ...`.
pub(super) fn udgram(args: &[String]) -> Result<String, String> {
    let path = args.first().ok_or("missing path")?;
    let s = std::os::unix::net::UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    match s.send_to(b"boundary-selftest", path) {
        Ok(n) => Ok(format!("sent {n} bytes to {path}")),
        Err(e) => Ok(format!("refused: {path}: {e}")),
    }
}
