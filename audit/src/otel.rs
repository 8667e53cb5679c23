//! OpenTelemetry: each record becomes one span named `boundary_request` whose trace id and
//! span id are exactly the record's (so a trace id seen in Loki finds the span, and a caller's
//! `traceparent` makes our span a child of the caller's span).
//!
//! We drive the OpenTelemetry SDK directly instead of bridging `tracing` spans through
//! `tracing-opentelemetry`: the bridge mints its own span ids, and the audit record's ids must
//! be the exported ones. Export is OTLP over gRPC (tonic) with the SDK's batch processor on
//! the tokio runtime, configured by the standard `OTEL_EXPORTER_OTLP_*` variables.
//!
//! The requesting jailed process is in `boundary.process.*` attributes (`pid`, `name`, `exe`,
//! `args`, `parent_name`), not OpenTelemetry's `process.*`, which describe the process that
//! emits the span (boundary).

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, Tracer, TracerProvider};
use opentelemetry_sdk::Resource;

use crate::fields::RequestFields;
use crate::{AuditRecord, RunContext};

/// Span attributes are shown by trace viewers as text: the same escaping as the local log.
fn text(s: &str) -> String {
    crate::escape::escape_text(s).into_owned()
}

/// Is OTLP export asked for by the environment?
pub fn endpoint_from_env() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .find(|v| !v.trim().is_empty())
}

/// The span exporter pipeline.
pub(crate) struct Otel {
    provider: TracerProvider,
    tracer: Tracer,
}

impl Otel {
    /// Builds the OTLP exporter (must run inside a tokio runtime).
    pub(crate) fn start(run: &RunContext) -> Result<Self, opentelemetry::trace::TraceError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut attrs = vec![
            KeyValue::new("service.name", "boundary"),
            KeyValue::new("boundary.session_id", run.session_id.to_string()),
            KeyValue::new(
                "boundary.confined_process_name",
                run.confined_process_name.clone(),
            ),
        ];
        let id = &run.identity;
        for (k, v) in [
            ("coder.owner", &id.owner),
            ("coder.workspace_id", &id.workspace_id),
            ("coder.workspace_name", &id.workspace_name),
            ("coder.template_id", &id.template_id),
            ("coder.template_version_id", &id.template_version_id),
            ("coder.agent_name", &id.agent_name),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(k, v.clone()));
            }
        }
        let provider = TracerProvider::builder()
            .with_batch_exporter(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(Resource::new(attrs))
            .build();
        let tracer = provider.tracer("boundary-audit");
        Ok(Self { provider, tracer })
    }

    /// Records one span; cheap and non-blocking (the batch processor queues it).
    pub(crate) fn record(&self, record: &AuditRecord, f: &RequestFields) {
        let trace_id = TraceId::from_bytes(record.trace.trace_id);
        let mut attrs = vec![
            KeyValue::new("decision", f.decision),
            KeyValue::new("http.request.method", text(&f.http_method)),
            KeyValue::new("url.full", text(&f.http_url)),
            KeyValue::new("boundary.sequence_number", i64::from(f.sequence_number)),
            KeyValue::new(
                "boundary.policy_generation",
                i64::try_from(f.policy_generation).unwrap_or(i64::MAX),
            ),
        ];
        if let Some(rule) = &f.matched_rule {
            attrs.push(KeyValue::new("boundary.matched_rule", text(rule)));
        }
        if let Some(p) = &f.process {
            if let Some(pid) = p.process_pid {
                attrs.push(KeyValue::new("boundary.process.pid", i64::from(pid)));
            }
            for (k, v) in [
                ("boundary.process.name", &p.process_name),
                ("boundary.process.exe", &p.process_exe),
                ("boundary.process.args", &p.process_args),
                ("boundary.process.parent_name", &p.process_parent_name),
            ] {
                attrs.push(KeyValue::new(k, text(v)));
            }
        }
        let start: SystemTime = record.time.into();
        let builder = self
            .tracer
            .span_builder("boundary_request")
            .with_kind(SpanKind::Internal)
            .with_span_id(SpanId::from_bytes(record.trace.span_id))
            .with_trace_id(trace_id)
            .with_start_time(start)
            .with_attributes(attrs);
        let cx = match record.trace.parent_span_id {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(parent),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut span = builder.start_with_context(&self.tracer, &cx);
        if !record.allowed {
            span.set_status(opentelemetry::trace::Status::error("denied by policy"));
        }
        span.end_with_timestamp(start + Duration::from_micros(1));
    }

    /// Exports what is queued and stops; blocking, so call it off the runtime's threads.
    pub(crate) fn shutdown(self) {
        for r in self.provider.force_flush() {
            if let Err(e) = r {
                tracing::warn!(error = %e, "OpenTelemetry span export failed at shutdown");
            }
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry exporter did not shut down cleanly");
        }
    }
}
