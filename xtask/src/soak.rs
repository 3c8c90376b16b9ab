//! `cargo xtask soak --duration N`: runs the soak test of the integration tests
//! (`tests::lifecycle::soak::soak`, ignored in normal runs) as root for `N` seconds: flood,
//! connection churn and collector outage phases against one agent, and writes its Markdown
//! report (RSS over time, per-phase counters) to `--report`; then the churn test
//! (`tests::lifecycle::churn`) at full scale: `--churn-processes` short-lived processes and
//! `--churn-connections` short connections, after which every map and table must be back at its
//! baseline; its report (RSS over time) goes next to the soak report as `churn.md`.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{cmd, setup, test};

/// The soak test's full name.
const SOAK_TEST: &str = "tests::lifecycle::soak::soak";
/// The churn test's full name (CI runs it at a small scale).
const CHURN_TEST: &str = "tests::lifecycle::churn::churn_returns_to_baseline";

/// Time beyond `--duration` for builds of nothing new, start-up and shut-down.
const SLACK: Duration = Duration::from_mins(5);

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Seconds the three phases take together.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Where the Markdown report goes (default: target/soak/report.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Short-lived client processes of the churn test.
    #[arg(long, default_value_t = 10_000)]
    churn_processes: u64,
    /// Short connections of the churn test.
    #[arg(long, default_value_t = 1_000_000)]
    churn_connections: u64,
}

/// Bound on the churn test: far above its time at full scale on a 2-core machine.
const CHURN_TIMEOUT: Duration = Duration::from_hours(1);

/// Builds what the integration tests need and runs the soak test.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    setup::run(&setup::Options::default()).context("setup failed")?;
    let report = match &opts.report {
        Some(path) => std::path::absolute(path)?,
        None => cmd::target_dir(&cmd::workspace_root())?.join("soak/report.md"),
    };
    if let Some(dir) = report.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seconds = OsString::from(opts.duration.to_string());
    let args = ["--ignored", "--exact", "--nocapture", SOAK_TEST].map(OsString::from);
    test::run_integration(
        args.to_vec(),
        &[
            ("MOP_SOAK_SECONDS", seconds.as_os_str()),
            ("MOP_SOAK_REPORT", report.as_os_str()),
        ],
        Duration::from_secs(opts.duration) * 2 + SLACK,
    )?;
    eprintln!("soak: report in {}", report.display());
    let processes = OsString::from(opts.churn_processes.to_string());
    let connections = OsString::from(opts.churn_connections.to_string());
    let churn_report = report.with_file_name("churn.md");
    let args = ["--exact", "--nocapture", CHURN_TEST].map(OsString::from);
    test::run_integration(
        args.to_vec(),
        &[
            ("MOP_CHURN_PROCESSES", processes.as_os_str()),
            ("MOP_CHURN_CONNECTIONS", connections.as_os_str()),
            ("MOP_CHURN_REPORT", churn_report.as_os_str()),
        ],
        CHURN_TIMEOUT,
    )?;
    eprintln!("soak: churn report in {}", churn_report.display());
    Ok(())
}
