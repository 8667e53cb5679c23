//! Parsing one rule line: splitting it into `key=value` pairs and handing each value to its
//! key's parser (`method`, `domain`, `path`), with errors that point at the column.

use super::rule::{Rule, RuleError};

/// Parses one rule; [`Rule::parse`] is the public entry.
pub(super) fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    Parser { rule: text }.parse()
}

/// The rule being parsed; every key's parser is a method on it so errors can name the rule.
pub(super) struct Parser<'a> {
    pub(super) rule: &'a str,
}

/// Why an empty path pattern is refused although Go's boundary accepts it.
const GO_EMPTY_PATH: &str = " (Go's boundary reads an empty path pattern as every path, so a \
     stray comma or an empty variable would silently allow every path; write path=* if that is \
     what you mean)";

/// Column (1-based, in characters) of byte offset `at` in `s`.
fn column(s: &str, at: usize) -> usize {
    s[..at.min(s.len())].chars().count() + 1
}

/// Splits on whitespace, keeping each token's byte offset for columns.
fn tokenise(text: &str) -> Vec<(usize, &str)> {
    let mut tokens = Vec::new();
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
    tokens
}

impl Parser<'_> {
    /// An error at byte offset `at` of the rule.
    pub(super) fn err(&self, at: usize, message: impl Into<String>) -> RuleError {
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
        if text.starts_with(char::is_whitespace) {
            return Err(self.err(
                0,
                "the rule starts with whitespace; remove it (Go's boundary refuses such a rule too)",
            ));
        }
        if let Some(pos) = text.find(['"', '\'']) {
            return Err(self.err(
                pos,
                "quotes are not part of the rule language; write the value bare \
                 (for example domain=github.com, not domain=\"github.com\")",
            ));
        }
        let mut rule = Rule {
            raw: text.to_string(),
            methods: None,
            domain: None,
            paths: None,
            origin: None,
        };
        let tokens = tokenise(text);
        for (idx, &(at, tok)) in tokens.iter().enumerate() {
            let Some(eq) = tok.find('=') else {
                let next_is_eq = tokens.get(idx + 1).is_some_and(|(_, t)| t.starts_with('='));
                return Err(self.no_equals(at, tok, next_is_eq));
            };
            self.pair(&mut rule, at, &tok[..eq], &tok[eq + 1..])?;
        }
        Ok(rule)
    }

    /// The error for a token without `=`.
    fn no_equals(&self, at: usize, tok: &str, next_is_eq: bool) -> RuleError {
        if next_is_eq {
            return self.err(
                at,
                format!("no spaces are allowed around \"=\"; write \"{tok}=value\""),
            );
        }
        self.err(
            at,
            format!(
                "expected key=value, found {tok:?}; keys are method, domain and path \
                 (for example \"domain={tok}\")"
            ),
        )
    }

    /// One `key=value` pair starting at byte `at`, stored into `rule`.
    fn pair(&self, rule: &mut Rule, at: usize, key: &str, value: &str) -> Result<(), RuleError> {
        let vat = at + key.len() + 1;
        if key.is_empty() {
            return Err(self.err(
                at,
                "a value without a key; no spaces are allowed around \"=\" \
                 (write key=value, key one of method, domain, path)",
            ));
        }
        if value.is_empty() {
            let go = if key == "path" { GO_EMPTY_PATH } else { "" };
            return Err(self.err(
                vat,
                format!(
                    "{key}= has no value; write a value or leave the key out to match everything{go}"
                ),
            ));
        }
        match key {
            "method" => {
                let more = self.methods(value, vat)?;
                rule.methods = Some(match rule.methods.take() {
                    Some(m) => m.join(more),
                    None => more,
                });
            }
            "domain" if rule.domain.is_some() => {
                return Err(self.err(
                    at,
                    "key \"domain\" appears twice; a request has one host, and Go's boundary \
                     would silently join the two values into one host name (domain=a.com \
                     domain=b.com as a.com.b.com), so the rule is refused: write one rule per \
                     domain",
                ))
            }
            "domain" => rule.domain = Some(self.domain(value, vat)?),
            "path" => {
                let more = self.paths(value, vat)?;
                rule.paths.get_or_insert_with(Vec::new).extend(more);
            }
            other => return Err(self.unknown_key(at, other)),
        }
        Ok(())
    }

    fn unknown_key(&self, at: usize, key: &str) -> RuleError {
        let lower = key.to_ascii_lowercase();
        if ["method", "domain", "path"].contains(&lower.as_str()) {
            return self.err(at, format!("keys are lowercase; write {lower:?}"));
        }
        let hint = match key {
            "host" | "hostname" | "domains" => " (to match a host write domain=)",
            "methods" | "verb" => " (to match methods write method=)",
            "paths" | "url" => " (to match paths write path=)",
            _ => "",
        };
        self.err(
            at,
            format!("unknown key {key:?}; expected method, domain or path{hint}"),
        )
    }

    /// Splits a comma list, pointing at the first empty item.
    pub(super) fn items<'v>(
        &self,
        value: &'v str,
        vat: usize,
        what: &str,
    ) -> Result<Vec<(usize, &'v str)>, RuleError> {
        let mut out = Vec::new();
        let mut off = 0;
        for item in value.split(',') {
            if item.is_empty() {
                let go = if what == "path" { GO_EMPTY_PATH } else { "" };
                return Err(self.err(
                    vat + off,
                    format!("empty {what} in the list; separate {what}s with single commas and no trailing comma{go}"),
                ));
            }
            out.push((vat + off, item));
            off += item.len() + 1;
        }
        Ok(out)
    }
}
