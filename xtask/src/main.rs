//! `cargo xtask`: the project's developer commands (see the README).

mod cmd;
mod setup;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup(opts) => setup::run(&opts),
    }
}
