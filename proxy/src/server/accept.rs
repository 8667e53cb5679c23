//! Phase 1, accepting: the accept loop, telling a redirected connection from one made to the
//! proxy on purpose, and, when the proxy serves a jail, asking once which jailed process made
//! the connection (`ProxyConfig::requesters`; every record of the connection names it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::sniff::{Leg, Pending};
use super::Proxy;
use crate::io::original_dst;

impl Proxy {
    /// Accept loop; runs until the future is dropped. Knows its own listen address (loop guard).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        self.add_listen_addr(local);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) if accept_error_is_transient(&e) => {
                    // Out of descriptors: close the oldest idle client connection and go on;
                    // when all are busy (or after aborted handshakes) wait a moment first.
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_fds && self.slots.shed() {
                        tracing::debug!(error = %e, "accept failed; closed an idle connection");
                        tokio::task::yield_now().await;
                    } else {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, %local, "the proxy listener failed");
                    return Err(e);
                }
            };
            let dst = diverted_dst(&stream, local)
                .or_else(|| original_dst(&stream))
                .filter(|d| !self.settings.is_self(*d) && *d != local);
            tracing::trace!(%peer, ?dst, "accepted");
            let slot = self.slots.admit();
            // Boxed: handed down by value, an unboxed future is copied into each wrapper's
            // state, and the task would hold three copies of it for the connection's life.
            let conn = Box::pin(self.clone().handle_connection(stream, dst));
            tokio::spawn(slot.run(conn));
        }
    }

    /// One accepted connection. original_dst = Some(addr) for a transparently redirected
    /// connection (serve() gets it from the accepted socket's own address when TPROXY handed
    /// it over, as in nsjail, else with SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST after a NAT
    /// redirect, v4 and v6; when neither says, or the original dst is the listener itself, it
    /// is explicit mode).
    pub async fn handle_connection(
        self: Arc<Self>,
        stream: TcpStream,
        original_dst: Option<SocketAddr>,
    ) {
        let _ = stream.set_nodelay(true);
        let requester = self.requester(&stream, original_dst);
        let leg = match original_dst {
            Some(d) if !self.settings.is_self(d) => Leg::Transparent(d),
            _ => Leg::Explicit,
        };
        let release = self.release.clone();
        self.serve_stream(stream, leg, requester).await;
        release.freed();
    }

    /// The process behind a connection, asked once when it is accepted (before any request:
    /// the process may exit soon after), when the proxy serves a jail. The lookup reads
    /// `/proc`, so it runs on a blocking thread while the client's first bytes arrive.
    fn requester(&self, stream: &TcpStream, original_dst: Option<SocketAddr>) -> Pending {
        let Some(lookup) = self.config.requesters.clone() else {
            return Pending::Known(None);
        };
        let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            return Pending::Known(None);
        };
        // The address the client connected to: the original destination when redirected.
        let dest = original_dst
            .or_else(|| crate::io::original_dst(stream))
            .unwrap_or(local);
        Pending::Looking(tokio::task::spawn_blocking(move || {
            Some(Arc::new(lookup(peer, dest)))
        }))
    }
}

/// The destination of a connection TPROXY handed to `listener` (nsjail's `divert` chain): the
/// connection keeps its addresses, so a socket accepted on a listener bound to one address
/// whose own address is another was made to that other address. `None` for a connection made
/// to the listener itself, and for a listener on the unspecified address (every local address
/// is its own).
fn diverted_dst(stream: &TcpStream, listener: SocketAddr) -> Option<SocketAddr> {
    if listener.ip().is_unspecified() {
        return None;
    }
    let own = stream.local_addr().ok()?;
    (own != listener).then_some(own)
}

/// Accept errors after which the listener still works (per-connection or resource trouble),
/// as opposed to a broken listening socket.
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut | OutOfMemory
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO | libc::EPERM
        )
    )
}
