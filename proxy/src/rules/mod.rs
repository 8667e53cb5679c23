//! Allow rules: the language users write (`method=GET domain=*.github.com path=/api/*`), its
//! parser ([`Rule::parse`]) and the compiled [`Policy`] the proxy asks for every request.
//!
//! Semantics are those of Coder's boundary rules engine, with four deliberate differences that
//! close holes in it: hosts match case-insensitively and ignore one trailing dot (DNS does),
//! paths are matched after removing dot segments (`/api/v1/../../admin` is `/admin`), a path
//! rule allows a request only when it allows every reading of the path that common origins
//! apply (decoded `%2F`, `\`, `;` parameters, double encoding: see `path`), and an empty rule
//! is an error instead of an allow-everything rule. `domain=github.com` matches exactly `github.com`; subdomains need
//! `domain=*.github.com`.

mod domain;
mod method;
mod parse;
mod path;
mod path_pattern;
mod policy;
mod rule;

pub use path::{normalize_path, path_readings};
pub use policy::{Decision, Policy};
pub use rule::{DomainPattern, Label, MethodSet, PathPattern, Rule, RuleError, Segment};

#[cfg(test)]
mod tests;
