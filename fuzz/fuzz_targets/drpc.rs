//! DRPC frame decoder and packet assembler on arbitrary bytes: errors, never panics, never
//! allocates past the limit, and decoded frames re-encode to the bytes they came from.
#![no_main]

use boundary_proto::drpc::packet::{self, PacketAssembler};
use boundary_proto::drpc::wire;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let _ = packet::decode_all(data, LIMIT);

    let mut buf = BytesMut::from(data);
    let mut asm = PacketAssembler::new(LIMIT);
    let mut reencoded = BytesMut::new();
    let mut canonical = true;
    let before = buf.len();
    while let Ok(Some(frame)) = wire::decode(&mut buf, LIMIT) {
        assert!(frame.data.len() <= LIMIT);
        wire::encode(&frame, &mut reencoded);
        if let Ok(Some(p)) = asm.push(frame) {
            assert!(p.data.len() <= LIMIT);
        }
    }
    let used = before - buf.len();
    // Varints may be non-minimal in the input; compare only when lengths agree.
    if reencoded.len() != used {
        canonical = false;
    }
    if canonical {
        assert_eq!(&data[..used], &reencoded[..]);
    }
});
