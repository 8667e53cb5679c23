//! Sends that name a destination: `sendto` with an address, `sendmsg` and `sendmmsg`.
//!
//! An unconnected `AF_UNIX` datagram socket reaches any socket file by name on every send, so
//! these calls are decided like `connect()`: the filter notifies `sendto` with a non-NULL
//! address and every `sendmsg`/`sendmmsg` (BPF cannot read a `msghdr`, nor tell the socket's
//! family from a descriptor number). The supervisor copies the message out of the caller
//! (address, data, control messages), confirms the caller is still in the call, takes the
//! socket with `pidfd_getfd`, decides a filesystem name with the Unix socket policy (the same
//! as `connect()`, through the `O_PATH` descriptor of the checked socket file), and sends its
//! own copy. It never lets the kernel continue the call: another thread could rewrite the
//! message or swap the descriptor between the check and the kernel's own read. The send itself
//! is made here in landjail, and by the sender process in nsjail ([`super::sender`]: boundary
//! owns the jail's user namespace, so its own sends would pass capability checks there); both
//! take the [`Message`] this module builds.
//!
//! Control messages: `SCM_RIGHTS` descriptors are taken from the caller with `pidfd_getfd`
//! and sent as ours (the same open files); `SCM_CREDENTIALS` is refused (`EPERM`, logged):
//! the credentials would be checked against boundary's process, not the caller's. Others
//! (`IP_PKTINFO`, `UDP_SEGMENT`, timestamps, ...) carry no descriptors or pointers and are
//! passed as they are. Sends are made with `MSG_NOSIGNAL`: a send on a closed stream returns
//! `EPIPE` instead of raising `SIGPIPE` in the caller. At most [`MAX_DATA`] bytes are sent per
//! message (a stream send returns a short count, a larger datagram fails with `EMSGSIZE`);
//! `sendmmsg` sends up to [`MAX_MSGS`] messages and writes each `msg_len` back. A blocking call
//! is first tried without waiting (most sends never wait) and only what would wait is handed to
//! a thread of its own, so the supervisor is not held up and starts no thread per send.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use tracing::warn;

use super::target::{read_mem, thread_pidfd, write_mem};
use super::{errno, id_valid, unix, Net, Policy};

/// Most bytes one message carries through the supervisor.
pub(super) const MAX_DATA: usize = 1 << 20;
/// Most bytes a stream send that has to wait keeps while it waits (a short count when the
/// socket takes it, as a blocking send may also return): a jail parking many sends on sockets
/// nobody reads must not make boundary hold 1 MiB for each.
const PARKED_STREAM_DATA: usize = 64 << 10;
/// Most messages one `sendmmsg` sends through the supervisor (the caller sends the rest).
pub(super) const MAX_MSGS: usize = 64;
/// The kernel's limits: iovecs per message, socket address size, control bytes.
const MAX_IOV: usize = 1024;
const MAX_NAME: usize = 128;
const MAX_CONTROL: usize = 64 << 10;
/// `struct msghdr` and `struct mmsghdr` on 64-bit Linux.
const MSGHDR: usize = 56;
const MMSGHDR: usize = 64;

/// One message, copied out of the caller and made ours.
pub(super) struct Message {
    /// The destination as sent from this process (a checked socket file: `/proc/self/fd/<n>`
    /// of [`dest`](Self::dest)).
    pub(super) name: Vec<u8>,
    /// The checked socket file the name leads to, when it is a filesystem Unix name.
    pub(super) dest: Option<OwnedFd>,
    pub(super) data: Vec<u8>,
    /// Control messages, `SCM_RIGHTS` slots holding the numbers of [`rights`](Self::rights).
    pub(super) control: Vec<u8>,
    /// The `SCM_RIGHTS` files, in the order their numbers appear in `control`.
    pub(super) rights: Vec<OwnedFd>,
}

