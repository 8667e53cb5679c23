//! [`AuditPipeline`]: the one thing the `boundary` binary wires. It owns every sink and gives
//! the proxy a single non-blocking [`AuditSink`].

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::fields::RequestFields;
use crate::forwarder::{Forwarder, ForwarderConfig, SpoolConfig};
use crate::jsonfile::JsonFile;
use crate::otel::Otel;
use crate::{local, AuditRecord, AuditSink, RunContext};

/// `--log-level`: error, warn, info, debug (case-insensitive). At `warn` the local log shows
/// denies only, at `info` and `debug` every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// The `tracing` level with the same name.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        }
    }
}

/// A log level that is not one of error, warn, info, debug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log level {0:?}: expected one of error, warn, info, debug")]
pub struct ParseLogLevelError(pub String);

impl FromStr for LogLevel {
    type Err = ParseLogLevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            _ => Err(ParseLogLevelError(s.to_string())),
        }
    }
}

/// `--audit-protocol`: which frame tag to speak to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditProtocol {
    /// Tag 2, falling back to tag 1 for the run when the agent closes after a tag-2 frame.
    #[default]
    Auto,
    /// Tag 1 only (every agent with the socket).
    V1,
    /// Tag 2 only (agents from about March 2026).
    V2,
}

/// An audit protocol that is not auto, v1 or v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit protocol {0:?}: expected auto, v1 or v2")]
pub struct ParseAuditProtocolError(pub String);

impl FromStr for AuditProtocol {
    type Err = ParseAuditProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(AuditProtocol::Auto),
            "v1" | "1" => Ok(AuditProtocol::V1),
            "v2" | "2" => Ok(AuditProtocol::V2),
            _ => Err(ParseAuditProtocolError(s.to_string())),
        }
    }
}

/// Everything the pipeline needs; see [`AuditOptions::new`] for the defaults.
#[derive(Debug)]
pub struct AuditOptions {
    pub run: RunContext,
    /// JSON lines, every decision, one write per record, reopened on SIGHUP.
    pub audit_log: Option<PathBuf>,
    /// The agent's socket; `None` when `--disable-audit-logs`.
    pub socket_path: Option<PathBuf>,
    pub protocol: AuditProtocol,
    /// A batch is sent at most this long after its first record (default 1 s).
    pub flush_interval: Duration,
    /// Records held in memory for the agent (default 10000): without a spool, new ones are
    /// dropped past it; with one, batches go to disk from half of it on.
    pub queue_size: usize,
    /// Upper bound on the final flush (default 5 s).
    pub shutdown_timeout: Duration,
    /// Check every listener on the agent socket ([`crate::peer::check`]) before sending it
    /// a record. Off by default so tests can play the agent in-process; the binary turns it on.
    pub verify_agent_peer: bool,
    /// A connection to the agent socket made before the jail started, kept for the run.
    pub early_connection: Option<std::os::unix::net::UnixStream>,
    /// The durable spool for records the agent has not taken; `None`: memory only.
    pub spool: Option<SpoolConfig>,
}

