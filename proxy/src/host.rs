//! One normal form for host names and authorities, so every comparison in the proxy (SNI
//! against CONNECT, Host against the route, a rule against a request, a `--resolve` key against
//! a lookup) agrees on what "the same host" means.
//!
//! The normal form: ASCII lowercase, IPv6 literals without brackets, one trailing dot removed
//! (`example.com.` is `example.com`; `example.com..` is not a host name and is refused).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// A host name or IP literal in normal form (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(String);

impl Host {
    /// Normalises `raw` (a name, an IP literal, or a bracketed IPv6 literal); `None` when
    /// nothing is left or the name ends in more than one dot.
    pub fn parse(raw: &str) -> Option<Host> {
        let h = normal_form(raw);
        (!h.is_empty() && !h.ends_with('.')).then_some(Host(h))
    }

    /// The host in normal form, IPv6 without brackets.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The IP address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }

    /// Whether `raw` names this host once normalised.
    pub fn is(&self, raw: &str) -> bool {
        normal_form_cow(raw) == self.0.as_str()
    }

    /// Appends the host as written in a URL (IPv6 literals in brackets) to `out`, without
    /// the formatting machinery (this runs for every request's audited URL).
    pub fn push_url_form(&self, out: &mut String) {
        if self.is_v6() {
            out.push('[');
            out.push_str(&self.0);
            out.push(']');
        } else {
            out.push_str(&self.0);
        }
    }

    /// An IPv6 literal, written in brackets in URLs and authorities.
    fn is_v6(&self) -> bool {
        self.0.contains(':')
    }

    /// `host:port` as written in a CONNECT line or an audit URL (IPv6 in brackets).
    pub fn with_port(&self, port: u16) -> String {
        format!("{self}:{port}")
    }
}

/// Lowercase, brackets and one trailing dot removed; the normal form without validation, for
/// lookup keys (`--resolve` names, certificate cache keys).
pub fn normal_form(raw: &str) -> String {
    normal_form_cow(raw).into_owned()
}

/// [`normal_form`], borrowing `raw` when it is already in normal form (as a [`Host`] is),
/// so deciding a request does not copy its host.
pub fn normal_form_cow(raw: &str) -> Cow<'_, str> {
    let h = raw
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(raw);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

impl fmt::Display for Host {
    /// The host as written in a URL: IPv6 literals in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v6() {
            write!(f, "[{}]", self.0)
        } else {
            f.write_str(&self.0)
        }
    }
}

/// `host[:port]` as a request names it (Host header, `:authority`, absolute URI, CONNECT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The host in normal form.
    pub host: Host,
    /// The explicit port, if one was written.
    pub port: Option<u16>,
}

impl Authority {
    /// Parses `host[:port]`; refuses userinfo (`user@host`), an empty port (`host:`), a port
    /// outside 1..=65535 written as digits (which would otherwise read as no port, the
    /// scheme's default) and an empty or malformed host.
    pub fn parse(raw: &str) -> Option<Authority> {
        let a: http::uri::Authority = raw.parse().ok()?;
        // After an IPv6 literal's `]`, or in the whole text for a name or IPv4 address.
        let has_port = a
            .as_str()
            .rsplit(']')
            .next()
            .is_some_and(|t| t.contains(':'));
        if a.as_str().contains('@') || (has_port && !matches!(a.port_u16(), Some(1..))) {
            return None;
        }
        Some(Authority {
            host: Host::parse(a.host())?,
            port: a.port_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_have_one_normal_form() {
        for raw in ["Example.COM", "example.com.", "EXAMPLE.com."] {
            assert_eq!(Host::parse(raw).unwrap().as_str(), "example.com", "{raw}");
        }
        assert_eq!(Host::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(Host::parse("[::1]").unwrap().to_string(), "[::1]");
        assert_eq!(Host::parse("::1").unwrap().with_port(8080), "[::1]:8080");
        assert!(Host::parse("example.com..").is_none());
        assert!(Host::parse("").is_none());
        assert!(Host::parse(".").is_none());
        assert!(Host::parse("a.example").unwrap().is("A.Example."));
    }

    #[test]
    fn the_normal_form_borrows_what_is_normal_already() {
        assert!(matches!(
            normal_form_cow("api.example"),
            Cow::Borrowed("api.example")
        ));
        assert!(matches!(normal_form_cow("[::1]"), Cow::Borrowed("::1")));
        assert!(matches!(
            normal_form_cow("a.example."),
            Cow::Borrowed("a.example")
        ));
        let upper = normal_form_cow("Api.EXAMPLE.");
        assert!(
            matches!(&upper, Cow::Owned(h) if h == "api.example"),
            "{upper}"
        );
        assert_eq!(normal_form("[FE80::1]"), "fe80::1");
    }

    #[test]
    fn authorities_split() {
        let a = Authority::parse("Example.COM:8443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("example.com", Some(8443)));
        let a = Authority::parse("[::1]:80").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", Some(80)));
        let a = Authority::parse("a.example.").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("a.example", None));
        assert_eq!(Authority::parse("user@a.example"), None);
        assert_eq!(Authority::parse(""), None);
        assert_eq!(Authority::parse("a.example:"), None);
        // Out of range ports are errors, not "no port" (which meant the scheme's default).
        for bad in [
            "a.example:84626",
            "a.example:65536",
            "[::1]:99999",
            "a.example:0",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad}");
        }
        let a = Authority::parse("a.example:65535").unwrap();
        assert_eq!(a.port, Some(65535));
        assert_eq!(Authority::parse("[::1]").unwrap().port, None);
    }
}
