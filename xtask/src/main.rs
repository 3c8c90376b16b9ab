//! `cargo xtask`: the project's developer commands (see the README).

mod cmd;
mod run;
mod setup;
mod test;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::run(&opts),
    }
}
