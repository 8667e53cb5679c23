//! The fields of coderd's `boundary_request` line (docs/interop.md §7), computed once per
//! record, in coderd's order. The local log, the JSON file and our coderd sink all use these
//! names, so the same Loki queries work with and without coderd. After them come our
//! extension fields: the requesting process ([`ProcessFields`]), when the request came from a
//! jail, and the policy generation that decided it (`policy_generation`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{AuditRecord, RunContext};

/// Message text of every audit line; an API for Loki queries.
pub const MESSAGE: &str = "boundary_request";

/// The §7 fields in coderd's order (`request_id` is coderd's own and not part of a record).
pub const FIELD_ORDER: [&str; 16] = [
    "owner",
    "workspace_name",
    "agent_name",
    "decision",
    "session_id",
    "sequence_number",
    "workspace_id",
    "template_id",
    "template_version_id",
    "http_method",
    "http_url",
    "event_time",
    "matched_rule",
    "request_id",
    "trace",
    "span",
];

/// Our extension fields after coderd's, in their order: the process that made the request
/// (present on records from a jail; `process_pid` absent when it is unknown).
pub const PROCESS_FIELDS: [&str; 5] = [
    "process_pid",
    "process_name",
    "process_exe",
    "process_args",
    "process_parent_name",
];

/// One record's line fields. Serialises in coderd's field order, then ours; `matched_rule` only
/// on allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestFields {
    pub owner: String,
    pub workspace_name: String,
    pub agent_name: String,
    /// `allow` or `deny`.
    pub decision: &'static str,
    pub session_id: String,
    pub sequence_number: i32,
    pub workspace_id: String,
    pub template_id: String,
    pub template_version_id: String,
    pub http_method: String,
    pub http_url: String,
    /// RFC 3339 UTC with up to nine fractional digits, as Go's `time.RFC3339Nano`.
    pub event_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_rule: Option<String>,
    pub trace: String,
    pub span: String,
    /// Extension: the jailed process that made the request; absent outside a jail.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFields>,
    /// Ours: the policy generation that decided the request (1 at start, +1 per live reload).
    pub policy_generation: u64,
}

/// The requesting process, after coderd's fields (our extension; `process_pid` absent when
/// unknown, the text fields then saying why, e.g. `unknown (exited)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessFields {
    /// Its pid as seen inside the jail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_pid: Option<u32>,
    /// Its name (`comm`).
    pub process_name: String,
    /// Its executable's path.
    pub process_exe: String,
    /// The first words of its command line.
    pub process_args: String,
    /// Its parent's name.
    pub process_parent_name: String,
}

impl ProcessFields {
    fn new(r: &crate::Requester) -> Self {
        Self {
            process_pid: r.pid,
            process_name: r.name.clone(),
            process_exe: r.exe.clone(),
            process_args: r.args.clone(),
            process_parent_name: r.parent.clone(),
        }
    }
}

impl RequestFields {
    /// The fields for `record` in run `run`.
    pub fn new(run: &RunContext, record: &AuditRecord) -> Self {
        let id = &run.identity;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            owner: s(&id.owner),
            workspace_name: s(&id.workspace_name),
            agent_name: s(&id.agent_name),
            decision: decision(record.allowed),
            session_id: run.session_id.to_string(),
            sequence_number: record.sequence_number,
            workspace_id: s(&id.workspace_id),
            template_id: s(&id.template_id),
            template_version_id: s(&id.template_version_id),
            http_method: record.method.clone(),
            http_url: record.url.clone(),
            event_time: rfc3339_nano(record.time),
            matched_rule: if record.allowed {
                Some(record.matched_rule.clone().unwrap_or_default())
            } else {
                None
            },
            trace: hex(&record.trace.trace_id),
            span: hex(&record.trace.span_id),
            process: record.requester.as_deref().map(ProcessFields::new),
            policy_generation: record.policy_generation,
        }
    }
}

/// Lowercase hex without per-byte formatting (this runs on the proxy's thread per record).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// `allow` / `deny`, the values Loki dashboards filter on.
pub fn decision(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Formats like Go's `time.RFC3339Nano`: UTC `Z`, fractional seconds without trailing zeros.
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hex_matches_the_record_formatting() {
        let t = crate::TraceContext::from_traceparent(None);
        assert_eq!(hex(&t.trace_id), t.trace_id_hex());
        assert_eq!(hex(&t.span_id), t.span_id_hex());
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff]), "000ff0ff");
    }

    #[test]
    fn rfc3339_nano_matches_go() {
        let t = Utc.timestamp_opt(1_768_522_299, 388_607_657).unwrap();
        assert_eq!(rfc3339_nano(t), "2026-01-16T00:11:39.388607657Z");
        let t = Utc.timestamp_opt(1_768_522_299, 500_000_000).unwrap();
        assert_eq!(rfc3339_nano(t), "2026-01-16T00:11:39.5Z");
        let t = Utc.timestamp_opt(1_768_522_299, 0).unwrap();
        assert_eq!(rfc3339_nano(t), "2026-01-16T00:11:39Z");
    }
}
