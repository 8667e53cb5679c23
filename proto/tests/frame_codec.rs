//! Agent-socket frame codec: round trips under arbitrary chunking, and clean errors for
//! garbage, truncated, oversized and unknown-tag input.

use boundary_proto::frame::{self, Decoder, Frame, FrameError, Payload, Tag, MAX_PAYLOAD};
use boundary_proto::pb::{
    boundary_log, boundary_message, BoundaryLog, BoundaryMessage, BoundaryStatus,
    ReportBoundaryLogsRequest,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use prost::Message;

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![Just(Tag::V1), Just(Tag::V2)]
}

fn frames() -> impl Strategy<Value = Vec<(Tag, Vec<u8>)>> {
    prop::collection::vec((tag(), prop::collection::vec(any::<u8>(), 0..3000)), 0..8)
}

fn record() -> impl Strategy<Value = BoundaryLog> {
    (
        any::<bool>(),
        any::<i32>(),
        "[A-Z]{1,7}",
        "https?://[a-z.]{1,20}(:[0-9]{1,5})?/[ -~]{0,40}",
        "[ -~]{0,30}",
        "[0-9a-f]{32}",
        "[0-9a-f]{16}",
        any::<i64>(),
        0..1_000_000_000i32,
    )
        .prop_map(
            |(allowed, seq, method, url, rule, trace, span, secs, nanos)| BoundaryLog {
                allowed,
                time: Some(prost_types::Timestamp {
                    seconds: secs,
                    nanos,
                }),
                resource: Some(boundary_log::Resource::HttpRequest(
                    boundary_log::HttpRequest {
                        method,
                        url,
                        matched_rule: if allowed { rule } else { String::new() },
                        truncated: false,
                    },
                )),
                sequence_number: seq,
                trace_id: trace,
                span_id: span,
                parent_span_id: String::new(),
                ..Default::default()
            },
        )
}

fn request() -> impl Strategy<Value = ReportBoundaryLogsRequest> {
    (
        prop::collection::vec(record(), 0..20),
        "[0-9a-f-]{36}",
        "[a-z]{0,10}",
        "[ -~]{0,20}",
    )
        .prop_map(
            |(logs, session_id, name, owner)| ReportBoundaryLogsRequest {
                logs,
                session_id,
                confined_process_name: name,
                owner,
                ..Default::default()
            },
        )
}

/// Feeds `bytes` to a decoder in chunks of the given sizes (cycled).
fn decode_chunked(bytes: &[u8], chunks: &[usize]) -> Result<Vec<Frame>, FrameError> {
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks[i % chunks.len()].max(1).min(bytes.len() - pos);
        i += 1;
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(f) = dec.decode(&mut buf)? {
            out.push(f);
        }
    }
    dec.finish(&buf)?;
    Ok(out)
}

proptest! {
    #[test]
    fn frames_round_trip_under_any_chunking(
        input in frames(),
        chunks in prop::collection::vec(1usize..5000, 1..10),
    ) {
        let mut bytes = BytesMut::new();
        for (t, p) in &input {
            frame::encode(*t, p, &mut bytes).unwrap();
        }
        let got = decode_chunked(&bytes, &chunks).unwrap();
        let want: Vec<Frame> = input
            .into_iter()
            .map(|(tag, p)| Frame { tag, payload: Bytes::from(p) })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn messages_round_trip_through_both_tags(req in request()) {
        let v1 = frame::encode_message(Tag::V1, &req).unwrap();
        let f = frame::decode_all(&v1).unwrap();
        prop_assert_eq!(f.len(), 1);
        prop_assert_eq!(f[0].decode_payload().unwrap(), Payload::V1(req.clone()));

        let msg = BoundaryMessage { msg: Some(boundary_message::Msg::Logs(req)) };
        let v2 = frame::encode_message(Tag::V2, &msg).unwrap();
        let f = frame::decode_all(&v2).unwrap();
        prop_assert_eq!(f[0].decode_payload().unwrap(), Payload::V2(msg));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..10_000)) {
        // Any outcome is fine as long as it is a value, not a panic; decoded frames must be
        // within the limit.
        if let Ok(frames) = frame::decode_all(&bytes) {
            for f in frames {
                prop_assert!(f.payload.len() <= MAX_PAYLOAD);
                let _ = f.decode_payload();
            }
        }
    }

    #[test]
    fn truncation_anywhere_inside_a_frame_is_an_error(
        input in frames().prop_filter("non-empty", |f| !f.is_empty()),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = BytesMut::new();
        for (t, p) in &input {
            frame::encode(*t, p, &mut bytes).unwrap();
        }
        let cut = cut.index(bytes.len());
        // Frame boundaries are the only cuts that decode cleanly.
        let mut boundaries = vec![0usize];
        for (_, p) in &input {
            boundaries.push(boundaries.last().unwrap() + 4 + p.len());
        }
        let res = frame::decode_all(&bytes[..cut]);
        if boundaries.contains(&cut) {
            prop_assert!(res.is_ok());
        } else {
            prop_assert!(matches!(res, Err(FrameError::Truncated(_))), "cut {} gave {:?}", cut, res);
        }
    }
}

