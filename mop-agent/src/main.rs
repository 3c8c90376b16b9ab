//! The `mop-agent` binary (wired to the pipeline once the config module lands).

use mop_agent as _;

fn main() {}