impl AuditOptions {
    /// Defaults: no file, no socket, auto, 1 s, 10000, 5 s, no peer check, memory only.
    pub fn new(run: RunContext) -> Self {
        Self {
            run,
            audit_log: None,
            socket_path: None,
            protocol: AuditProtocol::Auto,
            flush_interval: Duration::from_secs(1),
            queue_size: 10_000,
            shutdown_timeout: Duration::from_secs(5),
            verify_agent_peer: false,
            early_connection: None,
            spool: None,
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `--audit-log` could not be opened.
    #[error("cannot open the audit log file {path}: {source}; check the directory exists and is writable")]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The OTLP exporter could not be built from the `OTEL_EXPORTER_OTLP_*` settings.
    #[error("cannot set up OpenTelemetry export to {endpoint}: {reason}; check OTEL_EXPORTER_OTLP_ENDPOINT")]
    Otel { endpoint: String, reason: String },
    /// A value that must be positive was zero.
    #[error("invalid audit option: {0}")]
    Invalid(&'static str),
    /// Not called inside a tokio runtime.
    #[error("the audit pipeline must be started inside a tokio runtime")]
    NoRuntime,
    /// Installing the SIGHUP handler failed.
    #[error("cannot install the SIGHUP handler for audit log rotation: {0}")]
    Signal(std::io::Error),
}

/// What happened to the records, for the exit summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Records written to the agent socket.
    pub sent: u64,
    /// Records that did not reach the agent socket (queue full, or still queued when the
    /// shutdown timeout ran out). Zero when forwarding is disabled.
    pub dropped: u64,
    /// Records missing from the `--audit-log` file because its writer fell behind.
    pub file_dropped: u64,
    /// True when `auto` found an older agent and fell back to v1 frames.
    pub fell_back_to_v1: bool,
    /// True when the agent socket was reached at least once (false outside Coder).
    pub connected: bool,
    /// Records left in the durable spool for the next run to deliver.
    pub spooled: u64,
}

struct Inner {
    run: RunContext,
    file: Option<JsonFile>,
    forwarder: Option<Forwarder>,
    otel: Option<Otel>,
}

/// The sink handed to the proxy.
struct PipelineSink {
    inner: Arc<RwLock<Option<Inner>>>,
    // Read-mostly copies so `record` does not hold the lock while formatting.
    run: RunContext,
    /// The `--audit-log` file or OpenTelemetry is on: they need the formatted fields even
    /// when the local log's level filter drops the record.
    file_or_otel: bool,
}

impl AuditSink for PipelineSink {
    fn record(&self, record: AuditRecord) {
        // The fields are a dozen strings and a formatted time per request: built only when
        // something reads them (the forwarder takes the record as it is).
        let local = local::enabled(record.allowed);
        let fields = (local || self.file_or_otel).then(|| RequestFields::new(&self.run, &record));
        if let Some(f) = fields.as_ref().filter(|_| local) {
            local::emit(f);
        }
        // A read lock: proxy threads record concurrently; only shutdown takes the write lock.
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(inner) = guard.as_ref() else {
            tracing::error!(
                sequence_number = record.sequence_number,
                "audit record after shutdown: DROPPED for the agent, the --audit-log file and \
                 OpenTelemetry (the local log line above is its only trace)"
            );
            return;
        };
        if let Some(fields) = &fields {
            if let Some(o) = &inner.otel {
                o.record(&record, fields);
            }
            if let Some(f) = &inner.file {
                f.push(fields);
            }
        }
        if let Some(fw) = &inner.forwarder {
            fw.push(record);
        }
        debug_assert_eq!(inner.run.session_id, self.run.session_id);
    }
}

/// The agent forwarder, when forwarding is on (a missing socket is noted at info, not an error).
fn start_forwarder(opts: &mut AuditOptions) -> Option<Forwarder> {
    let early = opts.early_connection.take();
    let spool = opts.spool.take();
    opts.socket_path.as_ref().map(|path| {
        // Outside Coder this is every run, and nothing is wrong: said once, at info.
        if !path.exists() && early.is_none() {
            tracing::info!(
                path = %path.display(),
                "no Coder agent audit socket (not in a Coder workspace, or an older Coder); \
                 logging locally and forwarding once it appears"
            );
        }
        Forwarder::start(
            ForwarderConfig {
                socket_path: path.clone(),
                protocol: opts.protocol,
                flush_interval: opts.flush_interval,
                queue_size: opts.queue_size,
                verify_peer: opts.verify_agent_peer,
                early,
                spool,
            },
            &opts.run,
        )
    })
}

/// Every audit sink of one run, behind one [`AuditSink`].
pub struct AuditPipeline {
    inner: Arc<RwLock<Option<Inner>>>,
    sink: Arc<PipelineSink>,
    shutdown_timeout: Duration,
    sighup: Option<tokio::task::JoinHandle<()>>,
}

impl AuditPipeline {
    /// Opens the file, starts the forwarder and the OTLP exporter. Must be called inside a
    /// tokio runtime. A missing agent socket is not an error: it is warned about, and used as
    /// soon as it appears.
    pub fn start(mut opts: AuditOptions) -> Result<Self, AuditError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| AuditError::NoRuntime)?;
        if opts.queue_size == 0 {
            return Err(AuditError::Invalid("--audit-queue-size must be at least 1"));
        }
        if opts.flush_interval.is_zero() {
            return Err(AuditError::Invalid(
                "--audit-flush-interval must be positive",
            ));
        }
        let _guard = handle.enter();
        let file = match &opts.audit_log {
            Some(path) => Some(
                JsonFile::start(
                    path.clone(),
                    opts.queue_size,
                    opts.run.confined_process_name.clone(),
                )
                .map_err(|source| AuditError::AuditLog {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let otel = match crate::otel::endpoint_from_env() {
            Some(endpoint) => Some(Otel::start(&opts.run).map_err(|e| AuditError::Otel {
                endpoint,
                reason: e.to_string(),
            })?),
            None => None,
        };
        let forwarder = start_forwarder(&mut opts);
        let has_file = file.is_some();
        let file_or_otel = has_file || otel.is_some();
        let inner = Arc::new(RwLock::new(Some(Inner {
            run: opts.run.clone(),
            file,
            forwarder,
            otel,
        })));
        let sighup = if has_file {
            let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(AuditError::Signal)?;
            let inner = inner.clone();
            Some(tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    let g = inner.read().unwrap_or_else(|p| p.into_inner());
                    if let Some(f) = g.as_ref().and_then(|i| i.file.as_ref()) {
                        tracing::info!("SIGHUP: reopening the audit log file");
                        f.request_reopen();
                    }
                }
            }))
        } else {
            None
        };
        Ok(Self {
            sink: Arc::new(PipelineSink {
                inner: inner.clone(),
                run: opts.run,
                file_or_otel,
            }),
            inner,
            shutdown_timeout: opts.shutdown_timeout,
            sighup,
        })
    }

    /// The agent forwarder's live counters (queued, spooled, sent, dropped) for `/metrics`;
    /// `None` when forwarding is off.
    pub fn forwarder_stats(&self) -> Option<Arc<crate::forwarder::ForwarderStats>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .as_ref()?
            .forwarder
            .as_ref()
            .map(|f| f.stats().clone())
    }

