//! The coderd side: a DRPC server for `/coder.agent.v2.Agent/ReportBoundaryLogs` that prints
//! one `boundary_request` line per record the way coderd does (docs/interop.md §7): INFO, logger
//! `coderd.agentrpc`, fields in coderd's order, `matched_rule` only on allows. Owner,
//! workspace, template and agent come from boundary's extension fields (coderd takes them from
//! its database), `request_id` is a fresh UUID per record, `trace`/`span` the record's own
//! (random when a record carries none, as coderd's own span would be). After `span` come the
//! requesting process's fields (`process_pid`, `process_name`, `process_exe`, `process_args`,
//! `process_parent_name`) when the record carries them (boundary's extension fields 1003-1007),
//! then `policy_generation` (field 1008) when it does.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;
use boundary_audit::fields::rfc3339_nano;
use boundary_proto::drpc::{self, RpcError};
use boundary_proto::pb::{boundary_log, ReportBoundaryLogsRequest, ReportBoundaryLogsResponse};
use boundary_proto::REPORT_BOUNDARY_LOGS_RPC;
use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use tokio::net::TcpListener;

use super::logfmt;

/// coderd's limit on records per request.
pub const MAX_LOGS_PER_REQUEST: usize = 1000;

/// Output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// slog's human format, as in the example of docs/interop.md §7.
    Human,
    /// slog's JSON format.
    Json,
}

/// The ordered fields of one line (trace/span last, as slog appends them).
#[derive(Debug, Clone, Serialize)]
pub struct LineFields {
    pub owner: String,
    pub workspace_name: String,
    pub agent_name: String,
    pub decision: &'static str,
    pub session_id: String,
    pub sequence_number: i32,
    pub workspace_id: String,
    pub template_id: String,
    pub template_version_id: String,
    pub http_method: String,
    pub http_url: String,
    pub event_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_rule: Option<String>,
    pub request_id: String,
    #[serde(skip)]
    pub trace: String,
    #[serde(skip)]
    pub span: String,
    /// Extension: the jailed process that made the request, when the record names one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFields>,
    /// Extension: the policy generation that decided it (absent: a record without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<u64>,
}

/// The requesting process's fields, named as in boundary's own log lines (after `span`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcessFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_pid: Option<u32>,
    pub process_name: String,
    pub process_exe: String,
    pub process_args: String,
    pub process_parent_name: String,
}

impl ProcessFields {
    /// `None` for a record without a requester (boundary outside a jail, or an older one).
    fn of(log: &boundary_proto::pb::BoundaryLog) -> Option<Self> {
        (!log.process_name.is_empty()).then(|| Self {
            process_pid: (log.process_pid != 0).then_some(log.process_pid),
            process_name: log.process_name.clone(),
            process_exe: log.process_exe.clone(),
            process_args: log.process_args.clone(),
            process_parent_name: log.process_parent_name.clone(),
        })
    }
}

fn random_hex(n: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..n].to_string()
}

