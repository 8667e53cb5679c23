//! The jail's nftables ruleset, loaded over nf_tables netlink as one batch (what `nft -f` would
//! send for it, without starting `nft`). In nft's syntax:
//!
//! ```text
//! table inet boundary {
//!     chain divert {
//!         type filter hook prerouting priority -150; policy accept;
//!         meta l4proto { tcp, udp } th dport 53 tproxy to :53 accept
//!         ip daddr 127.0.0.0/8 return
//!         ip6 daddr ::1 return
//!         meta l4proto tcp tproxy to :PROXY_PORT accept
//!     }
//!     chain leave {
//!         type filter hook postrouting priority 100; policy drop;
//!         oifname "lo" accept
//!     }
//! }
//! ```
//!
//! The jail's policy routing (`net`) sends every TCP packet and every UDP packet to port 53,
//! whatever its destination, back in through `lo` as if to a local address; on the way in,
//! `divert` hands DNS (any address) to the stub's sockets on port 53 and every other TCP
//! connection, v4 and v6, to the proxy's listener (TPROXY: the packet keeps its addresses, the
//! listening sockets are `IP_TRANSPARENT`, and an accepted socket's local address is the
//! destination the client asked for). `tproxy` does not end the chain by itself (a later rule
//! would hand the packet on again), hence the `accept`; when no transparent socket listens
//! there the rule does not match and the next one is tried. TCP to the jail's own loopback is
//! left alone. On the way out (postrouting, where the packet has its final interface) only
//! loopback passes.
//!
//! There is no NAT: with no `nat` chain (and no `ct` expression) the kernel does not turn
//! connection tracking on in the jail's namespace, so no packet is tracked or rewritten (issue
//! 15: conntrack and NAT were ~4 µs of the client and proxy CPU per small request). If the
//! listener is gone, or a rule is missing, a diverted TCP connection is refused in the jail and
//! any other packet leaves only by the dead-end device, where `leave` drops it.
//!
//! The batch holds the same expressions `nft` makes of that text (a test loads both and
//! compares what `nft --debug=netlink list ruleset` reads back); the kernel applies a batch
//! whole or not at all.

use nix::sys::socket::SockProtocol;

use crate::netlink::{
    self, Message, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NLA_F_NESTED,
    REQUEST_ACK,
};

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_RETURN: i32 = -5;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// `NFTA_TPROXY_FAMILY` for "the packet's own family" (an `inet` rule with a port only).
const NFPROTO_UNSPEC: u32 = 0;
const NFT_SET_ANONYMOUS: u32 = 1;
const NFT_SET_CONSTANT: u32 = 2;
/// nft's `inet_proto` data type (what it prints `tcp`/`udp` from).
const NFT_TYPE_INET_PROTOCOL: u32 = 12;
/// The batch's one anonymous set: the name the kernel numbers, and the id the rule uses.
const SET_NAME: &str = "__set%d";
const SET_ID: u32 = 1;

const TABLE: &str = "boundary";
const DIVERT_CHAIN: &str = "divert";
const LEAVE_CHAIN: &str = "leave";

/// An nf_tables message of `kind` for the `inet` family.
fn nft_msg(kind: u16, flags: u16) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &[NFPROTO_INET, 0, 0, 0],
    )
}

/// `NFTA_DATA_VALUE` holding `bytes`, nested in attribute `ty`.
fn data(m: &mut Message, ty: u16, bytes: &[u8]) {
    m.nest(ty | NLA_F_NESTED, |m| {
        m.attr(1, bytes);
    });
}

