//! Netlink probes: `netlink` (a route change) and `nft` (a ruleset change), each asking the
//! kernel for a change that cannot do harm (deleting what does not exist) and reading only
//! whether the kernel would have let it through.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

fn nl_socket(proto: SockProtocol) -> io::Result<OwnedFd> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .map_err(io::Error::from)
}

fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len + 3);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn nlattr(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(data);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

/// Sends `msg` and returns the first error code the kernel acknowledges (0 = success).
fn nl_exchange(sock: &OwnedFd, msg: &[u8]) -> io::Result<i32> {
    sendto(
        sock.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::from(4000u16))? == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"));
    }
    let mut data = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut data, MsgFlags::empty())?;
    data.truncate(n);
    let mut off = 0;
    while off + 16 <= data.len() {
        let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4")) as usize;
        let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into().expect("2"));
        if ty == libc::NLMSG_ERROR as u16 && off + 20 <= data.len() {
            return Ok(i32::from_ne_bytes(
                data[off + 16..off + 20].try_into().expect("4"),
            ));
        }
        if len < 16 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(0)
}

fn errno_text(code: i32) -> String {
    io::Error::from_raw_os_error(-code).to_string()
}

/// `netlink`: ask rtnetlink to delete an address that does not exist on `lo` (EPERM without
/// CAP_NET_ADMIN; EADDRNOTAVAIL with it, which means the change would have been allowed).
pub(super) fn netlink(_: &[String]) -> Result<String, String> {
    let sock = match nl_socket(SockProtocol::NetlinkRoute) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    let mut payload = vec![libc::AF_INET as u8, 32, 0, 0];
    payload.extend_from_slice(&1u32.to_ne_bytes());
    payload.extend(nlattr(libc::IFA_LOCAL, &[10, 254, 254, 254]));
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let msg = nlmsg(libc::RTM_DELADDR, flags, 1, &payload);
    match nl_exchange(&sock, &msg) {
        Ok(0) => Ok("changed (address deleted)".into()),
        Ok(code) if code == -libc::EPERM => Ok(format!("refused: {}", errno_text(code))),
        Ok(code) => Ok(format!(
            "changed: permitted, kernel said {}",
            errno_text(code)
        )),
        Err(e) => Ok(format!("refused send: {e}")),
    }
}

/// `nft`: ask nf_tables to delete a table that does not exist (EPERM without CAP_NET_ADMIN;
/// ENOENT with it, which means the ruleset could have been changed).
pub(super) fn nft(_: &[String]) -> Result<String, String> {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    const NFTA_TABLE_NAME: u16 = 1;
    let sock = match nl_socket(SockProtocol::NetlinkNetFilter) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    // struct nfgenmsg { family, version, res_id (be16) }
    let genmsg = |family: u8, res: u16| {
        let mut g = vec![family, 0];
        g.extend_from_slice(&res.to_be_bytes());
        g
    };
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nlmsg(
        NFNL_MSG_BATCH_BEGIN,
        req,
        1,
        &genmsg(0, NFNL_SUBSYS_NFTABLES),
    );
    let mut del = genmsg(1 /* NFPROTO_INET */, 0);
    del.extend(nlattr(NFTA_TABLE_NAME, b"boundary_selftest_absent\0"));
    batch.extend(nlmsg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        req | libc::NLM_F_ACK as u16,
        2,
        &del,
    ));
    batch.extend(nlmsg(
        NFNL_MSG_BATCH_END,
        req,
        3,
        &genmsg(0, NFNL_SUBSYS_NFTABLES),
    ));
    match nl_exchange(&sock, &batch) {
        Ok(0) => Ok("changed (table deleted)".into()),
        Ok(code) if code == -libc::EPERM => Ok(format!("refused: {}", errno_text(code))),
        Ok(code) => Ok(format!(
            "changed: permitted, kernel said {}",
            errno_text(code)
        )),
        Err(e) => Ok(format!("refused send: {e}")),
    }
}
