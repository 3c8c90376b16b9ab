//! HTTP/1 parser tests on recorded traffic, split every way, cut by the capture window, and
//! broken on purpose.

// Used by the benchmark only.
use criterion as _;

mod capture;
mod fixtures;
mod fuzz_replay;
mod malformed;
mod splits;
mod support;
