//! The `method=` value: a comma list of HTTP method tokens, or `*`.

use super::parse::Parser;
use super::rule::{MethodSet, RuleError};

/// RFC 9110 token characters, the only ones a method can hold.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Parser<'_> {
    pub(super) fn methods(&self, value: &str, vat: usize) -> Result<MethodSet, RuleError> {
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
}
