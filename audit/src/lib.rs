//! Audit: the record of one policy decision and the sinks it is delivered to.
//!
//! The proxy produces an [`AuditRecord`] for every HTTP request it decides and hands it to an
//! [`AuditSink`]. Sinks must never block the proxy: they queue, and they count what they drop.
//! This crate knows nothing of HTTP parsing or of jails.

mod record;

pub use record::{AuditRecord, AuditSink, Identity, NullSink, RunContext, TraceContext, VecSink};
