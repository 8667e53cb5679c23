//! Netlink probes: `netlink` (a route change) and `nft` (a ruleset change), each asking the
//! kernel for a change that cannot do harm (deleting what does not exist) and reading only
//! whether the kernel would have let it through.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr, SockProtocol};

use crate::netlink::{
    Message, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, REQUEST_ACK,
};

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
    let sock = match crate::netlink::open(SockProtocol::NetlinkRoute) {
        Ok(s) => s,
        Err(e) => return Ok(format!("refused socket: {e}")),
    };
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    let mut body = vec![libc::AF_INET as u8, 32, 0, 0];
    body.extend_from_slice(&1u32.to_ne_bytes());
    let mut msg = Message::new(libc::RTM_DELADDR, REQUEST_ACK, &body);
    msg.attr(libc::IFA_LOCAL, &[10, 254, 254, 254]);
    match nl_exchange(&sock, &msg.bytes(1)) {
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
    const NFT_MSG_DELTABLE: u16 = 2;
    const NFTA_TABLE_NAME: u16 = 1;
    let sock = match crate::netlink::open(SockProtocol::NetlinkNetFilter) {
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
    let mut batch =
        Message::new(NFNL_MSG_BATCH_BEGIN, req, &genmsg(0, NFNL_SUBSYS_NFTABLES)).bytes(1);
    let mut del = Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        REQUEST_ACK,
        &genmsg(1 /* NFPROTO_INET */, 0),
    );
    del.str(NFTA_TABLE_NAME, "boundary_selftest_absent");
    batch.extend(del.bytes(2));
    batch.extend(Message::new(NFNL_MSG_BATCH_END, req, &genmsg(0, NFNL_SUBSYS_NFTABLES)).bytes(3));
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
