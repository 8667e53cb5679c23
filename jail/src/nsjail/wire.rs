//! The private protocol between `boundary`, its namespace helper and the jail's init: over the
//! control socketpair, length-prefixed frames of length-prefixed byte strings, file
//! descriptors in SCM_RIGHTS; over init's setup pipe, one [`SetupStatus`]. Failures cross
//! these process boundaries as a typed [`Failure`], never as text with a prefix.
//!
//! All ends are the same binary, so there is no versioning; a malformed frame is an error.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::JailError;

/// Largest frame we accept (argv + environment are far below this).
const MAX_FRAME: usize = 64 << 20;

/// What the helper needs to build the jail (everything in [`crate::JailSpec`] plus host facts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Inherited variables removed before `env` is applied.
    pub env_remove: Vec<OsString>,
    pub proxy_port: u16,
    pub user_namespace: bool,
    pub hide_paths: Vec<PathBuf>,
    /// Paths bound read-only in the jail (boundary's config directory and log files).
    pub readonly_paths: Vec<PathBuf>,
    /// Started by root: the only paths the target may write (`None`: the host's permissions).
    pub writable_paths: Option<Vec<PathBuf>>,
    /// Standard stream that is the controlling terminal the target should take over.
    pub tty_fd: Option<i32>,
    /// Test builds only (feature `insecure-test-hooks`): leave netfilter out.
    pub skip_netfilter: bool,
    /// The target may build sandboxes of its own ([`NsjailOptions::nested_sandboxes`](crate::NsjailOptions)).
    pub nested_sandboxes: bool,
}

/// Which socket each handed-back fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    ProxyTcp = 1,
    DnsUdp = 2,
    DnsTcp = 3,
    /// A pidfd for the jail's init (opened by the helper, which is init's parent, so it can
    /// never name a reused pid even if init has already exited).
    InitPidfd = 4,
    /// The seccomp notification listener of the jail's filter (init installed it): boundary
    /// runs the connect supervisor on it.
    SeccompListener = 5,
    /// A sock_diag netlink socket made inside the jail's network namespace, so the supervisor
    /// can tell the jail's own Unix sockets from the host's.
    UnixDiag = 6,
    /// Boundary's end of the channel to the jail's sender process, which carries out the
    /// supervisor's checked sends with the jail's credentials (`supervisor::sender`).
    Sender = 7,
    /// A second sock_diag socket from the jail's network namespace, for the proxy to find
    /// which jailed socket (and process) a connection it accepted comes from
    /// (`crate::attribution`); its own, so its lookups never interleave with the supervisor's.
    InetDiag = 8,
}

impl SocketKind {
    fn from_u8(b: u8) -> io::Result<Self> {
        Ok(match b {
            1 => SocketKind::ProxyTcp,
            2 => SocketKind::DnsUdp,
            3 => SocketKind::DnsTcp,
            4 => SocketKind::InitPidfd,
            5 => SocketKind::SeccompListener,
            6 => SocketKind::UnixDiag,
            7 => SocketKind::Sender,
            8 => SocketKind::InetDiag,
            _ => return Err(bad("unknown socket kind")),
        })
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("jail helper protocol: {what}"),
    )
}

/// Why the helper or the jail's init could not build the jail. It travels to `boundary` in
/// [`Reply::Failed`] and becomes a [`JailError`] there, with the same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The host refuses a namespace (or the fresh `/proc` a PID namespace needs).
    Namespaces {
        /// The step and what the kernel said.
        detail: String,
        /// How to fix it, naming the alternatives.
        hint: String,
    },
    /// The unprivileged helper could not create or use a user namespace (the host forbids
    /// them): boundary may then build the jail without one through `sudo` or its own file
    /// capabilities (see `privilege`).
    UserNamespace {
        /// The step and what the kernel said.
        detail: String,
    },
    /// Any other setup step, named in the text.
    Setup(String),
}

