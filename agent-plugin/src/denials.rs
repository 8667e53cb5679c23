//! The one-line summary of denied requests printed at exit when boundary's log lines went to a
//! file instead of the terminal the target draws on: without it a user of an interactive agent
//! would never learn that something was blocked, or where to look.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boundary_audit::escape::escape_text;
use boundary_audit::{AuditRecord, AuditSink};

/// How many distinct hosts the summary names.
const HOSTS_SHOWN: usize = 3;

/// Counts the denied requests of a run and remembers the first few hosts and the first request.
#[derive(Debug, Default)]
pub struct DenyTally {
    denied: AtomicU64,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    hosts: Vec<String>,
    more_hosts: bool,
    first: Option<(String, String)>,
}

impl DenyTally {
    /// Wraps `inner` so every record still reaches it and the denied ones are counted here.
    pub fn wrap(self: &Arc<Self>, inner: Arc<dyn AuditSink>) -> Arc<dyn AuditSink> {
        Arc::new(Tallied {
            inner,
            tally: self.clone(),
        })
    }

    fn count(&self, record: &AuditRecord) {
        if record.allowed {
            return;
        }
        self.denied.fetch_add(1, Ordering::Relaxed);
        let host = url_host(&record.url).to_string();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.first.is_none() {
            seen.first = Some((record.method.clone(), record.url.clone()));
        }
        if !seen.hosts.contains(&host) {
            if seen.hosts.len() < HOSTS_SHOWN {
                seen.hosts.push(host);
            } else {
                seen.more_hosts = true;
            }
        }
    }

    /// The line to print at exit, or `None` when nothing was denied. It names the count, the
    /// first hosts, the log file, and the `boundary check` command that lists the rules that
    /// would allow the first denied request (every part escaped: URLs come from the jail).
    pub fn summary(&self, log_file: &Path) -> Option<String> {
        let n = self.denied.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut hosts = seen.hosts.join(", ");
        if seen.more_hosts {
            hosts.push_str(", ...");
        }
        let (method, url) = seen.first.clone().unwrap_or_default();
        let noun = if n == 1 { "request" } else { "requests" };
        Some(format!(
            "boundary: {n} {noun} denied ({}); log: {}; rules that would allow the first: \
             boundary check -X {} {}",
            escape_text(&hosts),
            escape_text(&log_file.display().to_string()),
            shell_quote(&escape_text(&method)),
            shell_quote(&escape_text(&url)),
        ))
    }
}

struct Tallied {
    inner: Arc<dyn AuditSink>,
    tally: Arc<DenyTally>,
}

impl AuditSink for Tallied {
    fn record(&self, record: AuditRecord) {
        self.tally.count(&record);
        self.inner.record(record);
    }
}

/// The host of `scheme://host[:port]/...` (the whole text if it is not of that form).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |x| x.1);
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match auth.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |x| x.0),
        None => auth.rsplit_once(':').map_or(auth, |x| x.0),
    }
}

/// Single-quoted for a POSIX shell, so the printed command can be pasted as it is.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundary_audit::VecSink;

    fn record(allowed: bool, url: &str) -> AuditRecord {
        AuditRecord {
            allowed,
            time: chrono::Utc::now(),
            method: "GET".into(),
            url: url.into(),
            matched_rule: None,
            sequence_number: 0,
            trace: boundary_audit::TraceContext::from_traceparent(None),
        }
    }

    #[test]
    fn counts_denies_names_first_hosts_and_passes_every_record_on() {
        let tally = Arc::new(DenyTally::default());
        let inner = VecSink::new();
        let sink = tally.wrap(Arc::new(inner.clone()));
        assert_eq!(tally.summary(Path::new("/l")), None);
        sink.record(record(true, "https://ok.test/"));
        sink.record(record(false, "https://a.test:8443/x?q='1'"));
        for h in ["a", "b", "c", "d"] {
            sink.record(record(false, &format!("http://{h}.test/")));
        }
        sink.record(record(false, "http://[::1]:9/"));
        assert_eq!(inner.records().len(), 7);
        let line = tally.summary(Path::new("/state/boundary.log")).unwrap();
        assert_eq!(
            line,
            "boundary: 6 requests denied (a.test, b.test, c.test, ...); log: /state/boundary.log; \
             rules that would allow the first: boundary check -X 'GET' \
             'https://a.test:8443/x?q='\\''1'\\'''"
        );
    }

    #[test]
    fn hosts_from_urls() {
        assert_eq!(url_host("https://h.test:1/p"), "h.test");
        assert_eq!(url_host("http://[fe80::1]:80/"), "fe80::1");
        assert_eq!(url_host("h.test"), "h.test");
    }
}
