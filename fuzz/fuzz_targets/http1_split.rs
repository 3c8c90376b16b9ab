//! Differential: a byte stream fed in its own segments and one byte per segment must give the
//! same exchanges when the parser met no problem; see `mop_protocol::http1::fuzzing::split`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_protocol::http1::fuzzing::split(data));
