//! The compiled policy: rules indexed by host so a decision costs the same for ten rules or a
//! hundred thousand, while still reporting the *first* matching rule in the order written.
//!
//! Hosts are indexed in a trie over reversed labels (`api.github.com` walks com → github →
//! api). A node holds the rules whose pattern ends exactly there and the rules whose leading
//! `*` accepts one or more further labels; a middle `*` is a child that accepts any one label.
//! A decision walks the host's labels once, collects the candidate rules, and checks method and
//! path only on those, taking the lowest rule index that matches.

use std::collections::HashMap;

use super::rule::{DomainPattern, Label, PathPattern, Rule, RuleError, Segment};
use super::{normalize_path, path_readings};

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Raw text of the first rule that matched, byte for byte; `None` when denied.
    pub matched_rule: Option<String>,
    /// The matching rule's domain has no wildcard, so it names this host literally (an IP
    /// literal named this way may be connected to even when it is a loopback address).
    pub names_host: bool,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// A middle `*`: any single label.
    star: Option<Box<Node>>,
    /// Rules whose pattern ends at this node (the host has no further labels).
    exact: Vec<u32>,
    /// Rules with a leading `*` here: one or more further labels.
    subdomains: Vec<u32>,
}

/// Every allow rule of a run, compiled. Default deny.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    root: Node,
    /// Rules without a domain, or `domain=*`: candidates for every host.
    any_host: Vec<u32>,
}

