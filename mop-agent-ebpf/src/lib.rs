//! Library target so that `mop-agent` can list this crate as a build-dependency (cargo then
//! rebuilds the embedded object when it changes); the programs live in the binary target.
#![no_std]

use aya_ebpf as _;
use mop_common as _;
