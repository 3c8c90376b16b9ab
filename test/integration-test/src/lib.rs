//! End-to-end tests of `mop-agent`: the acceptance criteria of interface.md, checked against
//! the real binary, real servers (nginx, Python) and real clients (curl, raw sockets) on
//! loopback, with the agent attached to the running kernel.
//!
//! They need root (or the agent's capabilities) and the peers that `cargo xtask setup`
//! installs, and must run one at a time because they share kernel state:
//! `cargo xtask test --suite integration` runs them that way. The harness here:
//! - [`agent`]: start the agent with a YAML config, wait for `ready`, stop it with a signal and
//!   collect the spans it printed (`trace_printer: json`), or run it to a failing exit;
//! - [`span`]: the printed spans, their fields checked against the contract;
//! - [`peers`]: nginx, Python servers (HTTP/1, HTTPS, HTTP/2), gRPC servers and clients
//!   (grpcio, Node), curl, a raw client, load generators and throwaway TLS certificates;
//! - [`bpf`]: which BPF programs, maps and links are loaded, who holds them, and what a ring
//!   buffer holds;
//! - [`metrics`]: the agent's self-metrics (Prometheus scrape) and a process's memory;
//! - [`util`]: temporary directories, ports, bounded waits, clocks.
//!
//! Tests live in `src/tests/<feature>.rs` and panic rather than return errors.

pub mod agent;
pub mod bpf;
pub mod metrics;
pub mod peers;
pub mod span;
pub mod util;

#[cfg(test)]
mod tests;
