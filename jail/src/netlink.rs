//! Netlink requests built by hand: a message with nested attributes, and one exchange that
//! sends several messages at once and collects the kernel's answer to each.
//!
//! nsjail's helper programs the jail's links (rtnetlink) and its nftables ruleset (nf_tables)
//! with these in-process instead of running `ip` and `nft` (two program starts and a parser
//! less on the start's path); the probes ask the kernel for harmless changes with them. The
//! kernel handles a netlink request to these families inside the `sendmsg` call, so every
//! answer is queued by the time it returns: a missing answer is an error, never a wait.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Marks an attribute whose payload is more attributes (what libmnl sets on every nest).
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// `NLM_F_REQUEST | NLM_F_ACK`: a request the kernel answers even when it succeeds.
pub(crate) const REQUEST_ACK: u16 = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;

/// nfnetlink's nf_tables subsystem, and the messages that open and close a batch of its
/// changes (linux/netfilter/nfnetlink.h).
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

/// A netlink socket of `proto` in the calling thread's network namespace.
pub(crate) fn open(proto: SockProtocol) -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .map_err(io::Error::from)
}

/// One netlink message: header, fixed body, attributes (4-byte aligned, as the kernel wants).
#[derive(Debug, Clone)]
pub(crate) struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// A message of `kind` with `flags` and the fixed-size `body` its family puts first.
    pub(crate) fn new(kind: u16, flags: u16, body: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `bytes`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence number, set by `bytes`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        let mut m = Self { buf };
        m.raw(body);
        m
    }

    /// Appends `data` as it is (a fixed-size struct inside a nest), padded to 4 bytes.
    pub(crate) fn raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    /// Appends attribute `ty` holding `data`.
    pub(crate) fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.raw(data);
        self
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(ty, &data)
    }

    /// A 32-bit attribute in host byte order (rtnetlink's).
    pub(crate) fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A 32-bit attribute in network byte order (nf_tables').
    pub(crate) fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    /// Attribute `ty` whose payload is the attributes `inner` appends.
    pub(crate) fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut Self)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        inner(self);
        let len = u16::try_from(self.buf.len() - start).expect("netlink nest under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message on the wire with sequence number `seq`.
    pub(crate) fn bytes(&self, seq: u32) -> Vec<u8> {
        let mut b = self.buf.clone();
        let len = u32::try_from(b.len()).expect("netlink message under 4 GiB");
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }

    fn wants_ack(&self) -> bool {
        u16::from_ne_bytes([self.buf[6], self.buf[7]]) & libc::NLM_F_ACK as u16 != 0
    }
}

/// Sends `msgs` in one datagram and returns the kernel's answer to each, in order: `Ok` for an
/// acknowledgement, the error otherwise; `None` for a message that asked for no answer.
pub(crate) fn exchange(
    sock: &OwnedFd,
    msgs: &[Message],
) -> io::Result<Vec<Option<io::Result<()>>>> {
    let mut out = Vec::new();
    for (seq, m) in (1u32..).zip(msgs) {
        out.extend(m.bytes(seq));
    }
    sendto(
        sock.as_raw_fd(),
        &out,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut answers: Vec<Option<io::Result<()>>> = msgs.iter().map(|_| None).collect();
    let wanted = |i: usize| msgs[i].wants_ack();
    let mut buf = vec![0u8; 64 * 1024];
    while (0..msgs.len()).any(|i| wanted(i) && answers[i].is_none()) {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            // A refused batch is answered once, for the message that ended it.
            Err(Errno::EAGAIN) if answers.iter().flatten().any(Result::is_err) => break,
            Err(Errno::EAGAIN) => {
                return Err(io::Error::other(format!(
                    "the kernel answered {} of {} netlink requests",
                    answers.iter().flatten().count(),
                    (0..msgs.len()).filter(|&i| wanted(i)).count()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        for (seq, code) in errors(&buf[..n])? {
            if let Some(slot) = seq.checked_sub(1).and_then(|i| answers.get_mut(i as usize)) {
                *slot = Some(match code {
                    0 => Ok(()),
                    c => Err(io::Error::from_raw_os_error(-c)),
                });
            }
        }
    }
    Ok(answers)
}

/// The `(sequence number, error code)` of each `NLMSG_ERROR` (0: an acknowledgement) in one
/// datagram.
fn errors(mut b: &[u8]) -> io::Result<Vec<(u32, i32)>> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
        if len < 16 || len > b.len() {
            return Err(io::Error::other("truncated netlink answer"));
        }
        if kind == libc::NLMSG_ERROR as u16 {
            let code = b
                .get(16..20)
                .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
                .unwrap_or(-libc::EIO);
            out.push((seq, code));
        }
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_strings_are_padded_and_measured() {
        let mut m = Message::new(16, REQUEST_ACK, &[1, 2, 3]);
        m.str(3, "lo").nest(18 | NLA_F_NESTED, |m| {
            m.be32(1, 0x0102_0304);
        });
        let b = m.bytes(7);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        // body padded to 4, then "lo\0" (len 7, padded to 8), then the nest (4 + 8).
        assert_eq!(&b[16..20], &[1, 2, 3, 0]);
        assert_eq!(&b[20..28], &[7, 0, 3, 0, b'l', b'o', 0, 0]);
        assert_eq!(u16::from_ne_bytes([b[28], b[29]]), 12);
        assert_eq!(&b[36..40], &[1, 2, 3, 4]);
        assert_eq!(b.len(), 40);
    }

    #[test]
    fn errors_are_read_by_sequence_number_and_garbage_is_refused() {
        let mut ack = Vec::new();
        for (seq, code) in [(1u32, 0i32), (2, -libc::EEXIST)] {
            ack.extend_from_slice(&36u32.to_ne_bytes());
            ack.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
            ack.extend_from_slice(&0u16.to_ne_bytes());
            ack.extend_from_slice(&seq.to_ne_bytes());
            ack.extend_from_slice(&0u32.to_ne_bytes());
            ack.extend_from_slice(&code.to_ne_bytes());
            ack.extend_from_slice(&[0; 16]);
        }
        assert_eq!(errors(&ack).unwrap(), vec![(1, 0), (2, -libc::EEXIST)]);
        ack[0] = 200;
        assert!(errors(&ack).is_err());
    }
}

/// Test support: running code in a network namespace of its own.
#[cfg(test)]
pub(crate) mod testns {
    /// Runs `f` on a thread of its own in a new, empty network namespace (`unshare` moves only
    /// that thread; programs it starts inherit the namespace). Needs CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN: the jail's tests run as root, as CI runs them; anything else fails here
    /// saying so.
    pub(crate) fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                panic!(
                    "this test needs a network namespace of its own: run the jail's tests as \
                     root (CI does); unshare(CLONE_NEWNET): {e}"
                );
            }
            f()
        })
        .join()
        .expect("test thread")
    }

    /// Runs `cmd` (in the caller's network namespace) with `input` on stdin; returns stdout,
    /// failing on a non-zero exit.
    pub(crate) fn run(cmd: &[&str], input: &str) -> String {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} (Debian iproute2, nftables): {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
