//! The policy engine and the intercepting proxy.
//!
//! `rules` parses allow rules and compiles them into a [`rules::Policy`]; the rest of the crate
//! accepts connections on listeners it is handed (from a jail, or bound by a test), sniffs TLS,
//! plain HTTP and CONNECT, decides every request against the policy, forwards what is allowed
//! and answers 403 to the rest, reporting each decision to an [`boundary_audit::AuditSink`].
//! It knows nothing of how the jail was made.

pub mod rules;
