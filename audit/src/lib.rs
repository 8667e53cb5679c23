//! Audit: the record of one policy decision and the sinks it is delivered to.
//!
//! The proxy produces an [`AuditRecord`] for every HTTP request it decides and hands it to an
//! [`AuditSink`]. Sinks must never block the proxy: they queue, and they count what they drop.
//! This crate knows nothing of HTTP parsing or of jails.
//!
//! The one entry point for wiring is [`AuditPipeline::start`]: it fans every record out to
//! - the local log ([`local`]): a `tracing` event `boundary_request` with target
//!   `boundary::audit`, at WARN for denies and INFO for allows, so the subscriber's level
//!   filter gives "warn => denies only, info => all"; fields named as in docs/interop.md §7;
//! - the optional JSON-lines file (`--audit-log`), every decision regardless of level, one
//!   write per record, reopened on SIGHUP for log rotation;
//! - the Coder agent socket ([`forwarder`]): framed protobuf batches (docs/interop.md §5) with
//!   protocol fallback, a durable on-disk spool (or a bounded memory queue), reconnects, a
//!   check of every listener ([`peer`]) and a bounded flush at shutdown; drops are counted,
//!   reported to the agent and logged at error level with their sequence numbers;
//! - OpenTelemetry ([`otel`]): one span per record with the record's own trace and span ids,
//!   exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Every text a jailed process controls passes one escaping rule ([`escape`]) before it is
//! written to a log line, the JSON file or a span attribute.

#![forbid(unsafe_code)]

pub mod escape;
pub mod fields;
pub mod forwarder;
mod jsonfile;
pub use jsonfile::open_append;
pub mod local;
pub mod otel;
pub mod peer;
mod pipeline;
mod record;

pub use pipeline::{
    AuditError, AuditOptions, AuditPipeline, AuditProtocol, LogLevel, ShutdownReport,
};
pub use record::{
    AuditRecord, AuditSink, Identity, NullSink, Requester, RunContext, TraceContext, VecSink,
};
