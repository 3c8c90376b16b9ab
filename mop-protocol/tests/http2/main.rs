//! HTTP/2 and gRPC parser tests on recorded traffic, split every way, cut by the capture window,
//! joined late, and broken on purpose.

// Used by the benchmark only.
use criterion as _;

mod capture;
mod fixtures;
mod fuzz_replay;
mod hostile;
mod splits;
mod support;
