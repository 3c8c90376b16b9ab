//! HTTP/2 frames in arbitrary segments: invariants, bounded memory, and the same exchanges when
//! every segment is cut in two; see `mop_protocol::http2::fuzzing::frames`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_protocol::http2::fuzzing::frames(data));
