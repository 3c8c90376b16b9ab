//! Arbitrary bytes cut into segments as the input chooses (whole, cut by a capture window,
//! sendfile gaps, closes), fed to one HTTP/1 connection; see
//! `mop_protocol::http1::fuzzing::segments` for the input format and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mop_protocol::http1::fuzzing::segments(data);
});
