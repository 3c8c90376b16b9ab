//! `cargo xtask run -- [agent args]`: builds the release agent and runs it as root.
//!
//! Installs only the build toolchain (`setup --build-only`), builds `mop-agent` in release
//! mode, then replaces this process with the agent (through sudo when not root), so that
//! signals such as Ctrl-C reach the agent directly and its exit code is ours. Relative paths
//! in the arguments are relative to the directory the command was started from.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// Options of `cargo xtask run`.
#[derive(clap::Args, Default)]
pub(crate) struct Options {
    /// Arguments for mop-agent, after `--` (e.g. `-- --config examples/quickstart.yaml`).
    #[arg(last = true, value_name = "AGENT_ARGS")]
    args: Vec<OsString>,
}

/// Builds and runs the agent; returns only if it could not be started.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options { build_only: true })?;
    let root = cmd::workspace_root();
    cmd::run(Command::new(cmd::cargo()).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "mop-agent",
    ]))?;
    let agent = cmd::target_dir(&root)?.join("release/mop-agent");
    if !agent.is_file() {
        bail!("{} missing after the build", agent.display());
    }
    let mut command = cmd::as_root(&agent);
    command.args(&opts.args);
    let error = command.exec();
    Err(error).with_context(|| format!("could not run {command:?}"))
}