/// A checked send to carry out.
pub(super) struct CheckedSend {
    sock: OwnedFd,
    msgs: Vec<Message>,
    flags: i32,
    /// `sendmmsg`: the caller and its `mmsghdr` array, to write each `msg_len` back.
    lens_at: Option<(u32, u64)>,
    /// nsjail: the process that sends with the jail's credentials ([`super::sender`]).
    via: Option<std::sync::Arc<super::sender::Sender>>,
    /// A stream socket (a send may be cut short; a datagram's boundaries must stay).
    stream: bool,
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks one send; `None` when the caller is no longer waiting.
pub(super) fn check_send(
    req: &libc::seccomp_notif,
    policy: &Policy,
    notify: RawFd,
) -> Option<Result<CheckedSend, i32>> {
    let tid = req.pid;
    let a = req.data.args;
    let nr = i64::from(req.data.nr);
    let pidfd = match thread_pidfd(tid) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(errno(&e))),
    };
    // Raw copies first (nothing taken from the caller yet), then the validity check.
    let raw = match read_raw(nr, &a, tid) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    if !id_valid(req.id, notify) {
        return None;
    }
    let sock = match crate::sys::pidfd_getfd(&pidfd, a[0] as i32) {
        Ok(fd) => fd,
        Err(e) => return Some(Err(errno(&e))),
    };
    let domain = match super::socket_domain(&sock) {
        Ok(d) => d,
        Err(e) => return Some(Err(errno(&e))),
    };
    let stream = is_stream(&sock);
    if stream
        && matches!(domain, libc::AF_INET | libc::AF_INET6)
        && raw.flags & libc::MSG_FASTOPEN != 0
    {
        // TCP Fast Open connects without connect() (nsjail allows it): note the caller the
        // same way, before the send that makes the connection.
        crate::attribution::note_connect(&policy.connects, &sock, tid);
    }
    let mut msgs = Vec::with_capacity(raw.msgs.len());
    for (name, mut data, control) in raw.msgs {
        if data.len() > MAX_DATA {
            if !stream {
                return Some(Err(libc::EMSGSIZE));
            }
            data.truncate(MAX_DATA);
        }
        let (name, dest) = match decide_name(domain, name, tid, policy) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let mut rights = Vec::new();
        let control = match own_control(&control, &pidfd, tid, &mut rights) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        msgs.push(Message {
            name,
            dest,
            data,
            control,
            rights,
        });
    }
    let lens_at = (nr == libc::SYS_sendmmsg).then_some((tid, a[1]));
    Some(Ok(CheckedSend {
        sock,
        msgs,
        flags: raw.flags,
        lens_at,
        stream,
        via: match &policy.net {
            Net::Namespace { sender, .. } => Some(std::sync::Arc::clone(sender)),
            Net::Host { .. } => None,
        },
    }))
}

/// One message as the caller wrote it: name, data, control bytes.
type RawMsg = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The caller's messages as bytes, and the flags.
struct Raw {
    msgs: Vec<RawMsg>,
    flags: i32,
}

fn read_raw(nr: i64, a: &[u64; 6], tid: u32) -> Result<Raw, i32> {
    if nr == libc::SYS_sendto {
        let name_len = a[5] as u32 as usize;
        if name_len > MAX_NAME {
            return Err(libc::EINVAL);
        }
        let len = (a[2] as usize).min(MAX_DATA + 1);
        let data = read_mem(tid, a[1], len)?;
        let name = read_mem(tid, a[4], name_len)?;
        return Ok(Raw {
            msgs: vec![(name, data, Vec::new())],
            flags: a[3] as i32,
        });
    }
    if nr == libc::SYS_sendmsg {
        let hdr = read_mem(tid, a[1], MSGHDR)?;
        return Ok(Raw {
            msgs: vec![read_msghdr(&hdr, tid)?],
            flags: a[2] as i32,
        });
    }
    let count = (a[2] as u32 as usize).min(MAX_MSGS);
    let all = read_mem(tid, a[1], count * MMSGHDR)?;
    let msgs = all
        .chunks(MMSGHDR)
        .map(|h| read_msghdr(&h[..MSGHDR], tid))
        .collect::<Result<_, _>>()?;
    Ok(Raw {
        msgs,
        flags: a[3] as i32,
    })
}