impl Policy {
    /// Parses and compiles rules in order; the first error stops it.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Policy, RuleError> {
        let parsed = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy::from_rules(parsed))
    }

    /// Compiles already-parsed rules, keeping their order.
    pub fn from_rules(rules: Vec<Rule>) -> Policy {
        let mut policy = Policy {
            rules: Vec::with_capacity(rules.len()),
            ..Policy::default()
        };
        for rule in rules {
            policy.insert(rule);
        }
        policy
    }

    fn insert(&mut self, rule: Rule) {
        let idx = self.rules.len() as u32;
        match &rule.domain {
            None | Some(DomainPattern::Any) => self.any_host.push(idx),
            Some(DomainPattern::Labels(labels)) => {
                let mut node = &mut self.root;
                let last = labels.len() - 1;
                for (i, label) in labels.iter().enumerate().rev() {
                    match label {
                        Label::Star if i == 0 && last > 0 => {
                            node.subdomains.push(idx);
                            break;
                        }
                        Label::Star => node = node.star.get_or_insert_with(Box::default),
                        Label::Literal(l) => node = node.children.entry(l.clone()).or_default(),
                    }
                    if i == 0 {
                        node.exact.push(idx);
                    }
                }
            }
        }
        self.rules.push(rule);
    }

    /// The rules in the order they were given.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when no rule exists: everything is denied.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decides one request. `host` is without port (one trailing dot and case are ignored);
    /// `path` may carry a query, which is ignored. A rule with a path list allows the request
    /// only when it allows every reading of the path ([`path_readings`]).
    pub fn decide(&self, method: &str, host: &str, path: &str) -> Decision {
        match self.first_match(method, host, path) {
            Some(rule) => Decision {
                allowed: true,
                matched_rule: Some(rule.raw().to_string()),
                names_host: matches!(&rule.domain, Some(DomainPattern::Labels(l))
                    if l.iter().all(|x| matches!(x, Label::Literal(_)))),
            },
            None => Decision {
                allowed: false,
                matched_rule: None,
                names_host: false,
            },
        }
    }

    /// The first rule, in the order given, that allows the request (as [`Policy::decide`]
    /// decides it), with its origin; `None` when the request is denied.
    pub fn first_match(&self, method: &str, host: &str, path: &str) -> Option<&Rule> {
        // The path's readings are worked out only when a candidate rule has paths: most
        // rules name a host alone, and reading the path is most of a decision's cost.
        let mut readings = None;
        self.candidates(host)
            .into_iter()
            .map(|idx| &self.rules[idx as usize])
            .find(|rule| {
                rule.methods.as_ref().is_none_or(|m| m.matches(method))
                    && rule.paths.as_ref().is_none_or(|ps| {
                        readings
                            .get_or_insert_with(|| path_readings(path))
                            .iter()
                            .all(|segs| ps.iter().any(|p| path_matches(p, segs)))
                    })
            })
    }

    /// Whether some request to this host could be allowed; a CONNECT to a host for which this
    /// is false is refused at once instead of being intercepted.
    pub fn could_allow_host(&self, host: &str) -> bool {
        !self.candidates(host).is_empty()
    }

    /// Rules that would allow this request, for the 403 page: the narrowest first. Each one is
    /// checked to parse and to allow the request, so a user can paste it into `--allow` as is.
    pub fn suggest(&self, method: &str, host: &str, path: &str) -> Vec<String> {
        let host = canonical_host(host);
        let candidates = [
            format!(
                "method={method} domain={host} path={}",
                suggested_path(path)
            ),
            format!("domain={host}"),
        ];
        // Keep only suggestions that parse and really allow this request: a host or path with
        // bytes the rule language treats as separators could otherwise print a rule that
        // parses but means something else.
        candidates
            .into_iter()
            .filter(|r| {
                Rule::parse(r).is_ok_and(|rule| {
                    Policy::from_rules(vec![rule])
                        .decide(method, &host, path)
                        .allowed
                })
            })
            .collect()
    }

    /// Indices of the rules whose domain part matches `host`, in ascending order.
    fn candidates(&self, host: &str) -> Vec<u32> {
        let host = crate::host::normal_form_cow(host);
        let mut out = self.any_host.clone();
        if !host.is_empty() {
            let labels: Vec<&str> = host.rsplit('.').collect();
            walk(&self.root, &labels, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The narrowest path pattern that allows `path`: its segments as literals, except that no
/// pattern can name an empty segment (`/api/`, `/a//b`, `/`), so from the first empty one on
/// it ends in `*`.
pub fn suggested_path(path: &str) -> String {
    let mut segs: Vec<Segment> = Vec::new();
    for seg in normalize_path(path) {
        if seg.is_empty() {
            segs.push(Segment::Star);
            break;
        }
        segs.push(Segment::Literal(seg));
    }
    PathPattern::Segments(segs).to_string()
}

/// Lowercase, one trailing dot removed, IPv6 brackets removed.
fn canonical_host(host: &str) -> String {
    crate::host::normal_form(host)
}

/// Collects matching rules; `labels` are the host's labels not yet consumed, reversed.
fn walk(node: &Node, labels: &[&str], out: &mut Vec<u32>) {
    match labels.split_first() {
        None => out.extend_from_slice(&node.exact),
        Some((first, rest)) => {
            out.extend_from_slice(&node.subdomains);
            if first.is_empty() {
                return; // an empty label matches no pattern
            }
            if let Some(child) = node.children.get(*first) {
                walk(child, rest, out);
            }
            if let Some(star) = &node.star {
                walk(star, rest, out);
            }
        }
    }
}

/// Go's segment match: a literal matches that segment exactly, a middle `*` any one segment
/// (an empty one too, as in `/a//b`), a last `*` one or more segments (so `/*` matches `/`,
/// whose one segment is empty); otherwise the lengths must agree.
fn path_matches(pattern: &PathPattern, segs: &[String]) -> bool {
    let pat = match pattern {
        PathPattern::Any => return true,
        // `path=/`: as in Go, a pattern without segments matches every path.
        PathPattern::Segments(p) if p.is_empty() => return true,
        PathPattern::Segments(p) => p,
    };
    for (i, p) in pat.iter().enumerate() {
        let last = i == pat.len() - 1;
        match p {
            Segment::Star if last => return segs.len() > i,
            Segment::Star => {
                if segs.len() <= i {
                    return false;
                }
            }
            Segment::Literal(l) => {
                if segs.get(i) != Some(l) {
                    return false;
                }
            }
        }
    }
    segs.len() == pat.len()
}
