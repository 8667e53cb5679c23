//! The `domain=` value: a host pattern of dot-separated labels, `*` standing for labels.

use super::parse::Parser;
use super::rule::{DomainPattern, Label, RuleError};

impl Parser<'_> {
    pub(super) fn domain(&self, value: &str, vat: usize) -> Result<DomainPattern, RuleError> {
        if value == "*" {
            return Ok(DomainPattern::Any);
        }
        self.domain_shape(value, vat)?;
        let mut labels = Vec::new();
        let mut off = 0;
        for label in value.split('.') {
            labels.push(self.label(label, vat + off)?);
            off += label.len() + 1;
        }
        if value.len() > 253 {
            return Err(self.err(vat, "a domain is at most 253 characters long"));
        }
        Ok(DomainPattern::Labels(labels))
    }

    /// Refuses values that are not host names at all (a URL, a port, a path, a trailing dot or
    /// `*`), each with the rule the user most likely meant.
    fn domain_shape(&self, value: &str, vat: usize) -> Result<(), RuleError> {
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
        Ok(())
    }

    /// One label starting at byte `at`: `*`, or letters, digits and inner hyphens.
    fn label(&self, label: &str, at: usize) -> Result<Label, RuleError> {
        if label.is_empty() {
            return Err(self.err(at, "empty label in the domain (two dots in a row, or a leading dot); write labels separated by single dots"));
        }
        if label == "*" {
            return Ok(Label::Star);
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
        Ok(Label::Literal(label.to_ascii_lowercase()))
    }
}

/// The host part of a URL written where a host was expected, for the suggested fix.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let end = rest.find(['/', ':', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}
