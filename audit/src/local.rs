//! The local audit log: one `tracing` event per record, target [`TARGET`], message
//! `boundary_request`, WARN for deny and INFO for allow, with the §7 field names. Which of
//! them appear is the subscriber's level filter: `warn` shows denies only, `info` everything.
//! Our fields follow: the requesting process's (`process_*`, quoted: a command line has
//! spaces) when the request came from a jail, then `policy_generation`.

use crate::fields::RequestFields;

/// `tracing` target of audit events, for filters such as `boundary::audit=info`.
pub const TARGET: &str = "boundary::audit";

/// One `boundary_request` event at a level macro (`info` or `warn`), with the §7 fields in
/// their order; the optional tokens go between `event_time` and `trace` (`matched_rule`).
/// `tracing` needs the level at compile time, hence a macro rather than a parameter.
macro_rules! request_event {
    ($level:ident, $f:expr $(, $key:ident = $value:expr)?) => {
        tracing::$level!(
            target: TARGET,
            owner = %$f.owner,
            workspace_name = %$f.workspace_name,
            agent_name = %$f.agent_name,
            decision = $f.decision,
            session_id = %$f.session_id,
            sequence_number = $f.sequence_number,
            workspace_id = %$f.workspace_id,
            template_id = %$f.template_id,
            template_version_id = %$f.template_version_id,
            http_method = %$f.http_method,
            http_url = %$f.http_url,
            event_time = %$f.event_time,
            $($key = %$value,)?
            trace = %$f.trace,
            span = %$f.span,
            process_pid = $f.process.as_ref().and_then(|p| p.process_pid),
            process_name = $f.process.as_ref().map(|p| &p.process_name),
            process_exe = $f.process.as_ref().map(|p| &p.process_exe),
            process_args = $f.process.as_ref().map(|p| &p.process_args),
            process_parent_name = $f.process.as_ref().map(|p| &p.process_parent_name),
            policy_generation = $f.policy_generation,
            "boundary_request"
        )
    };
}

/// Whether the subscriber wants the event of an allowed (INFO) or denied (WARN) record, so
/// the caller formats its fields only when they are shown.
pub fn enabled(allowed: bool) -> bool {
    if allowed {
        tracing::enabled!(target: TARGET, tracing::Level::INFO)
    } else {
        tracing::enabled!(target: TARGET, tracing::Level::WARN)
    }
}

/// Emits the event for one record.
pub fn emit(f: &RequestFields) {
    match &f.matched_rule {
        Some(rule) => request_event!(info, f, matched_rule = rule),
        None => request_event!(warn, f),
    }
}
