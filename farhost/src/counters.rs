//! The far host's packet counters and the verdict drawn from them.

use std::fmt;
use std::ops::Sub;

/// Packet counters on the far host, per protocol; [`Counters::total`] is what "nothing
/// escaped" is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    /// ICMPv6 other than neighbour discovery / MLD (echo, errors, ...).
    pub icmpv6: u64,
    /// Any other IP protocol (raw sockets with odd protocol numbers, SCTP, GRE...).
    pub other: u64,
    /// Every IPv6 packet counted above (so a test can see v6 specifically).
    pub ipv6: u64,
    /// Non-IP frames arriving on the far interface other than ARP (packet sockets).
    pub non_ip: u64,
}

impl Counters {
    /// Everything that arrived at the far host (ipv6 is a subset of the others, not added).
    pub fn total(&self) -> u64 {
        self.tcp + self.udp + self.icmp + self.icmpv6 + self.other + self.non_ip
    }

    /// Reads the output of `nft list counters` for the far host's two tables.
    pub(crate) fn parse(text: &str) -> Result<Counters, String> {
        let mut c = Counters::default();
        let mut current: Option<&str> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("counter ") {
                current = rest.split_whitespace().next();
            } else if let Some(rest) = line.strip_prefix("packets ") {
                let packets: u64 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| text.to_string())?;
                let slot = match current {
                    Some("n_tcp") => &mut c.tcp,
                    Some("n_udp") => &mut c.udp,
                    Some("n_icmp") => &mut c.icmp,
                    Some("n_icmpv6") => &mut c.icmpv6,
                    Some("n_other") => &mut c.other,
                    Some("n_ipv6") => &mut c.ipv6,
                    Some("n_non_ip") => &mut c.non_ip,
                    _ => continue,
                };
                *slot = packets;
            }
        }
        Ok(c)
    }
}

impl Sub for Counters {
    type Output = Counters;
    /// What arrived between two readings (`later - earlier`).
    fn sub(self, earlier: Counters) -> Counters {
        Counters {
            tcp: self.tcp.saturating_sub(earlier.tcp),
            udp: self.udp.saturating_sub(earlier.udp),
            icmp: self.icmp.saturating_sub(earlier.icmp),
            icmpv6: self.icmpv6.saturating_sub(earlier.icmpv6),
            other: self.other.saturating_sub(earlier.other),
            ipv6: self.ipv6.saturating_sub(earlier.ipv6),
            non_ip: self.non_ip.saturating_sub(earlier.non_ip),
        }
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp={} udp={} icmp={} icmpv6={} other={} (ipv6={}) non_ip={}",
            self.tcp, self.udp, self.icmp, self.icmpv6, self.other, self.ipv6, self.non_ip
        )
    }
}

/// What the far host saw of a jailed run: the one definition of "nothing escaped", shared by
/// the selftest and every escape test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What arrived between the baseline and the end of the jailed run.
    pub from_jail: Counters,
    /// What the positive control ([`crate::FarHost::positive_control`]) added afterwards.
    pub control: Counters,
}

impl Verdict {
    /// Nothing at all arrived from the jailed run, on any protocol.
    pub fn nothing_escaped(&self) -> bool {
        self.from_jail.total() == 0
    }

    /// The control from outside the jail arrived over TCP (IPv4 and IPv6) and UDP, so the
    /// counters would have seen an escape.
    pub fn control_arrived(&self) -> bool {
        let c = &self.control;
        c.tcp >= 2 && c.udp >= 1 && c.ipv6 >= 1
    }

    /// Both: the jail held, and the far host would have noticed if it had not.
    pub fn holds(&self) -> bool {
        self.nothing_escaped() && self.control_arrived()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "from the jail: {}; control: {}",
            self.from_jail, self.control
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_output_is_read_per_counter() {
        let text = "table inet farhost {\n\tcounter n_tcp {\n\t\tpackets 3 bytes 180\n\t}\n\
                    \tcounter n_ipv6 {\n\t\tpackets 1 bytes 80\n\t}\n}\n\
                    table netdev farhost_l2 {\n\tcounter n_non_ip {\n\t\tpackets 2 bytes 9\n\t}\n}\n";
        let c = Counters::parse(text).unwrap();
        assert_eq!((c.tcp, c.ipv6, c.non_ip, c.udp), (3, 1, 2, 0));
        assert_eq!(c.total(), 5);
        assert!(Counters::parse("counter n_tcp {\npackets x\n}").is_err());
    }

    #[test]
    fn a_verdict_needs_silence_and_a_control_that_arrived() {
        let control = Counters {
            tcp: 2,
            udp: 1,
            ipv6: 1,
            ..Counters::default()
        };
        let quiet = Verdict {
            from_jail: Counters::default(),
            control,
        };
        assert!(quiet.holds());
        let leak = Verdict {
            from_jail: Counters {
                non_ip: 1,
                ..Counters::default()
            },
            control,
        };
        assert!(!leak.nothing_escaped() && !leak.holds());
        let blind = Verdict {
            from_jail: Counters::default(),
            control: Counters::default(),
        };
        assert!(blind.nothing_escaped() && !blind.holds());
        assert_eq!((control - control).total(), 0);
    }
}
