//! Records into batches: each batch is one encoded `ReportBoundaryLogsRequest` sized by its
//! protobuf encoding so it fills, and never exceeds, one frame.

use boundary_proto::frame::{self, Tag, MAX_PAYLOAD};
use boundary_proto::pb::{boundary_log, BoundaryLog, ReportBoundaryLogsRequest};
use bytes::Bytes;
use prost::Message;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

use super::{truncate_utf8, MAX_RECORDS_PER_FRAME, TRUNCATION_MARKER};
use crate::fields::hex;
use crate::AuditRecord;

/// The protobuf form of a record.
pub fn to_proto(r: &AuditRecord) -> BoundaryLog {
    BoundaryLog {
        allowed: r.allowed,
        time: Some(prost_types::Timestamp {
            seconds: r.time.timestamp(),
            nanos: r.time.timestamp_subsec_nanos() as i32,
        }),
        resource: Some(boundary_log::Resource::HttpRequest(
            boundary_log::HttpRequest {
                method: r.method.clone(),
                url: r.url.clone(),
                matched_rule: if r.allowed {
                    r.matched_rule.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                truncated: false,
            },
        )),
        sequence_number: r.sequence_number,
        trace_id: hex(&r.trace.trace_id),
        span_id: hex(&r.trace.span_id),
        parent_span_id: r.trace.parent_span_id.map(|p| hex(&p)).unwrap_or_default(),
        process_pid: r.requester.as_ref().and_then(|p| p.pid).unwrap_or(0),
        process_name: requester_text(r, |p| &p.name),
        process_exe: requester_text(r, |p| &p.exe),
        process_args: requester_text(r, |p| &p.args),
        process_parent_name: requester_text(r, |p| &p.parent),
        policy_generation: r.policy_generation,
    }
}

fn requester_text(r: &AuditRecord, field: impl Fn(&crate::Requester) -> &String) -> String {
    r.requester
        .as_deref()
        .map(field)
        .cloned()
        .unwrap_or_default()
}

/// Bytes a log adds to a request (field key, length, body).
fn entry_len(log: &BoundaryLog) -> usize {
    let l = log.encoded_len();
    1 + prost::encoding::encoded_len_varint(l as u64) + l
}

/// Payload size of a request of `req_len` bytes, in the larger (tag 2) encoding.
fn payload_len(req_len: usize) -> usize {
    frame::logs_payload_len(Tag::V2, req_len)
}

/// Shortens a record's strings until the request with only this record fits in one frame.
pub fn fit_record(log: &mut BoundaryLog, base_len: usize) {
    let fits = |log: &BoundaryLog| payload_len(base_len + entry_len(log)) <= MAX_PAYLOAD;
    while !fits(log) {
        let excess = payload_len(base_len + entry_len(log)) - MAX_PAYLOAD;
        let Some(boundary_log::Resource::HttpRequest(h)) = log.resource.as_mut() else {
            // Nothing variable left to shorten: the fixed fields always fit.
            return;
        };
        h.truncated = true;
        let target = [&mut h.url, &mut h.matched_rule, &mut h.method]
            .into_iter()
            .max_by_key(|s| s.len())
            .expect("three candidates");
        let keep = target
            .len()
            .saturating_sub(excess + TRUNCATION_MARKER.len() + 8);
        let before = target.len();
        if target.ends_with(TRUNCATION_MARKER) {
            target.truncate(target.len() - TRUNCATION_MARKER.len());
        }
        truncate_utf8(target, keep);
        target.push_str(TRUNCATION_MARKER);
        if target.len() >= before {
            // Nothing left to shorten; cannot happen with the capped fixed fields.
            return;
        }
    }
}

/// An encoded request ready to frame, with what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub req: Bytes,
    pub records: usize,
    /// Sequence numbers of its first and last record (for the drop log).
    pub first_seq: i32,
    pub last_seq: i32,
    /// Already taken off the in-memory queue count.
    pub dequeued: bool,
}

impl Batch {
    /// The frame for the agent in `tag`.
    pub fn frame(&self, tag: Tag) -> Bytes {
        frame::encode_logs(tag, &self.req).expect("batches are sized to fit a frame")
    }
}