impl From<String> for Failure {
    fn from(text: String) -> Self {
        Failure::Setup(text)
    }
}

impl From<&str> for Failure {
    fn from(text: &str) -> Self {
        Failure::Setup(text.into())
    }
}

impl From<Failure> for JailError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Namespaces { detail, hint } => JailError::Namespaces { detail, hint },
            Failure::UserNamespace { detail } => JailError::Namespaces {
                detail,
                hint: super::privilege::no_user_namespace_hint(),
            },
            Failure::Setup(text) => JailError::Setup(text),
        }
    }
}

impl Failure {
    fn encode(&self, e: &mut Enc) {
        match self {
            Failure::Namespaces { detail, hint } => {
                e.u32(1);
                e.bytes(detail.as_bytes());
                e.bytes(hint.as_bytes());
            }
            Failure::Setup(text) => {
                e.u32(2);
                e.bytes(text.as_bytes());
            }
            Failure::UserNamespace { detail } => {
                e.u32(3);
                e.bytes(detail.as_bytes());
            }
        }
    }

    /// Reads a failure whose kind number `kind` was already read.
    fn decode(kind: u32, d: &mut Dec<'_>) -> io::Result<Failure> {
        Ok(match kind {
            1 => Failure::Namespaces {
                detail: d.text()?,
                hint: d.text()?,
            },
            2 => Failure::Setup(d.text()?),
            3 => Failure::UserNamespace { detail: d.text()? },
            _ => return Err(bad("unknown failure kind")),
        })
    }
}

/// What the jail's init writes to its setup pipe once: ready to start the target, or why not.
/// An empty pipe means init died before it could say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetupStatus {
    /// The jail is built and init waits to start the target.
    Ready,
    /// Setup failed.
    Failed(Failure),
}

impl SetupStatus {
    /// The bytes init writes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            SetupStatus::Ready => e.u32(0),
            SetupStatus::Failed(f) => f.encode(&mut e),
        }
        e.0
    }

    /// Reads what init wrote; `Ok(None)` for nothing at all (init died during setup).
    pub(crate) fn decode(buf: &[u8]) -> io::Result<Option<SetupStatus>> {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut d = Dec(buf);
        let status = match d.u32()? {
            0 => SetupStatus::Ready,
            kind => SetupStatus::Failed(Failure::decode(kind, &mut d)?),
        };
        d.end()?;
        Ok(Some(status))
    }
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        if self.0.len() < 4 {
            return Err(bad("truncated frame"));
        }
        let n = u32::from_be_bytes(self.0[..4].try_into().expect("4 bytes")) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err(bad("truncated field"));
        }
        self.0 = &rest[n..];
        Ok(&rest[..n])
    }
    fn u32(&mut self) -> io::Result<u32> {
        let b = self.bytes()?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| bad("bad number"))?,
        ))
    }
    fn os(&mut self) -> io::Result<OsString> {
        Ok(OsString::from_vec(self.bytes()?.to_vec()))
    }
    fn text(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(self.program.as_bytes());
        e.u32(self.args.len() as u32);
        for a in &self.args {
            e.bytes(a.as_bytes());
        }
        e.u32(self.env.len() as u32);
        for (k, v) in &self.env {
            e.bytes(k.as_bytes());
            e.bytes(v.as_bytes());
        }
        e.u32(self.env_remove.len() as u32);
        for k in &self.env_remove {
            e.bytes(k.as_bytes());
        }
        e.u32(self.proxy_port.into());
        e.u32(self.user_namespace.into());
        e.u32(self.hide_paths.len() as u32);
        for p in &self.hide_paths {
            e.bytes(p.as_os_str().as_bytes());
        }
        e.u32(self.readonly_paths.len() as u32);
        for p in &self.readonly_paths {
            e.bytes(p.as_os_str().as_bytes());
        }
        e.u32(
            self.writable_paths
                .as_ref()
                .map_or(0, |w| w.len() as u32 + 1),
        );
        for p in self.writable_paths.iter().flatten() {
            e.bytes(p.as_os_str().as_bytes());
        }
        e.u32(self.tty_fd.map(|f| f as u32 + 1).unwrap_or(0));
        e.u32(self.skip_netfilter.into());
        e.u32(self.nested_sandboxes.into());
        e.0
    }

    pub fn decode(buf: &[u8]) -> io::Result<Request> {
        let mut d = Dec(buf);
        let program = d.os()?;
        let n = d.u32()?;
        let args = (0..n).map(|_| d.os()).collect::<io::Result<_>>()?;
        let n = d.u32()?;
        let env = (0..n)
            .map(|_| Ok((d.os()?, d.os()?)))
            .collect::<io::Result<_>>()?;
        let n = d.u32()?;
        let env_remove = (0..n).map(|_| d.os()).collect::<io::Result<_>>()?;
        let proxy_port = u16::try_from(d.u32()?).map_err(|_| bad("port"))?;
        let user_namespace = d.u32()? != 0;
        let n = d.u32()?;
        let hide_paths = (0..n)
            .map(|_| d.os().map(PathBuf::from))
            .collect::<io::Result<_>>()?;
        let n = d.u32()?;
        let readonly_paths = (0..n)
            .map(|_| d.os().map(PathBuf::from))
            .collect::<io::Result<_>>()?;
        let n = d.u32()?;
        let writable_paths = match n {
            0 => None,
            n => Some(
                (1..n)
                    .map(|_| d.os().map(PathBuf::from))
                    .collect::<io::Result<_>>()?,
            ),
        };
        let tty = d.u32()?;
        let tty_fd = (tty != 0).then(|| tty as i32 - 1);
        let skip_netfilter = d.u32()? != 0;
        let nested_sandboxes = d.u32()? != 0;
        Ok(Request {
            program,
            args,
            env,
            env_remove,
            proxy_port,
            user_namespace,
            hide_paths,
            readonly_paths,
            writable_paths,
            tty_fd,
            skip_netfilter,
            nested_sandboxes,
        })
    }
}

