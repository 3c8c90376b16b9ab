//! The `mop-agent` binary.

use mop_agent as _;

fn main() {}
