//! From denied requests to the allow rules that would have let them through: one `domain=`
//! rule per host; with `--group` one `*.domain` rule where several subdomains of one
//! registrable domain were denied (the public suffix list decides what is registrable, so
//! `*.co.uk` is never proposed); with `--narrow` the methods and paths that were seen.
//! Every rule proposed is parsed by the proxy's parser and checked to allow each request it
//! was made for before it is returned.

use std::collections::{BTreeMap, BTreeSet};

use boundary_audit::escape::escape_text;
use boundary_proxy::rules::{suggested_path, Policy, Rule};

/// A denied request as an audit record names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denied {
    pub method: String,
    pub url: String,
}

/// How proposals are shaped (`--group`, `--narrow`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    pub group: bool,
    pub narrow: bool,
}

/// More distinct paths than this for one rule are not listed: the rule keeps the host only.
const MAX_PATHS: usize = 8;

/// The rules to add, and the denied requests no rule is proposed for (with the reason).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Proposal {
    pub rules: Vec<String>,
    pub skipped: Vec<String>,
}

/// One denied request, split as the policy decides it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    host: String,
    path: String,
    /// A refused CONNECT: the requests inside the tunnel were never seen.
    tunnel: bool,
}

/// The proposal for `denied` on top of `policy` (requests it already allows are left out).
pub fn propose(policy: &Policy, denied: &[Denied], shape: Shape) -> Proposal {
    let mut out = Proposal::default();
    let mut by_host: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for d in denied {
        let (host, path) = match crate::check::split_url(&d.url) {
            Ok(x) => x,
            Err(e) => {
                out.skipped.push(e);
                continue;
            }
        };
        let host = boundary_proxy::host::normal_form(&host);
        // The host comes from the jail: one that is not a plain name (`*.com` in a Host
        // header) would become a wildcard rule, so it is never proposed.
        if !nameable(&host) {
            out.skipped.push(format!(
                "{}: not a host name or IPv4 address a rule can name literally; write a rule by \
                 hand if you trust it",
                escape_text(&host)
            ));
            continue;
        }
        let tunnel = d.method == "CONNECT";
        let allowed = if tunnel {
            policy.could_allow_host(&host)
        } else {
            policy.decide(&d.method, &host, &path).allowed
        };
        if !allowed {
            by_host.entry(host.clone()).or_default().push(Request {
                method: d.method.clone(),
                host,
                path,
                tunnel,
            });
        }
    }
    let units = if shape.group {
        group(by_host)
    } else {
        by_host.into_iter().collect()
    };
    for (domain, requests) in units {
        match rule_for(&domain, &requests, shape.narrow) {
            Some(rule) if !out.rules.contains(&rule) => out.rules.push(rule),
            Some(_) => {}
            None => out.skipped.push(format!(
                "{}: no rule can name this host (an IPv6 literal, or characters the rule language \
                 treats as separators); use a name for it",
                escape_text(&domain)
            )),
        }
    }
    out
}

/// A host a `domain=` rule names literally: an IP literal, or dot-separated labels of letters,
/// digits, `-` and `_` (nothing the rule language reads as a wildcard or a separator).
fn nameable(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Hosts keyed by domain pattern: subdomains of one registrable domain merged under
/// `*.registrable` when there are at least two of them.
fn group(by_host: BTreeMap<String, Vec<Request>>) -> Vec<(String, Vec<Request>)> {
    let mut under: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for host in by_host.keys() {
        if let Some(reg) = registrable_parent(host) {
            under.entry(reg).or_default().insert(host.clone());
        }
    }
    let mut units: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for (host, requests) in by_host {
        let key = match registrable_parent(&host) {
            Some(reg) if under[&reg].len() >= 2 => format!("*.{reg}"),
            _ => host,
        };
        units.entry(key).or_default().extend(requests);
    }
    units.into_iter().collect()
}

/// The registrable domain `host` is a strict subdomain of (`a.example.co.uk` →
/// `example.co.uk`), by the public suffix list; `None` for IP addresses, for registrable
/// domains themselves and for public suffixes.
pub fn registrable_parent(host: &str) -> Option<String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let reg = psl::domain_str(host)?;
    // A registrable domain is never a public suffix itself; checked so that no list entry can
    // make us propose `*.co.uk`.
    if psl::suffix_str(reg) == Some(reg) || reg == host {
        return None;
    }
    host.strip_suffix(reg)
        .filter(|sub| sub.ends_with('.'))
        .map(|_| reg.to_string())
}

