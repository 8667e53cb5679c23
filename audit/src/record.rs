//! The audit record and the trait the proxy delivers it through.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rand::RngCore;
use uuid::Uuid;

pub use boundary_jail::Requester;

/// Who the jailed work belongs to, as Coder knows it. Every field is optional because boundary
/// also runs outside Coder; ids are validated as UUIDs by the CLI before they get here.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub owner: Option<String>,
    pub template_id: Option<String>,
    pub template_version_id: Option<String>,
    pub agent_name: Option<String>,
}

/// Facts fixed for one boundary run, shared by every record of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    /// One random UUIDv4 per run; coderd persists records only when it parses as a UUID.
    pub session_id: Uuid,
    /// Basename of the jailed command's argv[0] (e.g. `claude`).
    pub confined_process_name: String,
    pub identity: Identity,
}

impl RunContext {
    /// A context with a fresh session id, so callers cannot forget to make one.
    pub fn new(confined_process_name: impl Into<String>, identity: Identity) -> Self {
        Self {
            session_id: Uuid::new_v4(),
            confined_process_name: confined_process_name.into(),
            identity,
        }
    }
}

/// W3C trace context of one decided request: the trace it belongs to and our span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span id from `traceparent`, when there was one (our span's parent).
    pub parent_span_id: Option<[u8; 8]>,
}

impl TraceContext {
    /// Continue the caller's trace when `traceparent` is valid, otherwise start a new one; the
    /// span id is always ours, because the decision is our own span.
    pub fn from_traceparent(header: Option<&str>) -> Self {
        let mut rng = rand::thread_rng();
        let mut span_id = [0u8; 8];
        while span_id == [0u8; 8] {
            rng.fill_bytes(&mut span_id);
        }
        if let Some((trace_id, parent)) = header.and_then(parse_traceparent) {
            return Self {
                trace_id,
                span_id,
                parent_span_id: Some(parent),
            };
        }
        let mut trace_id = [0u8; 16];
        while trace_id == [0u8; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
        }
    }

    /// Lowercase hex, 32 characters, as trace ids are printed in logs.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// Lowercase hex, 16 characters.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `version-traceid-parentid-flags`; rejects all-zero ids and version `ff` as the W3C
/// spec requires, so a forged or broken header starts a new trace instead of polluting one.
fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8])> {
    let parts: Vec<&str> = value.trim().split('-').collect();
    if parts.len() < 4 {
        return None;
    }
    let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
        return None;
    }
    if version == "00" && parts.len() != 4 {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?.try_into().ok()?;
    let parent_id: [u8; 8] = unhex(parent)?.try_into().ok()?;
    unhex(version)?;
    unhex(flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// One policy decision about one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub allowed: bool,
    /// When the request was decided.
    pub time: DateTime<Utc>,
    pub method: String,
    /// Fully qualified: `scheme://host[:port]/path[?query]`, no fragment.
    pub url: String,
    /// Raw text of the first matching rule; `None` on deny.
    pub matched_rule: Option<String>,
    /// Dense from 0 per run, one per evaluated request.
    pub sequence_number: i32,
    pub trace: TraceContext,
    /// The jailed process that made the request (found when its connection was accepted);
    /// `None` outside a jail. Shared by every request on one connection.
    pub requester: Option<Arc<Requester>>,
    /// Which generation of the policy decided it: 1 for the rules the run started with, one
    /// more per live reload. Ours, not a Coder field (an extension field on the wire).
    pub policy_generation: u64,
}

/// Where the proxy delivers records. `record` must return quickly and never wait on I/O:
/// a slow log system must not slow the agent down. Implementations queue and count drops.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: AuditRecord);
}

/// Discards everything; for tools (`boundary check`) that decide without auditing.
#[derive(Debug, Default)]
pub struct NullSink;

impl AuditSink for NullSink {
    fn record(&self, _record: AuditRecord) {}
}

/// Keeps every record in memory; for tests that assert what was audited.
#[derive(Debug, Default, Clone)]
pub struct VecSink {
    records: Arc<Mutex<Vec<AuditRecord>>>,
}

impl VecSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything recorded so far, in delivery order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().expect("VecSink poisoned").clone()
    }
}

impl AuditSink for VecSink {
    fn record(&self, record: AuditRecord) {
        self.records.lock().expect("VecSink poisoned").push(record);
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, record: AuditRecord) {
        (**self).record(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_the_callers_trace() {
        let t = TraceContext::from_traceparent(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_ne!(t.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(t.span_id_hex().len(), 16);
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let t = TraceContext::from_traceparent(Some(bad));
            assert_eq!(t.parent_span_id, None, "{bad}");
            assert_ne!(
                t.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
        }
    }
}
