//! Any bytes as a `traceparent` header value; see `mop_agent::fuzzing::traceparent`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_agent::fuzzing::traceparent(data));
