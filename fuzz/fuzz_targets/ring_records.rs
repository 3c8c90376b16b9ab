//! Length-prefixed ring-buffer records decoded and fed to one connection tracker; see
//! `mop_agent::fuzzing::ring_records`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_agent::fuzzing::ring_records(data));
