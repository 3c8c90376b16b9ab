//! The `mop-agent` binary: argument parsing and dispatch.
#![expect(
    unused_crate_dependencies,
    reason = "the library target uses the dependencies; the binary only dispatches"
)]

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
            Ok(config) => run_agent(config),
        },
    }
}

/// Runs the agent on a multi-threaded runtime, with logs on stderr at the configured level.
fn run_agent(config: mop_agent::config::Config) -> ExitCode {
    mop_agent::telemetry::init_logging(config.log_level.to_tracing());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mop")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mop-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mop_agent::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mop-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
