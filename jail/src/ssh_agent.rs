//! The jail's SSH agent: a filter in front of the user's agent that passes only what `git` and
//! `ssh` need (list the keys, sign with one) and refuses everything else.
//!
//! Why not the agent itself: `ssh-agent` acts on its clients' requests outside any jail.
//! `ssh-add -s PROVIDER` makes it load a PKCS#11 library into its helper (OpenSSH allows any
//! library under `/usr/lib*/`, and refuses providers only to forwarded agents); p11-kit's
//! proxy module, installed almost everywhere, then loads whatever `~/.config/pkcs11/modules/`
//! names, a directory the jail can write: code of the jail's choosing running unjailed with the
//! host's network. Adding and removing keys, locking the agent and vendor extensions change the
//! user's agent for every other program. So the jail gets a socket of boundary's
//! ([`AgentFilter::path`]) whose requests are read here: `REQUEST_IDENTITIES`, `SIGN_REQUEST`
//! and the `session-bind@openssh.com` and `query` extensions go to the real agent; any other
//! request is answered `SSH_AGENT_FAILURE` (and logged) without reaching it.
//!
//! The real agent is reached through the socket file that was at `$SSH_AUTH_SOCK` when the run
//! started (held open as an `O_PATH` descriptor), so a jail that renames another socket onto
//! that path does not redirect the filter. Connections are bounded ([`MAX_CONNECTIONS`], each
//! closed after [`IDLE`] without a request) and messages by the protocol's 256 KiB.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const SIGN_REQUEST: u8 = 13;
const EXTENSION: u8 = 27;
/// Extensions passed: binding the agent to an SSH session (OpenSSH 8.9+ clients send it on
/// every connection) and asking which extensions exist.
const PASSED_EXTENSIONS: &[&[u8]] = &[b"session-bind@openssh.com", b"query"];
/// The protocol's own limit on a message (OpenSSH's `AGENT_MAX_LEN`).
const MAX_MESSAGE: usize = 256 * 1024;
/// Connections the jail may hold open to the filter at once (`ssh` and `git` use one each).
pub const MAX_CONNECTIONS: usize = 16;
/// A connection with no request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// A running filter; the socket directory goes when it is dropped.
pub struct AgentFilter {
    dir: PathBuf,
    path: PathBuf,
}

impl AgentFilter {
    /// Starts a filter in front of the agent at `real` (the caller's `$SSH_AUTH_SOCK`), in a
    /// fresh `0700` directory under `tmp`. `Ok(None)` when nothing is listening at `real`.
    pub fn start(real: &Path, tmp: &Path) -> io::Result<Option<AgentFilter>> {
        let upstream = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(real)
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let dir = nix::unistd::mkdtemp(&tmp.join("boundary-ssh-agent-XXXXXX"))?;
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        let upstream = Arc::new(upstream);
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("ssh-agent-filter".into())
            .spawn(move || serve(listener, upstream, open))?;
        Ok(Some(AgentFilter { dir, path }))
    }

    /// The socket the jail uses as its `$SSH_AUTH_SOCK`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentFilter {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(listener: UnixListener, upstream: Arc<OwnedFd>, open: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "SSH agent filter: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            warn!(
                "SSH agent filter: the jail holds {MAX_CONNECTIONS} agent connections already; \
                 closing a new one"
            );
            continue;
        }
        let (upstream, held) = (Arc::clone(&upstream), Arc::clone(&open));
        let spawned = std::thread::Builder::new()
            .name("ssh-agent-conn".into())
            .spawn(move || {
                if let Err(e) = relay(conn, &upstream) {
                    debug!(error = %e, "SSH agent filter: connection ended");
                }
                held.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Passes one client's allowed requests to the agent and the agent's answers back.
fn relay(mut client: UnixStream, upstream: &OwnedFd) -> io::Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    let mut agent: Option<UnixStream> = None;
    while let Some(msg) = read_message(&mut client)? {
        if let Some(refused) = refusal(&msg) {
            warn!(
                request = refused,
                "SSH agent filter: refused a request from the jail (only listing keys and \
                 signing reach the agent)"
            );
            client.write_all(&[0, 0, 0, 1, FAILURE])?;
            continue;
        }
        let a = match &mut agent {
            Some(a) => a,
            None => {
                let path = format!("/proc/self/fd/{}", upstream.as_raw_fd());
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(IDLE))?;
                agent.insert(s)
            }
        };
        write_message(a, &msg)?;
        let Some(answer) = read_message(a)? else {
            return Ok(());
        };
        write_message(&mut client, &answer)?;
    }
    Ok(())
}

/// Why `msg` does not go to the agent (its kind, for the log), or `None` when it may.
fn refusal(msg: &[u8]) -> Option<String> {
    match msg.first() {
        Some(&REQUEST_IDENTITIES) | Some(&SIGN_REQUEST) => None,
        Some(&EXTENSION) => {
            let name = msg
                .get(1..5)
                .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
                .and_then(|n| msg.get(5..5 + n));
            match name {
                Some(n) if PASSED_EXTENSIONS.contains(&n) => None,
                Some(n) => Some(format!("extension {}", String::from_utf8_lossy(n))),
                None => Some("malformed extension".into()),
            }
        }
        Some(t) => Some(format!("type {t}")),
        None => Some("empty message".into()),
    }
}

/// One length-prefixed message; `None` at a clean end of stream.
fn read_message(s: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an agent message of {n} bytes (the protocol allows 1 to {MAX_MESSAGE})"),
        ));
    }
    let mut msg = vec![0u8; n];
    s.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_message(s: &mut UnixStream, msg: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(4 + msg.len());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn only_listing_signing_and_session_binding_pass() {
        assert_eq!(refusal(&[11]), None);
        assert_eq!(refusal(&[13, 0, 0, 0, 0]), None);
        let ext = |name: &[u8]| {
            let mut m = vec![27];
            m.extend_from_slice(&(name.len() as u32).to_be_bytes());
            m.extend_from_slice(name);
            m
        };
        assert_eq!(refusal(&ext(b"session-bind@openssh.com")), None);
        assert!(refusal(&ext(b"restrict-destination-v00@openssh.com")).is_some());
        // ADD_SMARTCARD_KEY (20) and its constrained form (26), ADD_IDENTITY (17, 25),
        // REMOVE_IDENTITY (18), REMOVE_ALL (19), REMOVE_SMARTCARD_KEY (21), LOCK (22),
        // UNLOCK (23), the old RSA requests (1, 3), and a truncated extension.
        for t in [1u8, 3, 17, 18, 19, 20, 21, 22, 23, 25, 26] {
            assert!(refusal(&[t]).is_some(), "type {t}");
        }
        assert!(refusal(&[27, 0, 0, 0, 9, b'x']).is_some());
        assert!(refusal(&[]).is_some());
    }
}
