//! The `mop-agent` binary: argument parsing and dispatch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mop_agent::config::cli::{self, ConfigArgs, ConfigCommand};

/// mop: turns the HTTP and gRPC traffic of selected processes into OpenTelemetry spans and
/// RED metrics, reading OpenTelemetry eBPF Instrumentation (OBI) v1 configuration.
#[derive(Debug, Parser)]
#[command(name = "mop-agent", version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check or print the configuration (does not need root).
    #[command(subcommand)]
    Config(ConfigCommand),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Some(Command::Config(cmd)) => cli::run(&cmd, args.config.config.as_deref()),
        None => match cli::load(args.config.config.as_deref()) {
            Err(error) => {
                cli::report(&error);
                ExitCode::from(cli::EXIT_INVALID)
            }
            Ok(_config) => {
                eprintln!("error: capture not wired yet");
                ExitCode::FAILURE
            }
        },
    }
}