#[test]
fn oversized_header_is_rejected_before_the_payload_arrives() {
    let mut buf = BytesMut::from(&[1u8, 0x00, 0x80, 0x01][..]);
    assert_eq!(
        Decoder::new().decode(&mut buf),
        Err(FrameError::Oversized(MAX_PAYLOAD + 1))
    );
    let mut buf = BytesMut::from(&[2u8, 0xff, 0xff, 0xff][..]);
    assert_eq!(
        Decoder::new().decode(&mut buf),
        Err(FrameError::Oversized(0xff_ffff))
    );
}

#[test]
fn unknown_tags_are_rejected() {
    for t in [0u8, 3, 0x7f, 0xff] {
        let mut buf = BytesMut::from(&[t, 0, 0, 1, 0][..]);
        assert_eq!(
            Decoder::new().decode(&mut buf),
            Err(FrameError::UnknownTag(t))
        );
    }
}

#[test]
fn encode_message_refuses_oversized_messages() {
    let req = ReportBoundaryLogsRequest {
        session_id: "x".repeat(MAX_PAYLOAD),
        ..Default::default()
    };
    assert!(matches!(
        frame::encode_message(Tag::V1, &req),
        Err(FrameError::Oversized(n)) if n > MAX_PAYLOAD
    ));
}

#[test]
fn bad_protobuf_payload_is_an_error() {
    let mut bytes = BytesMut::new();
    frame::encode(Tag::V1, &[0x0a, 0x05, 0x01], &mut bytes).unwrap();
    let f = frame::decode_all(&bytes).unwrap();
    assert!(matches!(
        f[0].decode_payload(),
        Err(FrameError::BadPayload { .. })
    ));
}

/// Coder's field numbers are an API: check the bytes, not just our own round trip.
#[test]
fn coder_field_numbers_are_exact() {
    let log = BoundaryLog {
        allowed: true,
        time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        resource: Some(boundary_log::Resource::HttpRequest(
            boundary_log::HttpRequest {
                method: "G".into(),
                url: "u".into(),
                matched_rule: "r".into(),
                truncated: false,
            },
        )),
        sequence_number: 5,
        ..Default::default()
    };
    assert_eq!(
        log.encode_to_vec(),
        vec![
            0x08, 0x01, // allowed = 1
            0x12, 0x02, 0x08, 0x01, // time = 2 { seconds = 1 }
            0x1a, 0x09, 0x0a, 0x01, b'G', 0x12, 0x01, b'u', 0x1a, 0x01,
            b'r', // http_request = 3
            0x20, 0x05, // sequence_number = 4
        ]
    );
    // Our policy generation rides after Coder's fields, which stay byte for byte the same:
    // field 1008, wire type 0 => key varint 8064 (0x80 0x3f).
    let mut with_generation = log.clone();
    with_generation.policy_generation = 2;
    let mut want = log.encode_to_vec();
    want.extend([0x80, 0x3f, 0x02]);
    assert_eq!(with_generation.encode_to_vec(), want);
    let req = ReportBoundaryLogsRequest {
        logs: vec![BoundaryLog::default()],
        session_id: "s".into(),
        confined_process_name: "c".into(),
        ..Default::default()
    };
    assert_eq!(
        req.encode_to_vec(),
        vec![0x0a, 0x00, 0x12, 0x01, b's', 0x1a, 0x01, b'c']
    );
    let status = BoundaryMessage {
        msg: Some(boundary_message::Msg::Status(BoundaryStatus {
            dropped_channel_full: 3,
            dropped_batch_full: 4,
        })),
    };
    assert_eq!(
        status.encode_to_vec(),
        vec![0x12, 0x04, 0x08, 0x03, 0x10, 0x04]
    );
    // Our extensions are numbered from 1000: field 1000, wire type 2 => varint 8002.
    let ext = ReportBoundaryLogsRequest {
        workspace_id: "w".into(),
        ..Default::default()
    };
    assert_eq!(ext.encode_to_vec(), vec![0xc2, 0x3e, 0x01, b'w']);
}
