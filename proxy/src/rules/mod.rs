//! Allow rules: the language users write (`method=GET domain=*.github.com path=/api/*`), its
//! parser ([`Rule::parse`]) and the compiled [`Policy`] the proxy asks for every request.
//!
//! Semantics are those of Go's boundary rules engine (methods compared exactly, a repeated
//! `method=` or `path=` adding to its list, `path=/` matching every path, a trailing `*`
//! matching an empty last segment), with deliberate differences that close holes in it: hosts
//! match case-insensitively and ignore one trailing dot (DNS does), paths are matched after
//! removing dot segments (`/api/v1/../../admin` is `/admin`), a path rule allows a request only
//! when it allows every reading of the path that common origins apply (decoded `%2F`, `\`, `;`
//! parameters, double encoding, merged slashes: see `path`), and rules Go would read as
//! something else are errors (an empty rule, an empty path pattern, a repeated `domain=`).
//! `docs/policies.md` lists them; `proxy/tests/data/rules-conformance.tsv` tests each.

mod domain;
mod live;
mod method;
mod parse;
mod path;
mod path_pattern;
mod policy;
mod rule;

pub use live::{LivePolicy, PolicySnapshot};
pub use path::{normalize_path, path_readings};
pub use policy::{suggested_path, Decision, Policy};
pub use rule::{DomainPattern, Label, MethodSet, PathPattern, Rule, RuleError, Segment};

#[cfg(test)]
mod tests;
