//! The local audit log: `boundary_request` events with coderd's field names, WARN for denies
//! and INFO for allows, so `--log-level warn` shows denies only and `info` every decision.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundary_audit::fields::rfc3339_nano;
use boundary_audit::local::TARGET;
use boundary_audit::{
    AuditOptions, AuditPipeline, AuditRecord, Identity, RunContext, TraceContext,
};
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone)]
struct Event {
    target: String,
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Event {
    fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Visitor(Vec<(String, String)>);

impl Visit for Visitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut v = Visitor::default();
        event.record(&mut v);
        self.0.lock().unwrap().push(Event {
            target: event.metadata().target().to_string(),
            level: *event.metadata().level(),
            fields: v.0,
        });
    }
}

fn record(seq: i32, allowed: bool) -> AuditRecord {
    AuditRecord {
        allowed,
        time: chrono::Utc::now(),
        method: "GET".into(),
        url: format!("https://example.com/{seq}"),
        matched_rule: allowed.then(|| "domain=example.com".to_string()),
        sequence_number: seq,
        trace: TraceContext::from_traceparent(None),
        requester: None,
        policy_generation: 1 + seq as u64,
    }
}

/// Runs four decisions (allow, deny, allow, deny) under a subscriber at `level`.
fn run_at(level: LevelFilter) -> (Vec<Event>, Vec<AuditRecord>, RunContext) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _enter = rt.enter();
    let identity = Identity {
        owner: Some("joe".into()),
        workspace_name: Some("ws".into()),
        agent_name: Some("dev".into()),
        workspace_id: Some("f2bd4e9f-7e27-49fc-961e-be4d1c2aa987".into()),
        template_id: Some("0b8c2d4e-1111-4a5b-9c3d-222233334444".into()),
        template_version_id: Some("7a6b5c4d-5555-4e6f-8a9b-666677778888".into()),
    };
    let opts = AuditOptions::new(RunContext::new("claude", identity));
    let run = opts.run.clone();
    let pipe = AuditPipeline::start(opts).unwrap();
    let sink = pipe.sink();
    let cap = Capture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone().with_filter(level));
    let records: Vec<AuditRecord> = (0..4).map(|i| record(i, i % 2 == 0)).collect();
    tracing::subscriber::with_default(subscriber, || {
        for r in &records {
            sink.record(r.clone());
        }
    });
    let _ =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), pipe.shutdown()).await });
    let events = cap
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.target == TARGET)
        .cloned()
        .collect();
    (events, records, run)
}

#[test]
fn warn_level_logs_denies_only() {
    let (events, records, _) = run_at(LevelFilter::WARN);
    let seqs: Vec<&str> = events
        .iter()
        .map(|e| e.get("sequence_number").unwrap())
        .collect();
    assert_eq!(seqs, ["1", "3"]);
    assert!(events.iter().all(|e| e.level == tracing::Level::WARN));
    assert!(events.iter().all(|e| e.get("decision") == Some("deny")));
    assert_eq!(records.len(), 4);
}

#[test]
fn info_level_logs_every_decision_with_section_7_fields() {
    let (events, records, run) = run_at(LevelFilter::INFO);
    assert_eq!(events.len(), 4);
    for (e, r) in events.iter().zip(&records) {
        let names: Vec<&str> = e.fields.iter().map(|(k, _)| k.as_str()).collect();
        // The spec's field names written out here on purpose (not the crate's list): the
        // test checks the code against the spec, not against itself.
        let mut want = vec![
            "message",
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
        ];
        if r.allowed {
            want.push("matched_rule");
        }
        // Ours after coderd's: which policy generation decided it.
        want.extend(["trace", "span", "policy_generation"]);
        assert_eq!(names, want);
        assert_eq!(e.get("message"), Some("boundary_request"));
        assert_eq!(
            e.level,
            if r.allowed {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            }
        );
        assert_eq!(e.get("owner"), Some("joe"));
        assert_eq!(
            e.get("session_id"),
            Some(run.session_id.to_string().as_str())
        );
        assert_eq!(e.get("http_url"), Some(r.url.as_str()));
        assert_eq!(e.get("event_time"), Some(rfc3339_nano(r.time).as_str()));
        assert_eq!(e.get("matched_rule"), r.matched_rule.as_deref());
        assert_eq!(e.get("trace"), Some(r.trace.trace_id_hex().as_str()));
        assert_eq!(e.get("span"), Some(r.trace.span_id_hex().as_str()));
        assert_eq!(
            e.get("policy_generation"),
            Some(r.policy_generation.to_string().as_str())
        );
    }
}

#[test]
fn log_level_parses_case_insensitively_and_rejects_junk() {
    use boundary_audit::{AuditProtocol, LogLevel};
    assert_eq!("WARN".parse::<LogLevel>().unwrap(), LogLevel::Warn);
    assert_eq!("Info".parse::<LogLevel>().unwrap(), LogLevel::Info);
    assert_eq!("debug".parse::<LogLevel>().unwrap(), LogLevel::Debug);
    assert_eq!("error".parse::<LogLevel>().unwrap(), LogLevel::Error);
    let err = "verbose".parse::<LogLevel>().unwrap_err().to_string();
    assert!(err.contains("error, warn, info, debug"), "{err}");
    assert_eq!(
        "AUTO".parse::<AuditProtocol>().unwrap(),
        AuditProtocol::Auto
    );
    assert_eq!("v1".parse::<AuditProtocol>().unwrap(), AuditProtocol::V1);
    assert!("v3".parse::<AuditProtocol>().is_err());
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let opts = AuditOptions::new(RunContext::new("x", Identity::default()));
    assert!(matches!(
        AuditPipeline::start(opts),
        Err(boundary_audit::AuditError::NoRuntime)
    ));
}

/// Records dropped for the agent are never silent: one ERROR line (shown at every log level)
/// names the first and last sequence number of each run of drops.
#[test]
fn dropped_records_are_an_error_line_with_their_sequence_numbers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cap = Capture::default();
    let subscriber =
        tracing_subscriber::registry().with(cap.clone().with_filter(LevelFilter::ERROR));
    let _default = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AuditOptions::new(RunContext::new("claude", Identity::default()));
    opts.socket_path = Some(dir.path().join("absent.sock"));
    opts.queue_size = 5;
    rt.block_on(async {
        let pipe = AuditPipeline::start(opts).unwrap();
        let sink = pipe.sink();
        // Nothing drains the queue before the loop ends: 5 are queued, 15 dropped.
        for seq in 0..20 {
            sink.record(record(seq, seq == 19));
        }
        let report = pipe.shutdown().await;
        assert_eq!(
            report.dropped, 20,
            "15 dropped at the queue, 5 never delivered"
        );
    });
    let events = cap.0.lock().unwrap().clone();
    let drops: Vec<(Option<&str>, Option<&str>, Option<&str>)> = events
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .filter(|e| e.get("message").is_some_and(|m| m.contains("DROPPED")))
        .map(|e| {
            (
                e.get("first_sequence_number"),
                e.get("last_sequence_number"),
                e.get("records"),
            )
        })
        .collect();
    assert_eq!(drops, [(Some("5"), Some("19"), Some("15"))], "{events:#?}");
}