/// The line fields for every record of a request.
pub fn fields_of(req: &ReportBoundaryLogsRequest) -> Vec<LineFields> {
    req.logs
        .iter()
        .map(|log| {
            let (method, url, rule) = match &log.resource {
                Some(boundary_log::Resource::HttpRequest(h)) => {
                    (h.method.clone(), h.url.clone(), h.matched_rule.clone())
                }
                None => (String::new(), String::new(), String::new()),
            };
            let time = log
                .time
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .unwrap_or_default();
            LineFields {
                owner: req.owner.clone(),
                workspace_name: req.workspace_name.clone(),
                agent_name: req.agent_name.clone(),
                decision: if log.allowed { "allow" } else { "deny" },
                session_id: req.session_id.clone(),
                sequence_number: log.sequence_number,
                workspace_id: req.workspace_id.clone(),
                template_id: req.template_id.clone(),
                template_version_id: req.template_version_id.clone(),
                http_method: method,
                http_url: url,
                event_time: rfc3339_nano(time),
                matched_rule: log.allowed.then_some(rule),
                request_id: uuid::Uuid::new_v4().to_string(),
                trace: if log.trace_id.is_empty() {
                    random_hex(32)
                } else {
                    log.trace_id.clone()
                },
                span: if log.span_id.is_empty() {
                    random_hex(16)
                } else {
                    log.span_id.clone()
                },
                process: ProcessFields::of(log),
                policy_generation: (log.policy_generation != 0).then_some(log.policy_generation),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: String,
    level: &'static str,
    msg: &'static str,
    logger_names: [&'static str; 2],
    trace: &'a str,
    span: &'a str,
    fields: &'a LineFields,
}

/// Formats one line (without the newline).
pub fn format_line(f: &LineFields, format: Format, now: chrono::DateTime<chrono::Utc>) -> String {
    match format {
        Format::Human => {
            let seq = f.sequence_number.to_string();
            let mut pairs: Vec<(&str, &str)> = vec![
                ("owner", &f.owner),
                ("workspace_name", &f.workspace_name),
                ("agent_name", &f.agent_name),
                ("decision", f.decision),
                ("session_id", &f.session_id),
                ("sequence_number", &seq),
                ("workspace_id", &f.workspace_id),
                ("template_id", &f.template_id),
                ("template_version_id", &f.template_version_id),
                ("http_method", &f.http_method),
                ("http_url", &f.http_url),
                ("event_time", &f.event_time),
            ];
            if let Some(r) = &f.matched_rule {
                pairs.push(("matched_rule", r));
            }
            pairs.push(("request_id", &f.request_id));
            pairs.push(("trace", &f.trace));
            pairs.push(("span", &f.span));
            let pid = f
                .process
                .as_ref()
                .and_then(|p| p.process_pid)
                .map(|p| p.to_string());
            if let Some(p) = &f.process {
                if let Some(pid) = &pid {
                    pairs.push(("process_pid", pid));
                }
                pairs.push(("process_name", &p.process_name));
                pairs.push(("process_exe", &p.process_exe));
                pairs.push(("process_args", &p.process_args));
                pairs.push(("process_parent_name", &p.process_parent_name));
            }
            let generation = f.policy_generation.map(|g| g.to_string());
            if let Some(g) = &generation {
                pairs.push(("policy_generation", g));
            }
            format!(
                "{} [info] coderd.agentrpc: boundary_request {}",
                now.format("%Y-%m-%d %H:%M:%S%.3f"),
                logfmt::format_pairs(pairs)
            )
        }
        Format::Json => serde_json::to_string(&JsonLine {
            ts: rfc3339_nano(now),
            level: "INFO",
            msg: "boundary_request",
            logger_names: ["coderd", "agentrpc"],
            trace: &f.trace,
            span: &f.span,
            fields: f,
        })
        .expect("plain strings serialise"),
    }
}

/// Handles one call: validates, prints, answers.
fn handle(rpc: &str, data: Bytes, format: Format) -> Result<Bytes, RpcError> {
    if rpc != REPORT_BOUNDARY_LOGS_RPC {
        return Err(RpcError {
            code: 12,
            message: format!("unknown rpc {rpc}"),
        });
    }
    let req = ReportBoundaryLogsRequest::decode(data)
        .map_err(|e| RpcError::new(format!("invalid ReportBoundaryLogsRequest: {e}")))?;
    if req.logs.len() > MAX_LOGS_PER_REQUEST {
        return Err(RpcError::new(format!(
            "too many boundary logs in one request: {} > {MAX_LOGS_PER_REQUEST}",
            req.logs.len()
        )));
    }
    if uuid::Uuid::parse_str(&req.session_id).is_err() {
        tracing::warn!(session_id = %req.session_id, "session_id is not a UUID; coderd would not persist these records");
    }
    let now = chrono::Utc::now();
    let mut text = String::new();
    for f in fields_of(&req) {
        text.push_str(&format_line(&f, format, now));
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| RpcError::new(format!("cannot write log lines: {e}")))?;
    Ok(Bytes::from(ReportBoundaryLogsResponse {}.encode_to_vec()))
}

/// Accepts DRPC connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, format: Format) -> anyhow::Result<()> {
    let format = Arc::new(format);
    loop {
        let (stream, peer) = listener
            .accept()
            .await
            .context("accepting a DRPC connection")?;
        let _ = stream.set_nodelay(true);
        let format = *format;
        tokio::spawn(async move {
            let res = drpc::serve(
                stream,
                |rpc, data| async move { handle(&rpc, data, format) },
            )
            .await;
            if let Err(e) = res {
                tracing::warn!(%peer, error = %e, "DRPC connection ended with an error");
            }
        });
    }
}