/// The rule for one domain pattern and the requests it must allow, checked to parse and to
/// allow each of them; narrowed when asked and possible, else `domain=` alone.
fn rule_for(domain: &str, requests: &[Request], narrow: bool) -> Option<String> {
    let narrowed = narrow.then(|| narrowed(domain, requests)).flatten();
    [narrowed, Some(format!("domain={domain}"))]
        .into_iter()
        .flatten()
        .find(|r| allows_all(r, requests))
}

/// `method=A,B domain=D path=/x,/y` from what was seen; `None` when a tunnel was refused (its
/// requests are unknown) or the methods cannot be written in a rule.
fn narrowed(domain: &str, requests: &[Request]) -> Option<String> {
    if requests.iter().any(|r| r.tunnel) {
        return None;
    }
    let methods: BTreeSet<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    // `*` would mean every method; `,` and `=` would change the rule's reading.
    if methods.iter().any(|m| m.contains([',', ' ', '=', '*'])) {
        return None;
    }
    let paths: BTreeSet<String> = requests.iter().map(|r| suggested_path(&r.path)).collect();
    let methods = methods.into_iter().collect::<Vec<_>>().join(",");
    let mut rule = format!("method={methods} domain={domain}");
    // `/` (or `/*`, what the root path becomes) allows every path: listing it would widen the
    // others, so such a rule keeps no path limit.
    if paths.len() <= MAX_PATHS
        && !paths
            .iter()
            .any(|p| p == "/" || p == "/*" || p.contains(','))
    {
        rule.push_str(" path=");
        rule.push_str(&paths.into_iter().collect::<Vec<_>>().join(","));
    }
    Some(rule)
}

