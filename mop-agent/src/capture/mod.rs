//! The capture stage: loads the eBPF programs, attaches a capture path, reads the ring buffer
//! and drives the per-connection protocol parsers.

pub mod btf;
pub mod conntrack;
pub mod event;
pub mod kernel;
pub mod loader;
pub mod parser;
pub mod paths;
pub mod pid_filter;
pub mod privileges;
pub mod stage;
pub mod stream;
pub mod sys;
pub mod tls;

use thiserror::Error;

pub use loader::{CapturePathKind, KernelCounters, LoadSettings, Loaded, Probes};
pub use pid_filter::PidFilter;

/// Why capture could not start.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The process lacks a capability the agent needs.
    #[error(
        "missing capability {name}: needed {why} (run as root, or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
    )]
    MissingCapability {
        /// The capability, e.g. `CAP_BPF`.
        name: &'static str,
        /// What it is needed for.
        why: &'static str,
    },
    /// The host lacks something (BTF, a readable /proc file).
    #[error("{0}")]
    Host(String),
    /// Kernel BTF could not be used.
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf::BtfError),
    /// The object could not be loaded.
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// A map or program is missing from the object.
    #[error("eBPF object has no {kind} named {name}")]
    MissingObject {
        /// `map` or `program`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// The map.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A program failed to load or attach.
    #[error("program {program}: {source}")]
    Attach {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The requested capture path cannot be used on this kernel.
    #[error("capture path {path} is unavailable: {reason}")]
    PathUnavailable {
        /// The path.
        path: &'static str,
        /// Why.
        reason: String,
    },
    /// The kernel rejected a program of the requested path (a defect, not a missing feature).
    #[error("capture path {path} failed to load: {detail}")]
    PathBroken {
        /// The path.
        path: &'static str,
        /// What failed.
        detail: String,
    },
    /// `auto` found no capture path that attaches.
    #[error("no capture path attaches on this kernel: {refusals}")]
    NoCapturePath {
        /// Each path and why it was refused.
        refusals: String,
    },
}
