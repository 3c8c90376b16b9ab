//! `cargo xtask`: the project's developer commands (see the README).

mod bench;
mod cmd;
mod experiment;
mod image;
mod manifests;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

/// Developer commands for mop.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent).
    Setup(setup::Options),
    /// Build the release agent and run it as root: `cargo xtask run -- [agent args]`.
    Run(run::Options),
    /// Run every check CI runs (setup, fmt, clippy, unit, build, integration, extra suites).
    Test(test::Options),
    /// Render the Kubernetes manifests to deploy/manifests (--check: fail when stale;
    /// --verify: also validate every object and run the property tests).
    Manifests(manifests::Options),
    /// Build the agent's OCI image into target/image without a container daemon.
    Image(image::Options),
    /// Measure the agent (`overhead`: nginx under load with and without it).
    Bench(bench::Options),
    /// Run a validation experiment (overhead, accuracy, completeness, coverage, propagation,
    /// all) and write its report to experiments/results/<name>/.
    Experiment(experiment::Options),
    /// Boot Debian kernels (5.10, 6.1, 6.12, 7.x) under qemu and run the agent's end-to-end
    /// HTTP/1 test in each, for each capture path; prints a kernel x path matrix.
    VmTest(vm::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Manifests(opts) => manifests::run(&opts),
        Command::Image(opts) => image::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::Experiment(opts) => experiment::run(&opts),
        Command::VmTest(opts) => vm::run(&opts),
    }
}