/// Whether `rule` parses and allows every one of `requests` (a refused tunnel: its host).
fn allows_all(rule: &str, requests: &[Request]) -> bool {
    let Ok(parsed) = Rule::parse(rule) else {
        return false;
    };
    let policy = Policy::from_rules(vec![parsed]);
    requests.iter().all(|r| {
        if r.tunnel {
            policy.could_allow_host(&r.host)
        } else {
            policy.decide(&r.method, &r.host, &r.path).allowed
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(method: &str, url: &str) -> Denied {
        Denied {
            method: method.into(),
            url: url.into(),
        }
    }

    fn rules(policy: &[&str], denied: &[Denied], group: bool, narrow: bool) -> Vec<String> {
        let p = Policy::parse(policy).unwrap();
        propose(&p, denied, Shape { group, narrow }).rules
    }

    #[test]
    fn one_domain_rule_per_host_and_nothing_already_allowed() {
        let denied = [
            d("GET", "https://b.test/x"),
            d("CONNECT", "https://a.test:443"),
            d("POST", "https://b.test/y"),
            d("GET", "https://ok.test/"),
            d("GET", "http://[::1]:8080/"),
        ];
        let p = propose(
            &Policy::parse(&["domain=ok.test"]).unwrap(),
            &denied,
            Shape::default(),
        );
        assert_eq!(p.rules, ["domain=a.test", "domain=b.test"]);
        assert_eq!(p.skipped.len(), 1);
        assert!(p.skipped[0].starts_with("::1: no rule can name this host"));
    }

    #[test]
    fn grouping_uses_the_public_suffix_list() {
        let denied = [
            d("GET", "https://a.example.co.uk/"),
            d("GET", "https://b.example.co.uk/"),
            d("GET", "https://example.co.uk/"),
            d("GET", "https://one.co.uk/"),
            d("GET", "https://two.co.uk/"),
            d("GET", "https://solo.example.com/"),
            d("GET", "https://x.github.io/"),
            d("GET", "https://y.github.io/"),
        ];
        let got = rules(&[], &denied, true, false);
        assert_eq!(
            got,
            [
                "domain=*.example.co.uk",
                "domain=example.co.uk",
                "domain=one.co.uk",
                "domain=solo.example.com",
                "domain=two.co.uk",
                "domain=x.github.io",
                "domain=y.github.io",
            ]
        );
        assert!(!got.iter().any(|r| r == "domain=*.co.uk"));
        assert_eq!(registrable_parent("co.uk"), None);
        assert_eq!(
            registrable_parent("a.b.example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(registrable_parent("10.0.0.1"), None);
    }

    #[test]
    fn narrowing_lists_methods_and_paths_seen() {
        let denied = [
            d("GET", "https://api.test/v1/items?page=2"),
            d("POST", "https://api.test/v1/items"),
            d("GET", "https://api.test/health"),
            d("CONNECT", "https://tunnel.test:443"),
            d("GET", "https://root.test/"),
        ];
        assert_eq!(
            rules(&[], &denied, false, true),
            [
                "method=GET,POST domain=api.test path=/health,/v1/items",
                "method=GET domain=root.test",
                "domain=tunnel.test",
            ]
        );
        let many: Vec<Denied> = (0..=MAX_PATHS)
            .map(|i| d("GET", &format!("https://m.test/{i}")))
            .collect();
        assert_eq!(rules(&[], &many, false, true), ["method=GET domain=m.test"]);
    }

    #[test]
    fn every_proposal_allows_what_was_denied() {
        let denied = [
            d("GET", "https://a.x.example.com/p/q"),
            d("PUT", "https://b.x.example.com/r"),
            d("GET", "https://c.test/a%2Fb/../c;x"),
        ];
        for (group, narrow) in [(false, false), (true, false), (false, true), (true, true)] {
            let got = rules(&[], &denied, group, narrow);
            let p = Policy::parse(&got).unwrap();
            for r in &denied {
                let (host, path) = crate::check::split_url(&r.url).unwrap();
                assert!(p.decide(&r.method, &host, &path).allowed, "{got:?} {r:?}");
            }
        }
    }

    #[test]
    fn a_host_from_the_jail_never_becomes_a_wildcard() {
        // What a jailed process can put in a Host header or a request target.
        let denied = [
            d("GET", "http://*.com/"),
            d("GET", "http://*/"),
            d("GET", "http://a.*.test/"),
            d("GET", "http://x.test%20path=/"),
            d("*", "http://m.test/"),
            d("GET", "http://ok.test/a/*/b,c"),
        ];
        for (group, narrow) in [(false, false), (true, false), (false, true), (true, true)] {
            let got = rules(&[], &denied, group, narrow);
            let want: &[&str] = if narrow {
                &[
                    "domain=m.test",
                    "method=GET domain=ok.test path=/a/%2A/b%2Cc",
                ]
            } else {
                &["domain=m.test", "domain=ok.test"]
            };
            assert_eq!(got, want, "group={group} narrow={narrow}");
        }
        let p = propose(&Policy::default(), &denied[..1], Shape::default());
        assert!(
            p.skipped[0].starts_with("*.com: not a host name"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn a_url_that_is_not_one_is_skipped_with_the_reason() {
        let p = propose(
            &Policy::default(),
            &[d("GET", "nonsense")],
            Shape::default(),
        );
        assert!(p.rules.is_empty());
        assert!(p.skipped[0].contains("not a full URL"), "{:?}", p.skipped);
    }
}