    /// The sink for the proxy: cheap to clone, never blocks.
    pub fn sink(&self) -> Arc<dyn AuditSink> {
        self.sink.clone()
    }

    /// Flushes everything queued, bounded by the shutdown timeout; returns the counts.
    pub async fn shutdown(self) -> ShutdownReport {
        if let Some(s) = &self.sighup {
            s.abort();
        }
        let inner = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        let Some(inner) = inner else {
            return ShutdownReport::default();
        };
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let mut report = ShutdownReport::default();
        if let Some(mut fw) = inner.forwarder {
            let (sent, dropped) = fw.shutdown(self.shutdown_timeout).await;
            report.sent = sent;
            report.dropped = dropped;
            report.fell_back_to_v1 = fw.stats().fell_back_to_v1.load(Ordering::SeqCst);
            report.connected = fw.stats().connections.load(Ordering::SeqCst) > 0;
            report.spooled = fw.stats().spooled_at_exit.load(Ordering::SeqCst);
        }
        if let Some(f) = inner.file {
            report.file_dropped = f.dropped();
            let _ = tokio::task::spawn_blocking(move || f.stop()).await;
        }
        if let Some(o) = inner.otel {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let t = tokio::task::spawn_blocking(move || o.shutdown());
            if tokio::time::timeout(left.max(Duration::from_millis(500)), t)
                .await
                .is_err()
            {
                tracing::warn!("OpenTelemetry export did not finish within the shutdown timeout");
            }
        }
        if report.dropped > 0 && report.connected {
            tracing::error!(
                sent = report.sent,
                dropped = report.dropped,
                spooled = report.spooled,
                "some audit records did not reach the Coder agent (their sequence numbers are \
                 in the DROPPED lines above)"
            );
        }
        report
    }
}
