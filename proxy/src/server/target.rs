//! Where a request goes: scheme, host and port from the connection and the request, and
//! whether every host the request names agrees with that route.

use http::header;
use http::{Request, Version};

use super::sniff::{ConnCtx, Leg};
use crate::hide_password;
use crate::host::{Authority, Host};

/// Where one request goes and how it is written in the audit record.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub scheme: &'static str,
    pub host: Host,
    pub port: u16,
}

impl Target {
    fn default_port(&self) -> u16 {
        if self.scheme == "https" {
            443
        } else {
            80
        }
    }

    /// `host[:port]`, the port only when not the scheme's default; IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.port == self.default_port() {
            self.host.to_string()
        } else {
            self.host.with_port(self.port)
        }
    }

    /// The absolute URL of `path_and_query` on this target, as audited and forwarded.
    pub fn url(&self, path_and_query: &str) -> String {
        // Written piece by piece into one allocation: this runs for every request, and
        // `format!` with a formatted authority cost two allocations and the formatting
        // machinery (about 1 µs per request in the profile).
        let mut url = String::with_capacity(
            self.scheme.len() + self.host.as_str().len() + path_and_query.len() + 16,
        );
        url.push_str(self.scheme);
        url.push_str("://");
        self.host.push_url_form(&mut url);
        if self.port != self.default_port() {
            url.push(':');
            url.push_str(&self.port.to_string());
        }
        url.push_str(path_and_query);
        url
    }

    /// Works out scheme, host and port of a non-CONNECT request; `Err` says why it cannot be
    /// routed.
    pub fn of<B>(req: &Request<B>, ctx: &ConnCtx) -> Result<Target, String> {
        let scheme = if ctx.tls { "https" } else { "http" };
        if let Some((host, port)) = &ctx.fixed {
            return Ok(Target {
                scheme,
                host: host.clone(),
                port: *port,
            });
        }
        let uri = req.uri();
        // Absolute-form (explicit proxying) names the target; otherwise Host does.
        let (scheme, named) = match (uri.scheme_str(), uri.authority()) {
            (Some(s), Some(a)) if req.version() < Version::HTTP_2 => {
                let scheme = match s {
                    "http" => "http",
                    "https" => "https",
                    other => return Err(format!("unsupported URL scheme {other:?}")),
                };
                (scheme, Some(a.as_str().to_string()))
            }
            _ => (
                scheme,
                request_authority(req).or_else(|| uri.authority().map(|a| a.to_string())),
            ),
        };
        let default = if scheme == "https" { 443 } else { 80 };
        let parse = |a: &str| {
            Authority::parse(a)
                .ok_or_else(|| format!("bad host {:?} in the request", hide_password(a)))
        };
        match (&ctx.leg, named) {
            (Leg::Transparent(dst), Some(a)) => Ok(Target {
                scheme,
                host: parse(&a)?.host,
                port: dst.port(),
            }),
            (Leg::Transparent(dst), None) => Ok(Target {
                scheme,
                host: Host::parse(&dst.ip().to_string())
                    .ok_or_else(|| format!("bad original destination {dst}"))?,
                port: dst.port(),
            }),
            (_, Some(a)) => {
                let a = parse(&a)?;
                Ok(Target {
                    scheme,
                    host: a.host,
                    port: a.port.unwrap_or(default),
                })
            }
            (_, None) => Err(
                "the request names no host: send it in absolute form (http://host/path) or with a Host header"
                    .to_string(),
            ),
        }
    }

    /// Checks that every host the request names (Host, :authority, absolute URI) agrees with
    /// this target; returns why not.
    pub fn mismatch<B>(&self, req: &Request<B>, ctx: &ConnCtx) -> Option<String> {
        let host_header = match req.headers().get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => return Some("the Host header is not valid text".into()),
            None => None,
        };
        let claims = [host_header, req.uri().authority().map(|a| a.as_str())];
        let transparent = matches!(ctx.leg, Leg::Transparent(_));
        for claim in claims.into_iter().flatten() {
            if self.written_plainly(claim, transparent) {
                continue;
            }
            let Some(Authority { host, port }) = Authority::parse(claim) else {
                return Some(format!(
                    "the request names a bad host {:?}",
                    hide_password(claim)
                ));
            };
            if host != self.host {
                let routed = if ctx.tls {
                    "the TLS server name"
                } else {
                    "the CONNECT target"
                };
                return Some(format!(
                    "the Host {host} does not match {routed} {}",
                    self.host
                ));
            }
            // A transparent connection keeps its real port; elsewhere an explicit port must agree.
            if let Some(p) = port {
                if p != self.port && !transparent {
                    return Some(format!(
                        "the Host port {p} does not match the connection's port {}",
                        self.port
                    ));
                }
            }
        }
        None
    }

    /// Whether `claim` names this target the plain way every client writes it: the host
    /// exactly as in normal form, made of lowercase letters, digits, dots and hyphens only,
    /// then no port, or `:` and the target's port in decimal without leading zeros (any port
    /// from 1 when `any_port`, as on a transparent connection). Such a claim parses as this
    /// host with that port, so the check above agrees without parsing it (which costs two
    /// allocations per request); any other claim takes the full parse, which decides it as
    /// before.
    fn written_plainly(&self, claim: &str, any_port: bool) -> bool {
        let host = self.host.as_str();
        let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
        let Some(rest) = claim.strip_prefix(host) else {
            return false;
        };
        if host.is_empty() || host.ends_with('.') || !host.bytes().all(plain) {
            return false;
        }
        let Some(digits) = rest.strip_prefix(':') else {
            return rest.is_empty();
        };
        if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        match digits.parse::<u16>() {
            Ok(port) => port == self.port || (any_port && port != 0),
            Err(_) => false,
        }
    }
}