/// Name, data (all iovecs, in order) and control bytes of one `msghdr` of the caller.
fn read_msghdr(h: &[u8], tid: u32) -> Result<RawMsg, i32> {
    let (name_at, name_len) = (word(h, 0), word(h, 8) as u32 as usize);
    let (iov_at, iov_len) = (word(h, 16), word(h, 24) as usize);
    let (ctl_at, ctl_len) = (word(h, 32), word(h, 40) as usize);
    if name_len > MAX_NAME && name_at != 0 {
        return Err(libc::EINVAL);
    }
    if iov_len > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    if ctl_len > MAX_CONTROL {
        return Err(libc::ENOBUFS);
    }
    let name = if name_at == 0 {
        Vec::new()
    } else {
        read_mem(tid, name_at, name_len)?
    };
    let iovs = read_mem(tid, iov_at, iov_len * 16)?;
    let mut data = Vec::new();
    for v in iovs.chunks(16) {
        let want = (word(v, 8) as usize).min(MAX_DATA + 1 - data.len());
        data.extend(read_mem(tid, word(v, 0), want)?);
        if data.len() > MAX_DATA {
            break;
        }
    }
    let control = read_mem(tid, ctl_at, ctl_len)?;
    Ok((name, data, control))
}

fn is_stream(sock: &OwnedFd) -> bool {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    getsockopt(sock, sockopt::SockType).is_ok_and(|t| t == SockType::Stream)
}

/// The address to send to: a filesystem Unix name goes through the policy and becomes the
/// checked socket file's `/proc/self/fd/<n>`; other names are sent as they are (nsjail's own
/// network namespace decides them; landjail has only TCP, route and sock_diag sockets).
fn decide_name(
    domain: i32,
    name: Vec<u8>,
    tid: u32,
    policy: &Policy,
) -> Result<(Vec<u8>, Option<OwnedFd>), i32> {
    if domain != libc::AF_UNIX || name.len() <= 2 {
        return Ok((name, None));
    }
    let path = &name[2..];
    if path[0] == 0 {
        // Abstract: landjail's supervisor sits outside the Landlock domain whose scoping keeps
        // the host's abstract sockets out of reach, so it must not send there for the caller.
        return match policy.net {
            Net::Host { .. } => Err(libc::EACCES),
            Net::Namespace { .. } => Ok((name, None)),
        };
    }
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    let fd = unix::check_path(&policy.unix, &policy.listeners(), tid, &path[..end])?;
    let name = super::connect::sockaddr_un(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes());
    Ok((name, Some(fd)))
}

/// The control messages with the caller's `SCM_RIGHTS` descriptors replaced by ours (pushed
/// onto `held` in the order they appear).
fn own_control(
    control: &[u8],
    pidfd: &OwnedFd,
    tid: u32,
    held: &mut Vec<OwnedFd>,
) -> Result<Vec<u8>, i32> {
    map_control(
        control,
        |level, kind| {
            if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
                warn!(
                    tid,
                    "jail: refused a send with SCM_CREDENTIALS (the supervisor cannot vouch \
                     for the caller's credentials)"
                );
                return Err(libc::EPERM);
            }
            Ok(())
        },
        |theirs| {
            let ours = crate::sys::pidfd_getfd(pidfd, theirs).map_err(|e| errno(&e))?;
            let n = ours.as_fd().as_raw_fd();
            held.push(ours);
            Ok(n)
        },
    )
}

/// Copies the control messages `control`, each header first shown to `check`, every
/// `SCM_RIGHTS` descriptor number replaced by `map`'s; `EINVAL` for a torn message.
pub(super) fn map_control(
    control: &[u8],
    mut check: impl FnMut(i32, i32) -> Result<(), i32>,
    mut map: impl FnMut(i32) -> Result<i32, i32>,
) -> Result<Vec<u8>, i32> {
    const HDR: usize = 16;
    let mut out = Vec::with_capacity(control.len());
    let mut at = 0;
    while at + HDR <= control.len() {
        let len = word(control, at) as usize;
        if len < HDR || at + len > control.len() {
            return Err(libc::EINVAL);
        }
        let level = i32::from_ne_bytes(control[at + 8..at + 12].try_into().expect("4 bytes"));
        let kind = i32::from_ne_bytes(control[at + 12..at + 16].try_into().expect("4 bytes"));
        let body = &control[at + HDR..at + len];
        let start = out.len();
        out.extend_from_slice(&control[at..at + HDR]);
        check(level, kind)?;
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            for n in body.chunks_exact(4) {
                let fd = map(i32::from_ne_bytes(n.try_into().expect("4 bytes")))?;
                out.extend_from_slice(&fd.to_ne_bytes());
            }
        } else {
            out.extend_from_slice(body);
        }
        out.resize(start + ((len + 7) & !7), 0);
        at += (len + 7) & !7;
    }
    Ok(out)
}

