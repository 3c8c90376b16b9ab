//! Any text as `/proc/PID/stat` and `/proc/net/tcp`; see `mop_agent::fuzzing::procfs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_agent::fuzzing::procfs(data));
