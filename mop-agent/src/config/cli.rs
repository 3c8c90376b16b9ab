//! `mop-agent config check FILE` and `mop-agent config print`, plus the `--config` flag, so
//! that the binary's argument parser reads no configuration variable itself.
//!
//! Neither command needs root: they only read the file and the environment.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};

use super::{Config, ConfigError, ENV_CONFIG_PATH};

/// Exit code for an invalid configuration (or an unreadable file).
pub const EXIT_INVALID: u8 = 2;

/// The configuration flag shared by every command.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// YAML configuration file with OBI v1 keys; environment variables override it.
    #[arg(long, value_name = "FILE", env = ENV_CONFIG_PATH, global = true)]
    pub config: Option<PathBuf>,
}

/// `mop-agent config ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE as the agent would load it (environment variables applied on top);
    /// prints `ok`, or each problem on its own line and exits non-zero.
    Check {
        /// The YAML file to check.
        file: PathBuf,
    },
    /// Print the effective configuration (file, environment and defaults) as YAML that
    /// `config check` accepts.
    Print {
        /// Print header values instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
    },
}

/// Loads the configuration from `path` (or `OTEL_EBPF_CONFIG_PATH`) and the process
/// environment; the one place the agent reads its real environment.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    Config::load(path, &|name: &str| std::env::var(name).ok())
}

/// Writes each problem on its own line to stderr.
pub fn report(error: &ConfigError) {
    for e in error.iter() {
        eprintln!("error: {e}");
    }
}

/// Runs a `config` subcommand; `config_path` is the global `--config` value.
pub fn run(cmd: &ConfigCommand, config_path: Option<&Path>) -> ExitCode {
    let (path, show_secrets) = match cmd {
        ConfigCommand::Check { file } => (Some(file.as_path()), None),
        ConfigCommand::Print { show_secrets } => (config_path, Some(*show_secrets)),
    };
    match load(path) {
        Ok(config) => {
            match show_secrets {
                None => println!("ok"),
                Some(secrets) => print!("{}", config.to_yaml(secrets)),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(&error);
            ExitCode::from(EXIT_INVALID)
        }
    }
}
