//! The typed form of one allow rule, and how it prints back as rule text.

use std::fmt;
use std::str::FromStr;

/// A rule that failed to parse: which rule, where, and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allow rule {rule:?} at column {column}: {message}")]
pub struct RuleError {
    /// The rule exactly as written.
    pub rule: String,
    /// 1-based character column of the offending part.
    pub column: usize,
    /// What is wrong and how to write it instead.
    pub message: String,
}

/// One allow rule. Omitted keys match everything; present keys are ANDed.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(super) raw: String,
    pub methods: Option<MethodSet>,
    pub domain: Option<DomainPattern>,
    pub paths: Option<Vec<PathPattern>>,
    /// Where the rule came from (`preset npm@1`, `flag --allow`), so `boundary check` can say
    /// why a request is allowed. Not part of the rule's meaning: equality ignores it.
    pub origin: Option<String>,
}

impl PartialEq for Rule {
    /// Two rules are equal when they mean the same, whatever their spacing, key order or origin.
    fn eq(&self, other: &Self) -> bool {
        self.methods == other.methods && self.domain == other.domain && self.paths == other.paths
    }
}
impl Eq for Rule {}

/// `method=` value: a set of tokens as written, or every method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    Any,
    Only(Vec<String>),
}

impl MethodSet {
    /// Methods compare exactly, as in Go and RFC 9110: `get` in a rule does not match `GET`.
    pub fn matches(&self, method: &str) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => list.iter().any(|m| m == method),
        }
    }
}

/// One label of a domain pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Label {
    /// Lower-cased literal label.
    Literal(String),
    /// `*`: leftmost = one or more labels; elsewhere = exactly one label.
    Star,
}

/// `domain=` value. `Any` is `domain=*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Any,
    /// Labels left to right as written (`*.github.com` = [Star, github, com]).
    Labels(Vec<Label>),
}

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Percent-decoded literal segment (never a separator, `;`, or a further escape).
    Literal(String),
    /// `*`: in the middle exactly one segment; last = one or more remaining segments.
    Star,
}

/// One element of a `path=` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `path=*`: every path.
    Any,
    Segments(Vec<Segment>),
}

impl Rule {
    /// Parses one rule. The raw text is kept byte for byte: it is what audit records report.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        super::parse::parse_rule(text)
    }

    /// The rule exactly as the user wrote it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The same rule, recorded as coming from `origin` (see [`Rule::origin`]).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Rule {
        self.origin = Some(origin.into());
        self
    }
}

impl FromStr for Rule {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::parse(s)
    }
}

impl fmt::Display for Rule {
    /// Canonical text (keys in method, domain, path order); parses back to an equal rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = &self.methods {
            parts.push(format!("method={m}"));
        }
        if let Some(d) = &self.domain {
            parts.push(format!("domain={d}"));
        }
        if let Some(p) = &self.paths {
            let list: Vec<String> = p.iter().map(|p| p.to_string()).collect();
            parts.push(format!("path={}", list.join(",")));
        }
        f.write_str(&parts.join(" "))
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodSet::Any => f.write_str("*"),
            MethodSet::Only(list) => f.write_str(&list.join(",")),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Labels(labels) => {
                let text: Vec<&str> = labels
                    .iter()
                    .map(|l| match l {
                        Label::Literal(s) => s.as_str(),
                        Label::Star => "*",
                    })
                    .collect();
                f.write_str(&text.join("."))
            }
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Any => f.write_str("*"),
            PathPattern::Segments(segs) if segs.is_empty() => f.write_str("/"),
            PathPattern::Segments(segs) => {
                for s in segs {
                    f.write_str("/")?;
                    match s {
                        Segment::Literal(l) => f.write_str(&encode_segment(l))?,
                        Segment::Star => f.write_str("*")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Re-encodes the characters that would change a segment's meaning when printed back.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, ',' | '*' | '%' | '?' | '#' | '/' | '"' | '\'')
            || ch.is_control()
            || ch.is_whitespace()
        {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}
