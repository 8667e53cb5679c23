//! The one-line summary of denied requests printed at exit when boundary's log lines went to a
//! file instead of the terminal the target draws on: without it a user of an interactive agent
//! would never learn that something was blocked, or where to look.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boundary_audit::escape::escape_text;
use boundary_audit::{AuditRecord, AuditSink};

/// How many distinct hosts the summary names.
const HOSTS_SHOWN: usize = 3;

/// How many distinct denied requests `boundary learn` keeps: a command that asks for more
/// distinct URLs gets a proposal from the first ones (and is told so).
const REQUESTS_KEPT: usize = 10_000;

/// Counts the denied requests of a run and remembers the first few hosts and the first request.
#[derive(Debug, Default)]
pub struct DenyTally {
    denied: AtomicU64,
    /// Keep every distinct denied request (`boundary learn`), not only the first.
    collect: bool,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    hosts: Vec<String>,
    more_hosts: bool,
    first: Option<(String, String)>,
    /// Distinct denied (method, URL) pairs, when collecting.
    requests: BTreeSet<(String, String)>,
    more_requests: bool,
}

impl DenyTally {
    /// A tally that also keeps every distinct denied request, for `boundary learn`.
    pub fn collecting() -> Self {
        DenyTally {
            collect: true,
            ..DenyTally::default()
        }
    }

    /// The distinct denied requests as (method, URL), sorted, and whether more were left out.
    pub fn requests(&self) -> (Vec<(String, String)>, bool) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        (seen.requests.iter().cloned().collect(), seen.more_requests)
    }

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
        if self.collect {
            let pair = (record.method.clone(), record.url.clone());
            if seen.requests.len() < REQUESTS_KEPT {
                seen.requests.insert(pair);
            } else if !seen.requests.contains(&pair) {
                seen.more_requests = true;
            }
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
            requester: None,
            policy_generation: 1,
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
    fn a_collecting_tally_keeps_each_distinct_denied_request() {
        let plain = Arc::new(DenyTally::default());
        let tally = Arc::new(DenyTally::collecting());
        for t in [&plain, &tally] {
            let sink = t.wrap(Arc::new(VecSink::new()));
            for url in [
                "https://b.test/",
                "https://a.test/",
                "https://b.test/",
                "https://ok/",
            ] {
                sink.record(record(url == "https://ok/", url));
            }
        }
        assert_eq!(plain.requests(), (vec![], false));
        let pair = |u: &str| ("GET".to_string(), u.to_string());
        assert_eq!(
            tally.requests(),
            (
                vec![pair("https://a.test/"), pair("https://b.test/")],
                false
            )
        );
        // Bounded: past the cap a new request is counted as left out, a known one is not.
        let sink = tally.wrap(Arc::new(VecSink::new()));
        for i in 0..REQUESTS_KEPT {
            sink.record(record(false, &format!("https://n.test/{i}")));
        }
        let (kept, more) = tally.requests();
        assert_eq!((kept.len(), more), (REQUESTS_KEPT, true));
    }

    #[test]
    fn hosts_from_urls() {
        assert_eq!(url_host("https://h.test:1/p"), "h.test");
        assert_eq!(url_host("http://[fe80::1]:80/"), "fe80::1");
        assert_eq!(url_host("h.test"), "h.test");
    }
}
