//! Allow rules: the language users write (`method=GET domain=*.github.com path=/api/*`), its
//! parser ([`Rule::parse`]) and the compiled [`Policy`] the proxy asks for every request.
//!
//! Semantics are those of Coder's boundary rules engine, with four deliberate differences that
//! close holes in it: hosts match case-insensitively and ignore one trailing dot (DNS does),
//! paths are matched after removing dot segments (`/api/v1/../../admin` is `/admin`), an
//! encoded slash `%2F` never separates segments, and an empty rule is an error instead of an
//! allow-everything rule. `domain=github.com` matches exactly `github.com`; subdomains need
//! `domain=*.github.com`.

mod parse;
mod path;
mod policy;

pub use parse::{DomainPattern, Label, MethodSet, PathPattern, Rule, RuleError, Segment};
pub use path::normalize_path;
pub use policy::{Decision, Policy};

#[cfg(test)]
mod tests;
