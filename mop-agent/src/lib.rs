//! mop-agent: the userspace side of mop.
//!
//! The pipeline, one module per stage, data flowing one way:
//! `discovery` (which pids) -> `capture` (load, attach, read the ring buffer) -> protocol parsers
//! (the `mop-protocol` crate, driven by `capture::conntrack`) -> `span` (assembly, trace context)
//! -> `metrics` (RED aggregation) and `export` (OTLP, Prometheus, printers). `config` reads every
//! setting in one place; `telemetry` holds the agent's own counters.

pub mod agent;
pub mod capture;
pub mod config;
pub mod discovery;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod span;
pub mod telemetry;
