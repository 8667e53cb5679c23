//! Parsing one allow rule into its typed form, with errors that point at the column.

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
    raw: String,
    pub methods: Option<MethodSet>,
    pub domain: Option<DomainPattern>,
    pub paths: Option<Vec<PathPattern>>,
}

impl PartialEq for Rule {
    /// Two rules are equal when they mean the same, whatever their spacing or key order.
    fn eq(&self, other: &Self) -> bool {
        self.methods == other.methods && self.domain == other.domain && self.paths == other.paths
    }
}
impl Eq for Rule {}

/// `method=` value: a set of upper-cased tokens, or every method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    Any,
    Only(Vec<String>),
}

impl MethodSet {
    /// Methods compare case-insensitively: `get` in a rule means `GET`.
    pub fn matches(&self, method: &str) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
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
        Parser { rule: text }.parse()
    }

    /// The rule exactly as the user wrote it.
    pub fn raw(&self) -> &str {
        &self.raw
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

/// Decodes percent escapes in one path segment, except `%2F` (kept as the three characters
/// `%2F`, so an encoded slash can never become a separator). Invalid escapes stay literal.
pub(crate) fn decode_segment(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let v = (h * 16 + l) as u8;
                if v == b'/' {
                    out.extend_from_slice(b"%2F");
                } else {
                    out.push(v);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Parser<'a> {
    rule: &'a str,
}

/// Column (1-based, in characters) of byte offset `at` in `s`.
fn column(s: &str, at: usize) -> usize {
    s[..at.min(s.len())].chars().count() + 1
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Parser<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            rule: self.rule.to_string(),
            column: column(self.rule, at),
            message: message.into(),
        }
    }

    fn parse(&self) -> Result<Rule, RuleError> {
        let text = self.rule;
        if text.trim().is_empty() {
            return Err(self.err(
                0,
                "the rule is empty; an empty rule would allow everything, so it is refused. \
                 Write at least one of method=, domain=, path= (for example \"domain=github.com\")",
            ));
        }
        if let Some(pos) = text.find(['"', '\'']) {
            return Err(self.err(
                pos,
                "quotes are not part of the rule language; write the value bare \
                 (for example domain=github.com, not domain=\"github.com\")",
            ));
        }
        let mut methods = None;
        let mut domain = None;
        let mut paths = None;
        // Split on whitespace, keeping byte offsets for columns.
        let mut tokens: Vec<(usize, &str)> = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    tokens.push((s, &text[s..i]));
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            tokens.push((s, &text[s..]));
        }
        for (idx, &(at, tok)) in tokens.iter().enumerate() {
            let Some(eq) = tok.find('=') else {
                let next_is_eq = tokens.get(idx + 1).is_some_and(|(_, t)| t.starts_with('='));
                if next_is_eq {
                    return Err(self.err(
                        at,
                        format!("no spaces are allowed around \"=\"; write \"{tok}=value\""),
                    ));
                }
                return Err(self.err(
                    at,
                    format!(
                        "expected key=value, found {tok:?}; keys are method, domain and path \
                         (for example \"domain={tok}\")"
                    ),
                ));
            };
            let key = &tok[..eq];
            let value = &tok[eq + 1..];
            let vat = at + eq + 1;
            if key.is_empty() {
                return Err(self.err(
                    at,
                    "a value without a key; no spaces are allowed around \"=\" \
                     (write key=value, key one of method, domain, path)",
                ));
            }
            let slot_taken = |taken: bool| -> Result<(), RuleError> {
                if taken {
                    Err(self.err(
                        at,
                        format!(
                            "key {key:?} appears twice; list several values with commas in one \
                             pair, or write a second rule"
                        ),
                    ))
                } else {
                    Ok(())
                }
            };
            if value.is_empty() {
                return Err(self.err(
                    vat,
                    format!("{key}= has no value; write a value or leave the key out to match everything"),
                ));
            }
            match key {
                "method" => {
                    slot_taken(methods.is_some())?;
                    methods = Some(self.methods(value, vat)?);
                }
                "domain" => {
                    slot_taken(domain.is_some())?;
                    domain = Some(self.domain(value, vat)?);
                }
                "path" => {
                    slot_taken(paths.is_some())?;
                    paths = Some(self.paths(value, vat)?);
                }
                other
                    if ["method", "domain", "path"]
                        .contains(&other.to_ascii_lowercase().as_str()) =>
                {
                    return Err(self.err(
                        at,
                        format!("keys are lowercase; write {:?}", other.to_ascii_lowercase()),
                    ));
                }
                other => {
                    let hint = match other {
                        "host" | "hostname" | "domains" => " (to match a host write domain=)",
                        "methods" | "verb" => " (to match methods write method=)",
                        "paths" | "url" => " (to match paths write path=)",
                        _ => "",
                    };
                    return Err(self.err(
                        at,
                        format!("unknown key {other:?}; expected method, domain or path{hint}"),
                    ));
                }
            }
        }
        Ok(Rule {
            raw: text.to_string(),
            methods,
            domain,
            paths,
        })
    }

    /// Splits a comma list, pointing at the first empty item.
    fn items<'v>(
        &self,
        value: &'v str,
        vat: usize,
        what: &str,
    ) -> Result<Vec<(usize, &'v str)>, RuleError> {
        let mut out = Vec::new();
        let mut off = 0;
        for item in value.split(',') {
            if item.is_empty() {
                return Err(self.err(
                    vat + off,
                    format!("empty {what} in the list; separate {what}s with single commas and no trailing comma"),
                ));
            }
            out.push((vat + off, item));
            off += item.len() + 1;
        }
        Ok(out)
    }

    fn methods(&self, value: &str, vat: usize) -> Result<MethodSet, RuleError> {
        let items = self.items(value, vat, "method")?;
        if items.iter().any(|(_, m)| *m == "*") {
            if items.len() > 1 {
                return Err(self.err(
                    vat,
                    "method=* already matches every method; do not list others with it",
                ));
            }
            return Ok(MethodSet::Any);
        }
        let mut list = Vec::new();
        for (at, m) in items {
            if let Some((i, c)) = m.char_indices().find(|(_, c)| !is_tchar(*c)) {
                return Err(self.err(
                    at + i,
                    format!("{c:?} cannot appear in an HTTP method; methods are tokens such as GET, POST, PATCH"),
                ));
            }
            if m.contains('*') {
                return Err(self.err(
                    at,
                    "\"*\" must stand alone (method=*) to match every method",
                ));
            }
            let up = m.to_ascii_uppercase();
            if !list.contains(&up) {
                list.push(up);
            }
        }
        Ok(MethodSet::Only(list))
    }

    fn domain(&self, value: &str, vat: usize) -> Result<DomainPattern, RuleError> {
        if value == "*" {
            return Ok(DomainPattern::Any);
        }
        if let Some(i) = value.find("://") {
            return Err(self.err(
                vat + i,
                format!(
                    "domain= takes a host name, not a URL; write domain={}",
                    host_of(value)
                ),
            ));
        }
        if let Some(i) = value.find(':') {
            return Err(self.err(
                vat + i,
                format!(
                    "a domain cannot carry a port; rules match the host on every port, write domain={}",
                    &value[..i]
                ),
            ));
        }
        if let Some(i) = value.find('/') {
            return Err(self.err(
                vat + i,
                format!(
                    "a domain cannot contain \"/\"; to restrict paths write domain={} path={}",
                    &value[..i],
                    &value[i..]
                ),
            ));
        }
        if value.ends_with('.') {
            return Err(self.err(
                vat + value.len() - 1,
                format!(
                    "a domain pattern cannot end with \".\"; write domain={}",
                    value.trim_end_matches('.')
                ),
            ));
        }
        if value.ends_with('*') {
            let stem = value.trim_end_matches('*').trim_end_matches('.');
            return Err(self.err(
                vat,
                format!(
                    "a domain pattern cannot end with \"*\"; to allow every subdomain of {stem} write \"domain=*.{stem}.<suffix>\""
                ),
            ));
        }
        let mut labels = Vec::new();
        let mut off = 0;
        for label in value.split('.') {
            let at = vat + off;
            off += label.len() + 1;
            if label.is_empty() {
                return Err(self.err(at, "empty label in the domain (two dots in a row, or a leading dot); write labels separated by single dots"));
            }
            if label == "*" {
                labels.push(Label::Star);
                continue;
            }
            if label.contains('*') {
                return Err(self.err(
                    at,
                    format!("\"*\" must be a whole label; {label:?} mixes it with letters (write \"*.example.com\" for subdomains)"),
                ));
            }
            if label.len() > 63 {
                return Err(self.err(at, "a domain label is at most 63 characters long"));
            }
            if let Some((i, c)) = label
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                let why = if c == '_' {
                    "\"_\" is not allowed in host names".to_string()
                } else {
                    format!("{c:?} is not allowed in a domain label; use letters, digits and \"-\" (write internationalised names in their xn-- form)")
                };
                return Err(self.err(at + i, why));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(self.err(
                    at,
                    format!("label {label:?} cannot start or end with \"-\""),
                ));
            }
            labels.push(Label::Literal(label.to_ascii_lowercase()));
        }
        if value.len() > 253 {
            return Err(self.err(vat, "a domain is at most 253 characters long"));
        }
        Ok(DomainPattern::Labels(labels))
    }

    fn paths(&self, value: &str, vat: usize) -> Result<Vec<PathPattern>, RuleError> {
        let mut out = Vec::new();
        for (at, item) in self.items(value, vat, "path")? {
            if item == "*" {
                out.push(PathPattern::Any);
                continue;
            }
            if !item.starts_with('/') {
                return Err(self.err(
                    at,
                    format!("a path pattern starts with \"/\" (or is \"*\" for every path); write path=/{item}"),
                ));
            }
            if let Some(i) = item.find(['?', '#']) {
                return Err(self.err(
                    at + i,
                    "a path pattern cannot contain a query or fragment; they are ignored when matching, so leave them out",
                ));
            }
            let mut segs = Vec::new();
            let mut off = 1;
            for seg in item[1..].split('/') {
                let sat = at + off;
                off += seg.len() + 1;
                if seg.is_empty() {
                    continue;
                }
                if seg == "*" {
                    segs.push(Segment::Star);
                } else if seg.contains('*') {
                    return Err(self.err(
                        sat,
                        format!("\"*\" must be a whole segment; {seg:?} mixes it with text (write /{}/* to match what follows)", seg.trim_matches('*')),
                    ));
                } else if seg == "." || seg == ".." {
                    return Err(self.err(sat, "dot segments (. and ..) cannot appear in a path pattern; write the path they stand for"));
                } else {
                    let decoded = decode_segment(seg);
                    if decoded == "." || decoded == ".." {
                        return Err(self.err(sat, "dot segments (. and ..) cannot appear in a path pattern; write the path they stand for"));
                    }
                    if let Some(c) = separator_in(&decoded) {
                        return Err(self.err(
                            sat,
                            format!("{c} cannot appear in a path pattern: origins read it as a separator or the end of the path, so the pattern could never match; write the path with \"/\" between segments"),
                        ));
                    }
                    segs.push(Segment::Literal(decoded));
                }
            }
            out.push(PathPattern::Segments(segs));
        }
        Ok(out)
    }
}

/// A character (named for the message) that some origin reads as a segment separator or as
/// the end of the path; a pattern segment holding one would never match every reading.
fn separator_in(decoded: &str) -> Option<&'static str> {
    if decoded.contains("%2F") {
        Some("an encoded slash (%2F)")
    } else if decoded.contains('\\') {
        Some("a backslash (\\ or %5C)")
    } else if decoded.contains(';') {
        Some("\";\" (a path parameter)")
    } else if decoded.contains(['?', '#', '\0']) {
        Some("an encoded ?, # or NUL")
    } else if decoded
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
    {
        Some("a double-encoded escape (%25 followed by two hex digits)")
    } else {
        None
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let end = rest.find(['/', ':', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}
