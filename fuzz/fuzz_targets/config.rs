//! A fake environment, a NUL, then YAML, through the agent's configuration loader; see
//! `mop_agent::fuzzing::config` (errors name something, a valid config round-trips).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_agent::fuzzing::config(data));