impl CheckedSend {
    /// Sends now if that cannot wait: always for a non-blocking call; for a blocking one, as
    /// far as the socket takes it without waiting (a short count, or fewer `sendmmsg` messages,
    /// as a blocking call may also return). `Err(self)` when nothing could be sent without
    /// waiting: carry it out with [`perform`](Self::perform) on a thread of its own.
    pub(super) fn try_now(self) -> Result<Result<i64, i32>, CheckedSend> {
        let blocking = self.flags & libc::MSG_DONTWAIT == 0
            && crate::sys::is_nonblocking(self.sock.as_fd()) != Some(true);
        if !blocking {
            return Ok(self.send_all(0));
        }
        match self.send_all(libc::MSG_DONTWAIT) {
            Err(libc::EAGAIN) => Err(self.parked()),
            done => Ok(done),
        }
    }

    /// The send as it waits: stream data cut to [`PARKED_STREAM_DATA`] (message boundaries of
    /// datagrams are kept; the kernel bounds their size by the socket's buffer).
    fn parked(mut self) -> CheckedSend {
        if self.stream {
            for m in &mut self.msgs {
                if m.data.len() > PARKED_STREAM_DATA {
                    m.data.truncate(PARKED_STREAM_DATA);
                    m.data.shrink_to_fit();
                }
            }
        }
        self
    }

    /// Sends as the caller asked (may wait).
    pub(super) fn perform(self) -> Result<i64, i32> {
        self.send_all(0)
    }

    /// Sends every message in order; the result is the byte count (`sendto`, `sendmsg`) or
    /// the number of messages sent (`sendmmsg`, at least one or the first error).
    fn send_all(&self, extra: i32) -> Result<i64, i32> {
        // Our copy is freed after the call: the kernel must not keep reading it (zero-copy).
        let flags = (self.flags & !libc::MSG_ZEROCOPY) | libc::MSG_NOSIGNAL | extra;
        let mut sent = 0usize;
        let mut last = 0usize;
        for (i, m) in self.msgs.iter().enumerate() {
            let result = match &self.via {
                Some(sender) => sender.send(self.sock.as_fd(), m, flags),
                None => {
                    crate::sys::send_msg(self.sock.as_fd(), &m.name, &m.data, &m.control, flags)
                }
            };
            match result {
                Ok(n) => {
                    last = n;
                    sent += 1;
                    if let Some((tid, at)) = self.lens_at {
                        let at = at + (i * MMSGHDR + MSGHDR) as u64;
                        let _ = write_mem(tid, at, &(n as u32).to_ne_bytes());
                    }
                }
                Err(e) if sent == 0 => return Err(errno(&e)),
                Err(_) => break,
            }
        }
        Ok(if self.lens_at.is_some() { sent } else { last } as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, body: &[u8]) -> Vec<u8> {
        let mut v = ((16 + body.len()) as u64).to_ne_bytes().to_vec();
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(body);
        v.resize((v.len() + 7) & !7, 0);
        v
    }

    #[test]
    fn rights_become_ours_others_pass_and_credentials_are_refused() {
        let pidfd = crate::sys::pidfd_open(std::process::id()).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let theirs = file.as_raw_fd().to_ne_bytes();
        let tos = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x10, 0, 0, 0]);
        let mut control = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &theirs);
        control.extend_from_slice(&tos);
        let mut held = Vec::new();
        let out = own_control(&control, &pidfd, 0, &mut held).unwrap();
        assert_eq!(out.len(), control.len());
        assert_eq!(held.len(), 1);
        let ours = i32::from_ne_bytes(out[16..20].try_into().unwrap());
        assert_eq!(ours, held[0].as_raw_fd());
        assert_ne!(ours, file.as_raw_fd(), "a copy, not the caller's number");
        assert_eq!(
            &out[24..],
            &tos[..],
            "other control messages pass as they are"
        );
        let creds = cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0; 12]);
        assert_eq!(
            own_control(&creds, &pidfd, 0, &mut held).err(),
            Some(libc::EPERM)
        );
        let mut torn = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &theirs);
        torn[0] = 200;
        assert_eq!(
            own_control(&torn, &pidfd, 0, &mut held).err(),
            Some(libc::EINVAL)
        );
    }
}