/// One expression of a rule: its name and the attributes `body` appends.
struct Expr(&'static str, Box<dyn Fn(&mut Message)>);

fn meta(key: u32) -> Expr {
    Expr(
        "meta",
        Box::new(move |m| {
            m.be32(2, key).be32(1, NFT_REG_1); // NFTA_META_KEY, NFTA_META_DREG
        }),
    )
}

fn cmp_eq(value: &[u8]) -> Expr {
    let value = value.to_vec();
    Expr(
        "cmp",
        Box::new(move |m| {
            m.be32(1, NFT_REG_1).be32(2, 0); // NFTA_CMP_SREG, NFTA_CMP_OP: NFT_CMP_EQ
            data(m, 3, &value); // NFTA_CMP_DATA
        }),
    )
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    Expr(
        "payload",
        Box::new(move |m| {
            // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
            m.be32(1, NFT_REG_1)
                .be32(2, base)
                .be32(3, offset)
                .be32(4, len);
        }),
    )
}

fn verdict(code: i32) -> Expr {
    Expr(
        "immediate",
        Box::new(move |m| {
            m.be32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            m.nest(2 | NLA_F_NESTED, |m| {
                // NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE } }
                m.nest(2 | NLA_F_NESTED, |m| {
                    m.be32(1, code as u32);
                });
            });
        }),
    )
}

/// `tproxy to :port` (the port loaded into register 1 first): the packet goes to the
/// transparent socket listening on `port` at the incoming device's address (`lo`: 127.0.0.1,
/// ::1), unchanged.
fn tproxy(port: u16) -> [Expr; 2] {
    [
        Expr(
            "immediate",
            Box::new(move |m| {
                m.be32(1, NFT_REG_1);
                data(m, 2, &port.to_be_bytes());
            }),
        ),
        Expr(
            "tproxy",
            Box::new(|m| {
                // NFTA_TPROXY_FAMILY, NFTA_TPROXY_REG_PORT
                m.be32(1, NFPROTO_UNSPEC).be32(3, NFT_REG_1);
            }),
        ),
    ]
}

fn lookup_set() -> Expr {
    Expr(
        "lookup",
        Box::new(|m| {
            // NFTA_LOOKUP_SET, NFTA_LOOKUP_SREG, NFTA_LOOKUP_SET_ID
            m.str(1, SET_NAME).be32(2, NFT_REG_1).be32(4, SET_ID);
        }),
    )
}

fn rule(chain: &str, exprs: impl IntoIterator<Item = Expr>) -> Message {
    let flags = REQUEST_ACK | (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16;
    let mut m = nft_msg(NFT_MSG_NEWRULE, flags);
    // NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS
    m.str(1, TABLE).str(2, chain).nest(4 | NLA_F_NESTED, |m| {
        for Expr(name, body) in exprs {
            // NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA }
            m.nest(1 | NLA_F_NESTED, |m| {
                m.str(1, name).nest(2 | NLA_F_NESTED, |m| body(m));
            });
        }
    });
    m
}

fn chain(name: &str, kind: &str, hook: u32, priority: i32, policy: u32) -> Message {
    let mut m = nft_msg(NFT_MSG_NEWCHAIN, REQUEST_ACK | libc::NLM_F_CREATE as u16);
    // NFTA_CHAIN_TABLE, _NAME, _HOOK { NFTA_HOOK_HOOKNUM, _PRIORITY }, _POLICY, _TYPE
    m.str(1, TABLE).str(3, name);
    m.nest(4 | NLA_F_NESTED, |m| {
        m.be32(1, hook).be32(2, priority as u32);
    });
    m.be32(5, policy).str(7, kind);
    m
}

/// `{ tcp, udp }`: the anonymous constant set the DNS rule looks the protocol up in.
fn l4proto_set() -> [Message; 2] {
    let flags = REQUEST_ACK | libc::NLM_F_CREATE as u16;
    let mut set = nft_msg(NFT_MSG_NEWSET, flags);
    // NFTA_SET_TABLE, _NAME, _FLAGS, _KEY_TYPE, _KEY_LEN, _ID, _DESC { NFTA_SET_DESC_SIZE }
    set.str(1, TABLE)
        .str(2, SET_NAME)
        .be32(3, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT)
        .be32(4, NFT_TYPE_INET_PROTOCOL)
        .be32(5, 1)
        .be32(10, SET_ID)
        .nest(9 | NLA_F_NESTED, |m| {
            m.be32(1, 2);
        });
    let mut elems = nft_msg(NFT_MSG_NEWSETELEM, flags);
    // NFTA_SET_ELEM_LIST_TABLE, _SET, _ELEMENTS { NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY } }, _SET_ID
    elems.str(1, TABLE).str(2, SET_NAME);
    elems.nest(3 | NLA_F_NESTED, |m| {
        for proto in [libc::IPPROTO_TCP, libc::IPPROTO_UDP] {
            m.nest(1 | NLA_F_NESTED, |m| data(m, 1, &[proto as u8]));
        }
    });
    elems.be32(4, SET_ID);
    [set, elems]
}

/// The whole batch, begin and end included.
fn batch(proxy_port: u16, dns_port: u16) -> Vec<Message> {
    let edge = |kind| {
        Message::new(
            kind,
            libc::NLM_F_REQUEST as u16,
            &[
                0,
                0,
                (NFNL_SUBSYS_NFTABLES >> 8) as u8,
                NFNL_SUBSYS_NFTABLES as u8,
            ],
        )
    };
    let mut table = nft_msg(NFT_MSG_NEWTABLE, REQUEST_ACK | libc::NLM_F_CREATE as u16);
    table.str(1, TABLE).be32(2, 0); // NFTA_TABLE_NAME, NFTA_TABLE_FLAGS
    let [set, elems] = l4proto_set();
    let nfproto = |p: u8| [meta(NFT_META_NFPROTO), cmp_eq(&[p])];
    let mut oifname = [0u8; 16];
    oifname[..2].copy_from_slice(b"lo");
    let [dns_port_load, dns_tproxy] = tproxy(dns_port);
    let [proxy_port_load, proxy_tproxy] = tproxy(proxy_port);
    vec![
        edge(NFNL_MSG_BATCH_BEGIN),
        table,
        chain(DIVERT_CHAIN, "filter", NF_INET_PRE_ROUTING, -150, NF_ACCEPT),
        chain(LEAVE_CHAIN, "filter", NF_INET_POST_ROUTING, 100, NF_DROP),
        set,
        elems,
        rule(
            DIVERT_CHAIN,
            [
                meta(NFT_META_L4PROTO),
                lookup_set(),
                payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
                cmp_eq(&53u16.to_be_bytes()),
                dns_port_load,
                dns_tproxy,
                verdict(NF_ACCEPT as i32),
            ],
        ),
        rule(
            DIVERT_CHAIN,
            nfproto(NFPROTO_IPV4).into_iter().chain([
                payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 1),
                cmp_eq(&[127]),
                verdict(NFT_RETURN),
            ]),
        ),
        rule(
            DIVERT_CHAIN,
            nfproto(NFPROTO_IPV6).into_iter().chain([
                payload(NFT_PAYLOAD_NETWORK_HEADER, 24, 16),
                cmp_eq(&std::net::Ipv6Addr::LOCALHOST.octets()),
                verdict(NFT_RETURN),
            ]),
        ),
        rule(
            DIVERT_CHAIN,
            [
                meta(NFT_META_L4PROTO),
                cmp_eq(&[libc::IPPROTO_TCP as u8]),
                proxy_port_load,
                proxy_tproxy,
                verdict(NF_ACCEPT as i32),
            ],
        ),
        rule(
            LEAVE_CHAIN,
            [
                meta(NFT_META_OIFNAME),
                cmp_eq(&oifname),
                verdict(NF_ACCEPT as i32),
            ],
        ),
        edge(NFNL_MSG_BATCH_END),
    ]
}

/// Loads the ruleset into the calling thread's network namespace (needs CAP_NET_ADMIN there).
pub fn install(proxy_port: u16, dns_port: u16) -> Result<(), String> {
    const WHAT: &str = "loading the jail's nftables ruleset";
    let sock = netlink::open(SockProtocol::NetlinkNetFilter)
        .map_err(|e| format!("{WHAT}: opening an nf_tables netlink socket: {e}"))?;
    let answers = netlink::exchange(&sock, &batch(proxy_port, dns_port))
        .map_err(|e| format!("{WHAT}: {e}"))?;
    match answers.into_iter().flatten().find_map(Result::err) {
        None => Ok(()),
        Some(e) => Err(format!(
            "{WHAT}: {e} (the kernel needs nf_tables with its tproxy and set support: \
             CONFIG_NF_TABLES_INET, CONFIG_NFT_TPROXY)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::testns::{in_new_netns, run};

    /// The ruleset in nft's syntax (boundary loaded its earlier, NAT form with `nft -f` before
    /// issue 15).
    fn as_nft_text(proxy_port: u16, dns_port: u16) -> String {
        format!(
            "table inet boundary {{\n\
             \tchain divert {{\n\
             \t\ttype filter hook prerouting priority -150; policy accept;\n\
             \t\tmeta l4proto {{ tcp, udp }} th dport 53 tproxy to :{dns_port} accept\n\
             \t\tip daddr 127.0.0.0/8 return\n\
             \t\tip6 daddr ::1 return\n\
             \t\tmeta l4proto tcp tproxy to :{proxy_port} accept\n\
             \t}}\n\
             \tchain leave {{\n\
             \t\ttype filter hook postrouting priority 100; policy drop;\n\
             \t\toifname \"lo\" accept\n\
             \t}}\n\
             }}\n"
        )
    }

    /// What the kernel holds: the ruleset as nft prints it, then every rule's expressions.
    fn read_back() -> String {
        let text = run(&["nft", "list", "ruleset"], "");
        let exprs = run(&["nft", "--debug=netlink", "list", "ruleset"], "");
        format!("{text}\n{exprs}")
    }

    #[test]
    fn a_refused_batch_is_an_error_naming_the_cause_not_a_wait() {
        let answers = in_new_netns(|| {
            let sock = netlink::open(SockProtocol::NetlinkNetFilter).unwrap();
            // The table, then a rule for a chain that does not exist: the kernel refuses the
            // whole batch and answers both.
            let msgs = batch(8080, 5353);
            let pick = [0, 1, 6, msgs.len() - 1].map(|i| msgs[i].clone());
            netlink::exchange(&sock, &pick).unwrap()
        });
        let errors: Vec<_> = answers
            .iter()
            .flatten()
            .filter_map(|a| a.as_ref().err())
            .collect();
        assert_eq!(errors.len(), 1, "{answers:?}");
        assert_eq!(errors[0].raw_os_error(), Some(libc::ENOENT), "{answers:?}");
    }

    #[test]
    fn the_netlink_batch_makes_what_nft_makes_of_the_text() {
        for (proxy, dns) in [(8080, 5353), (41234, 1053)] {
            let ours = in_new_netns(move || {
                install(proxy, dns).unwrap();
                read_back()
            });
            let nfts = in_new_netns(move || {
                run(&["nft", "-f", "-"], &as_nft_text(proxy, dns));
                read_back()
            });
            assert_eq!(ours, nfts);
            assert!(ours.contains(&format!("tproxy to :{proxy}")), "{ours}");
            assert!(
                ours.contains("meta l4proto { tcp, udp } th dport 53"),
                "{ours}"
            );
        }
    }
}