/// Writes one frame.
pub fn send_frame(sock: &mut UnixStream, payload: &[u8]) -> io::Result<()> {
    sock.write_all(&(payload.len() as u32).to_be_bytes())?;
    sock.write_all(payload)
}

/// Reads one frame; `Ok(None)` on a clean end of stream before the frame started.
pub fn recv_frame(sock: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match sock.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(bad("frame too large"));
    }
    let mut buf = vec![0u8; n];
    sock.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// The helper's answer: the jail's init pid (in the parent's PID namespace) and the sockets,
/// or what went wrong.
pub enum Reply {
    Ready {
        init_pid: u32,
        sockets: Vec<(SocketKind, OwnedFd)>,
    },
    Failed(Failure),
}

/// Sends `Ready` (one byte of kinds per fd, the fds as SCM_RIGHTS) or `Failed`.
pub fn send_reply(sock: &UnixStream, reply: &Reply) -> io::Result<()> {
    let mut msg = Vec::new();
    let fds: Vec<RawFd> = match reply {
        Reply::Ready { init_pid, sockets } => {
            msg.push(b'R');
            msg.extend_from_slice(&init_pid.to_be_bytes());
            msg.extend(sockets.iter().map(|(k, _)| *k as u8));
            sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect()
        }
        Reply::Failed(failure) => {
            msg.push(b'F');
            let mut e = Enc::default();
            failure.encode(&mut e);
            msg.extend_from_slice(&e.0);
            Vec::new()
        }
    };
    let mut framed = (msg.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    let sent = crate::sys::send_with_fds(sock.as_fd(), &framed, &fds)?;
    if sent != framed.len() {
        return Err(bad("short write of the reply"));
    }
    Ok(())
}

/// Receives the helper's reply; `Ok(None)` if the helper died before answering.
pub fn recv_reply(sock: &UnixStream) -> io::Result<Option<Reply>> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = crate::sys::recv_with_fds(sock.as_fd(), &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n < 5 {
        return Err(bad("short reply"));
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len + 4 != n {
        return Err(bad("reply length mismatch"));
    }
    let body = &buf[4..n];
    match body[0] {
        b'R' => {
            if body.len() < 5 {
                return Err(bad("short ready reply"));
            }
            let init_pid = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes"));
            let kinds = &body[5..];
            if kinds.len() != fds.len() {
                return Err(bad("socket count mismatch"));
            }
            let sockets = kinds
                .iter()
                .zip(fds)
                .map(|(k, fd)| Ok((SocketKind::from_u8(*k)?, fd)))
                .collect::<io::Result<_>>()?;
            Ok(Some(Reply::Ready { init_pid, sockets }))
        }
        b'F' => {
            let mut d = Dec(&body[1..]);
            let kind = d.u32()?;
            let failure = Failure::decode(kind, &mut d)?;
            d.end()?;
            Ok(Some(Reply::Failed(failure)))
        }
        _ => Err(bad("unknown reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_non_utf8_bytes() {
        let r = Request {
            program: OsString::from_vec(b"/bin/\xffsh".to_vec()),
            args: vec!["-c".into(), "".into(), "exit 3".into()],
            env: vec![
                ("A".into(), "".into()),
                ("SSL_CERT_FILE".into(), "/x".into()),
            ],
            env_remove: vec!["BOUNDARY_UPSTREAM_PROXY".into()],
            proxy_port: 8080,
            user_namespace: true,
            hide_paths: vec!["/tmp/ca-key.pem".into()],
            readonly_paths: vec!["/tmp/conf".into(), "/tmp/audit.log".into()],
            writable_paths: Some(vec!["/work".into(), "/tmp".into()]),
            tty_fd: Some(0),
            skip_netfilter: false,
            nested_sandboxes: true,
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn truncated_request_is_an_error_not_a_panic() {
        let bytes = Request::default().encode();
        for cut in 0..bytes.len() {
            assert!(Request::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn namespace_failures_cross_as_their_own_kind_with_their_fix() {
        let failure = Failure::Namespaces {
            detail: "creating a user namespace: EPERM".into(),
            hint: "Fix: allow them, or use --jail-type landjail".into(),
        };
        let (a, b) = UnixStream::pair().unwrap();
        send_reply(&a, &Reply::Failed(failure.clone())).unwrap();
        let Some(Reply::Failed(got)) = recv_reply(&b).unwrap() else {
            panic!("expected a failure");
        };
        assert_eq!(got, failure);
        let e = JailError::from(got);
        let text = e.to_string();
        assert!(matches!(e, JailError::Namespaces { .. }));
        assert!(
            text.contains("EPERM") && text.contains("landjail"),
            "{text}"
        );
        assert!(matches!(
            JailError::from(Failure::from("nft failed")),
            JailError::Setup(_)
        ));
    }

    #[test]
    fn setup_status_round_trips_and_rejects_garbage() {
        for status in [
            SetupStatus::Ready,
            SetupStatus::Failed(Failure::Setup("mounting /sys: EPERM".into())),
            SetupStatus::Failed(Failure::Namespaces {
                detail: "mounting a fresh /proc: EPERM".into(),
                hint: "use --jail-type landjail".into(),
            }),
            SetupStatus::Failed(Failure::UserNamespace {
                detail: "creating a user namespace: EPERM".into(),
            }),
        ] {
            let bytes = status.encode();
            assert_eq!(SetupStatus::decode(&bytes).unwrap(), Some(status));
            for cut in 1..bytes.len() {
                assert!(SetupStatus::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert_eq!(SetupStatus::decode(&[]).unwrap(), None);
        assert!(SetupStatus::decode(b"OK").is_err());
    }
}