/// Builds batches by encoded size.
pub(crate) struct Batcher {
    base: ReportBoundaryLogsRequest,
    base_len: usize,
    logs: Vec<BoundaryLog>,
    logs_len: usize,
    /// When the open batch must be closed (flush interval after its first record).
    pub deadline: Option<Instant>,
    flush_interval: Duration,
}

impl Batcher {
    pub fn new(base: ReportBoundaryLogsRequest, flush_interval: Duration) -> Self {
        let base_len = base.encoded_len();
        Self {
            base,
            base_len,
            logs: Vec::new(),
            logs_len: 0,
            deadline: None,
            flush_interval,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// Adds a record; completed batches (this record did not fit in the open one, or made it
    /// reach the record limit) go to `out`.
    pub fn push(&mut self, record: &AuditRecord, out: &mut VecDeque<Batch>) {
        let mut log = to_proto(record);
        fit_record(&mut log, self.base_len);
        let e = entry_len(&log);
        if !self.logs.is_empty() && payload_len(self.base_len + self.logs_len + e) > MAX_PAYLOAD {
            out.push_back(self.take());
        }
        if self.logs.is_empty() {
            self.deadline = Some(Instant::now() + self.flush_interval);
        }
        self.logs.push(log);
        self.logs_len += e;
        if self.logs.len() >= MAX_RECORDS_PER_FRAME {
            out.push_back(self.take());
        }
    }

    /// Closes the open batch (which must not be empty).
    pub fn take(&mut self) -> Batch {
        let mut req = self.base.clone();
        req.logs = std::mem::take(&mut self.logs);
        let records = req.logs.len();
        let first_seq = req.logs.first().map_or(0, |l| l.sequence_number);
        let last_seq = req.logs.last().map_or(0, |l| l.sequence_number);
        self.logs_len = 0;
        self.deadline = None;
        let bytes = req.encode_to_vec();
        debug_assert!(payload_len(bytes.len()) <= MAX_PAYLOAD);
        Batch {
            req: Bytes::from(bytes),
            records,
            first_seq,
            last_seq,
            dequeued: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::base_request;
    use super::*;
    use crate::{Identity, RunContext, TraceContext};

    fn rec(seq: i32, url: String) -> AuditRecord {
        AuditRecord {
            allowed: seq % 2 == 0,
            time: chrono::Utc::now(),
            method: "GET".into(),
            url,
            matched_rule: Some("domain=example.com".into()),
            sequence_number: seq,
            trace: TraceContext::from_traceparent(None),
            requester: None,
            policy_generation: 1,
        }
    }

    fn run() -> RunContext {
        RunContext::new(
            "claude",
            Identity {
                owner: Some("joe".into()),
                ..Default::default()
            },
        )
    }

    /// The requesting process rides in the extension fields; none, or an exited one (no pid),
    /// leaves them empty or says so, and a record with the longest values still fits a frame.
    #[test]
    fn the_requester_is_in_the_extension_fields() {
        let mut r = rec(0, "https://example.com/".into());
        assert_eq!(to_proto(&r).process_name, "");
        r.requester = Some(std::sync::Arc::new(crate::Requester {
            pid: Some(12),
            name: "curl".into(),
            exe: "/usr/bin/curl".into(),
            args: "curl -s https://example.com/".into(),
            parent: "bash".into(),
        }));
        let p = to_proto(&r);
        assert_eq!(
            (
                p.process_pid,
                p.process_name.as_str(),
                p.process_exe.as_str(),
                p.process_args.as_str(),
                p.process_parent_name.as_str()
            ),
            (
                12,
                "curl",
                "/usr/bin/curl",
                "curl -s https://example.com/",
                "bash"
            )
        );
        r.requester = Some(std::sync::Arc::new(crate::Requester::unknown(
            "unknown (exited)",
        )));
        let p = to_proto(&r);
        assert_eq!(
            (p.process_pid, p.process_exe.as_str()),
            (0, "unknown (exited)")
        );
        // PATH_MAX executable, 128-byte arguments, a URL as long as a frame: still one frame.
        r.requester = Some(std::sync::Arc::new(crate::Requester {
            pid: Some(u32::MAX),
            name: "n".repeat(16),
            exe: "/".repeat(4096),
            args: "a".repeat(128),
            parent: "p".repeat(16),
        }));
        r.url = format!("https://example.com/{}", "x".repeat(MAX_PAYLOAD));
        let base = base_request(&run());
        let mut log = to_proto(&r);
        fit_record(&mut log, base.encoded_len());
        assert!(payload_len(base.encoded_len() + entry_len(&log)) <= MAX_PAYLOAD);
    }

    #[test]
    fn batches_fill_frames_without_exceeding_them() {
        let mut b = Batcher::new(base_request(&run()), Duration::from_secs(1));
        let mut out = VecDeque::new();
        for i in 0..3000 {
            b.push(
                &rec(
                    i,
                    format!("https://example.com/{}", "p".repeat(i as usize % 300)),
                ),
                &mut out,
            );
        }
        out.push_back(b.take());
        let mut total = 0;
        for (i, batch) in out.iter().enumerate() {
            let f = batch.frame(Tag::V2);
            assert!(f.len() - 4 <= MAX_PAYLOAD);
            assert!(batch.records <= MAX_RECORDS_PER_FRAME);
            if i + 1 < out.len() {
                // Filled: the next record (at most ~400 bytes) would not have fit.
                assert!(
                    f.len() - 4 > MAX_PAYLOAD - 500,
                    "frame {i} only {} bytes",
                    f.len()
                );
            }
            assert_eq!(
                (batch.last_seq - batch.first_seq + 1) as usize,
                batch.records
            );
            total += batch.records;
        }
        assert_eq!(total, 3000);
    }

    proptest::proptest! {
        #[test]
        fn any_record_fits_one_frame_after_fitting(
            url_len in 0usize..120_000,
            rule_len in 0usize..40_000,
            method_len in 1usize..5_000,
            multibyte in proptest::bool::ANY,
        ) {
            let base = base_request(&run());
            let base_len = base.encoded_len();
            let unit = if multibyte { "é" } else { "u" };
            let mut r = rec(0, format!("https://h/{}", unit.repeat(url_len)));
            r.method = "M".repeat(method_len);
            r.matched_rule = Some("r".repeat(rule_len));
            let mut log = to_proto(&r);
            let fitted_before = payload_len(base_len + entry_len(&log)) <= MAX_PAYLOAD;
            fit_record(&mut log, base_len);
            proptest::prop_assert!(payload_len(base_len + entry_len(&log)) <= MAX_PAYLOAD);
            let Some(boundary_log::Resource::HttpRequest(h)) = &log.resource else {
                panic!("resource kept")
            };
            proptest::prop_assert_eq!(h.truncated, !fitted_before);
            if fitted_before {
                proptest::prop_assert_eq!(&h.url, &r.url);
            } else {
                // Shortened strings stay well-formed and say so.
                proptest::prop_assert!(
                    h.url.ends_with(TRUNCATION_MARKER)
                        || h.matched_rule.ends_with(TRUNCATION_MARKER)
                        || h.method.ends_with(TRUNCATION_MARKER)
                );
            }
        }
    }

    #[test]
    fn huge_record_is_truncated_not_dropped() {
        let base = base_request(&run());
        let base_len = base.encoded_len();
        let mut log = to_proto(&rec(
            0,
            format!("https://example.com/{}", "x".repeat(100_000)),
        ));
        fit_record(&mut log, base_len);
        assert!(payload_len(base_len + entry_len(&log)) <= MAX_PAYLOAD);
        let Some(boundary_log::Resource::HttpRequest(h)) = &log.resource else {
            panic!()
        };
        assert!(h.truncated);
        assert!(h.url.starts_with("https://example.com/xxx"));
        assert!(h.url.ends_with(TRUNCATION_MARKER));
        assert!(h.url.len() > MAX_PAYLOAD - 1000);
    }
}
