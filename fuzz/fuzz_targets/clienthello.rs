//! The proxy's TLS ClientHello sniffing on arbitrary bytes, through the public API (harness in
//! `src/lib.rs`).
#![no_main]

use boundary_fuzz::exchange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how much framing the harness supplies, so the fuzzer reaches the
    // SNI parsing as well as the record layer: 0 = raw bytes after 0x16, 1 = one TLS record
    // with the right length, 2 = a record holding a ClientHello handshake header.
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let body = &body[..body.len().min(0xffff - 4)];
    let mut bytes = Vec::with_capacity(body.len() + 9);
    match mode % 3 {
        0 => {
            bytes.push(0x16);
            bytes.extend_from_slice(body);
        }
        1 => {
            bytes.extend_from_slice(&[0x16, 0x03, 0x01]);
            bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        _ => {
            let hs_len = body.len() as u32;
            bytes.extend_from_slice(&[0x16, 0x03, 0x01]);
            bytes.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
            bytes.push(0x01);
            bytes.extend_from_slice(&hs_len.to_be_bytes()[1..]);
            bytes.extend_from_slice(body);
        }
    }
    exchange(&bytes);
});
