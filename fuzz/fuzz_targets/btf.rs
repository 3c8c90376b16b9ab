//! Any bytes as the kernel's BTF, with every offset lookup the loader makes; see
//! `mop_agent::fuzzing::btf`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mop_agent::fuzzing::btf(data));
