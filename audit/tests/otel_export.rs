//! OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each record is exported over
//! OTLP/gRPC as a span whose trace id and span id are the record's, and whose parent is the
//! caller's `traceparent` span. The receiver is an in-process tonic OTLP trace collector.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundary_audit::{
    AuditOptions, AuditPipeline, AuditRecord, Identity, Requester, RunContext, TraceContext,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_become_spans_with_their_own_ids() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The only test in this binary, so setting the process environment is safe.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));

    let pipe = AuditPipeline::start(AuditOptions::new(RunContext::new(
        "claude",
        Identity::default(),
    )))
    .unwrap();
    let sink = pipe.sink();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let records: Vec<AuditRecord> = (0..3)
        .map(|i| AuditRecord {
            allowed: i != 1,
            time: chrono::Utc::now(),
            method: "GET".into(),
            url: format!("https://example.com/{i}"),
            matched_rule: (i != 1).then(|| "domain=example.com".to_string()),
            sequence_number: i,
            trace: TraceContext::from_traceparent((i == 2).then_some(caller)),
            // A known process, one that exited before its connection was accepted, none.
            requester: match i {
                0 => Some(std::sync::Arc::new(Requester {
                    pid: Some(42),
                    name: "curl".into(),
                    exe: "/usr/bin/curl".into(),
                    args: "curl -s https://example.com/0".into(),
                    parent: "bash".into(),
                })),
                1 => Some(std::sync::Arc::new(Requester::unknown(
                    boundary_jail::attribution::EXITED,
                ))),
                _ => None,
            },
            policy_generation: 1 + i as u64,
        })
        .collect();
    for r in &records {
        sink.record(r.clone());
    }
    pipe.shutdown().await;
    let start = Instant::now();
    while collector.0.lock().unwrap().len() < 3 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = collector.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "exported spans");
    for r in &records {
        let s = spans
            .iter()
            .find(|s| s.span_id == r.trace.span_id)
            .unwrap_or_else(|| panic!("no span with the id of record {}", r.sequence_number));
        assert_eq!(s.name, "boundary_request");
        assert_eq!(s.trace_id, r.trace.trace_id);
        assert_eq!(
            s.parent_span_id,
            r.trace
                .parent_span_id
                .map(|p| p.to_vec())
                .unwrap_or_default()
        );
        assert_eq!(
            attr(s, "decision").as_deref(),
            Some(if r.allowed { "allow" } else { "deny" })
        );
        assert_eq!(attr(s, "url.full").as_deref(), Some(r.url.as_str()));
        assert_eq!(
            attr(s, "boundary.sequence_number"),
            Some(r.sequence_number.to_string())
        );
        let p = r.requester.as_deref();
        assert_eq!(
            attr(s, "boundary.process.pid"),
            p.and_then(|p| p.pid).map(|p| p.to_string())
        );
        for (key, want) in [
            ("boundary.process.name", p.map(|p| p.name.clone())),
            ("boundary.process.exe", p.map(|p| p.exe.clone())),
            ("boundary.process.args", p.map(|p| p.args.clone())),
            ("boundary.process.parent_name", p.map(|p| p.parent.clone())),
        ] {
            assert_eq!(attr(s, key), want, "{key} of record {}", r.sequence_number);
        }
        assert_eq!(
            attr(s, "boundary.policy_generation"),
            Some(r.policy_generation.to_string())
        );
    }
    let continued = spans.iter().find(|s| !s.parent_span_id.is_empty()).unwrap();
    assert_eq!(
        continued.trace_id,
        [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36
        ]
    );
    server.abort();
}
