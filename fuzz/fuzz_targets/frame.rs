//! Agent-socket frame decoder on arbitrary bytes, fed in arbitrary chunks: it must return
//! frames or an error, never panic, never yield a payload over the limit, and whatever it
//! decodes must re-encode to the same bytes.
#![no_main]

use boundary_proto::frame::{self, Decoder, MAX_PAYLOAD};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut consumed = Vec::new();
    let mut frames = Vec::new();
    'outer: for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    for f in &frames {
        assert!(f.payload.len() <= MAX_PAYLOAD);
        let _ = f.decode_payload();
        let mut out = BytesMut::new();
        frame::encode(f.tag, &f.payload, &mut out).expect("decoded frames re-encode");
        consumed.extend_from_slice(&out);
    }
    assert_eq!(
        &rest[..consumed.len()],
        &consumed[..],
        "re-encoding is the input prefix"
    );
    let _ = dec.finish(&buf);
});
