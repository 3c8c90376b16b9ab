//! `cargo xtask experiment <name>`: the validation experiments of issue 11. Each one runs real
//! servers and clients on loopback with and without the agent, measures the baseline in the
//! same run (interleaved rounds, medians and spread, the machine's load next to each result),
//! and writes a report with plots and raw data to `experiments/results/<name>/`.
//!
//! - `overhead`: throughput, latency and CPU of nginx, a Python WSGI app and a grpcio server,
//!   with no instrumentation, with mop, and with the OpenTelemetry SDK (Python), over a rate
//!   sweep; the agent's CPU per 1k requests and RSS;
//! - `accuracy`: each request as the client measured it against its span (duration, status,
//!   path, body sizes) and exactness of span and metric counts;
//! - `completeness`: spans per request sent as the rate rises to saturation, with the kernel
//!   ring buffer's lost-event counter, at the default and at a small ring buffer;
//! - `coverage`: protocol x runtime matrix, each cell a real program, and what mop sees;
//! - `propagation`: parent/child chains across processes and the cost of the context carriers.
//!
//! `--smoke` runs each in seconds (into `target/experiments-smoke/`): [`smoke`] is the CI suite.

// Rates and ratios are compared for identity (each is copied from one list of settings), and
// each report is written top to bottom in one function.
#![allow(
    clippy::float_cmp,
    clippy::too_many_lines,
    reason = "see the comment above"
)]

mod accuracy;
mod completeness;
mod coverage;
mod load;
mod overhead;
mod peers;
mod propagation;
mod report;
mod runner;

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::bail;
use serde_json::Value;

use crate::cmd;

/// Options of `cargo xtask experiment`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Which experiment (`all`: every one in turn).
    #[arg(value_enum)]
    which: Which,
    /// A few seconds each, written under target/experiments-smoke (what CI runs).
    #[arg(long)]
    smoke: bool,
    /// Skip building the agent (use the existing release binary).
    #[arg(long)]
    no_build: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Overhead,
    Accuracy,
    Completeness,
    Coverage,
    Propagation,
    All,
}

const ALL: [Which; 5] = [
    Which::Overhead,
    Which::Accuracy,
    Which::Completeness,
    Which::Coverage,
    Which::Propagation,
];

/// What every experiment runs with.
pub(crate) struct Ctx {
    /// Where results go: `experiments/results` or `target/experiments-smoke`.
    pub(crate) out: PathBuf,
    pub(crate) smoke: bool,
    /// The machine and versions (see [`runner::environment`]).
    pub(crate) env: Value,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let which: Vec<Which> = if opts.which == Which::All {
        ALL.to_vec()
    } else {
        vec![opts.which]
    };
    run_set(&which, opts.smoke, !opts.no_build)
}

/// The CI suite: every experiment in smoke mode (needs root, nginx, wrk, Python peers).
pub(crate) fn smoke() -> anyhow::Result<()> {
    run_set(&ALL, true, true)
}

fn run_set(which: &[Which], smoke: bool, build: bool) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the experiments load eBPF programs: run them as root");
    }
    for tool in ["nginx", "wrk", "curl", "python3"] {
        if !cmd::have(tool) {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    let root = cmd::workspace_root();
    if build {
        cmd::run(Command::new(cmd::cargo()).current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "mop-agent",
        ]))?;
    }
    let agent = cmd::target_dir(&root)?.join("release/mop-agent");
    if !agent.is_file() {
        bail!("{} is not built", agent.display());
    }
    // The integration harness starts this binary.
    // SAFETY: single-threaded at this point; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("MOP_AGENT_BIN", &agent) };
    std::env::set_current_dir(&root)?;
    let out = if smoke {
        cmd::target_dir(&root)?.join("experiments-smoke")
    } else {
        root.join("experiments/results")
    };
    let ctx = Ctx {
        out,
        smoke,
        env: runner::environment(),
    };
    let mut failed = Vec::new();
    for w in which {
        let started = Instant::now();
        let (name, f): (&str, fn(&Ctx) -> anyhow::Result<()>) = match w {
            Which::Overhead => ("overhead", overhead::run),
            Which::Accuracy => ("accuracy", accuracy::run),
            Which::Completeness => ("completeness", completeness::run),
            Which::Coverage => ("coverage", coverage::run),
            Which::Propagation => ("propagation", propagation::run),
            Which::All => unreachable!("expanded above"),
        };
        // The harness panics when a peer or the agent fails to start: one experiment's failure
        // is reported and the next still runs.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx)))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Err(anyhow::anyhow!("panicked: {msg}"))
            });
        eprintln!(
            "experiment {name}: {} in {:.0} s",
            if result.is_ok() { "done" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = result {
            eprintln!("experiment {name}: {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("experiments failed: {}", failed.join(", "));
    }
    Ok(())
}