/// The authority the request itself claims: `:authority` for HTTP/2, else the Host header.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if req.version() == Version::HTTP_2 {
        if let Some(a) = req.uri().authority() {
            return Some(a.as_str().to_string());
        }
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_port_only_when_not_default() {
        let t = Target {
            scheme: "https",
            host: Host::parse("a.example").unwrap(),
            port: 443,
        };
        assert_eq!(t.url("/x?q=1"), "https://a.example/x?q=1");
        let t = Target {
            scheme: "http",
            host: Host::parse("::1").unwrap(),
            port: 8080,
        };
        assert_eq!(t.url("/"), "http://[::1]:8080/");
    }

    /// The full check's answer for one claim: it parses and names this host, with no port or
    /// one that agrees.
    fn agrees_by_parsing(t: &Target, claim: &str, any_port: bool) -> bool {
        Authority::parse(claim)
            .is_some_and(|a| a.host == t.host && a.port.is_none_or(|p| p == t.port || any_port))
    }

    #[test]
    fn a_plainly_written_claim_agrees_only_where_parsing_it_agrees() {
        let targets = [
            ("a.example", 443),
            ("a.example", 8443),
            ("x-1.a.example", 80),
            ("127.0.0.1", 80),
            ("::1", 443),
            ("a..example", 443),
        ];
        let spellings = |h: &str| -> Vec<String> {
            let mut v = vec![
                h.to_string(),
                h.to_ascii_uppercase(),
                format!("{h}."),
                format!("[{h}]"),
                format!("user@{h}"),
                format!("{h}@{h}"),
                format!(" {h}"),
                format!("{h} "),
                format!("{h}x"),
                format!("{h}%41"),
                format!("{h}/"),
                format!("{h}?"),
                h[1..].to_string(),
                String::new(),
            ];
            for port in [
                "", "0", "00", "80", "080", "443", "0443", "8443", "+443", "-443", "65535",
                "65536", "99999", "4430", "44", "1", "443:443", "443 ", "٤٤٣",
            ] {
                v.push(format!("{h}:{port}"));
                v.push(format!("[{h}]:{port}"));
            }
            v
        };
        let mut plain = 0;
        for (host, port) in targets {
            let t = Target {
                scheme: "https",
                host: Host::parse(host).unwrap(),
                port,
            };
            for claim in spellings(host).iter().chain(spellings("b.example").iter()) {
                for any_port in [false, true] {
                    if t.written_plainly(claim, any_port) {
                        plain += 1;
                        assert!(
                            agrees_by_parsing(&t, claim, any_port),
                            "{claim:?} skipped the parse for {host}:{port} (any port: {any_port})"
                        );
                    }
                }
            }
        }
        // The usual spellings do skip it: `host` and `host:port`.
        for (claim, any_port) in [
            ("a.example", false),
            ("a.example:443", false),
            ("a.example:80", true),
        ] {
            let t = Target {
                scheme: "https",
                host: Host::parse("a.example").unwrap(),
                port: 443,
            };
            assert!(t.written_plainly(claim, any_port), "{claim}");
        }
        assert!(plain > 0);
    }
}
