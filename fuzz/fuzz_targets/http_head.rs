//! The proxy's plain-HTTP request-head handling on arbitrary bytes, through the public API
//! (harness in `src/lib.rs`).
#![no_main]

use boundary_fuzz::exchange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Plain HTTP only: a leading 0x16 would select the TLS path (the clienthello target).
    if data.first() == Some(&0x16) {
        return;
    }
    exchange(data);
});
