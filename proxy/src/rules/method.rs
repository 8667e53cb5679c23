//! The `method=` value: a comma list of HTTP method tokens, or `*`.

use super::parse::Parser;
use super::rule::{MethodSet, RuleError};

/// RFC 9110 token characters, the only ones a method can hold.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl Parser<'_> {
    /// Methods as written, compared exactly (RFC 9110: methods are case-sensitive, so
    /// `method=get` does not match `GET`, as in Go). A `*` anywhere makes the set every method.
    pub(super) fn methods(&self, value: &str, vat: usize) -> Result<MethodSet, RuleError> {
        let mut list = Vec::new();
        let mut any = false;
        for (at, m) in self.items(value, vat, "method")? {
            if m == "*" {
                any = true;
                continue;
            }
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
            if !list.iter().any(|x| x == m) {
                list.push(m.to_string());
            }
        }
        Ok(if any {
            MethodSet::Any
        } else {
            MethodSet::Only(list)
        })
    }
}

impl MethodSet {
    /// Adds a repeated `method=` key's methods to this set (`method=GET method=POST` is
    /// `method=GET,POST`, as in Go).
    pub(super) fn join(self, more: MethodSet) -> MethodSet {
        match (self, more) {
            (MethodSet::Only(mut a), MethodSet::Only(b)) => {
                for m in b {
                    if !a.contains(&m) {
                        a.push(m);
                    }
                }
                MethodSet::Only(a)
            }
            _ => MethodSet::Any,
        }
    }
}
