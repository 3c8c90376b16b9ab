//! HPACK header blocks decoded whole, in fragments, and after a lost block: the same fields, or
//! unknown ones, never different ones; see `mop_protocol::http2::fuzzing::hpack`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_protocol::http2::fuzzing::hpack(data));
