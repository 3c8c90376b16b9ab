//! `cargo xtask fuzz`: runs every cargo-fuzz target of `fuzz/` for a bounded time, each from
//! its corpus (`fuzz/corpus/<target>`, kept between runs) and its seeds
//! (`fuzz/seeds/<target>`), and fails naming the saved input when a target fails.
//!
//! The `fuzz` test suite ([`smoke`], `cargo xtask test --suite fuzz`) is the short form: an
//! unoptimised build (minutes less to build on two cores) and [`SMOKE_SECONDS`] per target.
//! It took about 3 minutes here with a warm build cache and longer from a cold one, so a plain
//! `cargo xtask test` (CI) leaves it out. `fuzz/README.md` documents
//! the long form and what it found.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Seconds each target runs in the CI smoke run (about 30 s for every target together).
const SMOKE_SECONDS: u64 = 3;

/// Bound on the fuzz build (sanitizers, the whole agent and its eBPF object).
const BUILD_TIMEOUT: Duration = Duration::from_mins(40);

/// Overflow checks and `debug_assert!`s stay on in optimised builds too: an overflow is a
/// finding (cargo-fuzz leaves them off with `--release` unless asked).
const DEBUG_ASSERTIONS: &str = "--debug-assertions";

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Build without optimisations: builds faster, fuzzes about ten times slower.
    #[arg(long)]
    dev: bool,
    /// Inputs the fuzzer may try at once per target (libFuzzer's `-fork`); 1 runs in-process.
    #[arg(long, default_value_t = 1)]
    jobs: u32,
    /// Targets to run (default: every target `cargo fuzz list` shows).
    targets: Vec<String>,
}

/// The `fuzz` test suite: every target for [`SMOKE_SECONDS`] on an unoptimised build.
pub(crate) fn smoke() -> anyhow::Result<()> {
    run(&Options {
        seconds: SMOKE_SECONDS,
        dev: true,
        jobs: 1,
        targets: Vec::new(),
    })
}

fn fuzz_dir() -> PathBuf {
    cmd::workspace_root().join("fuzz")
}

/// `cargo +nightly fuzz <subcommand>` in `fuzz/`.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir())
        .args(["+nightly", "fuzz", subcommand]);
    cmd
}

/// Builds the targets, runs each, and prints one summary line per target.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let all: Vec<String> = cmd::output(&mut cargo_fuzz("list"))?
        .lines()
        .map(str::to_owned)
        .collect();
    if all.is_empty() {
        bail!("`cargo fuzz list` shows no target");
    }
    for t in &opts.targets {
        if !all.contains(t) {
            bail!("unknown fuzz target `{t}`; targets: {}", all.join(", "));
        }
    }
    let targets = if opts.targets.is_empty() {
        &all
    } else {
        &opts.targets
    };
    let profile = if opts.dev { "--dev" } else { "--release" };
    eprintln!("fuzz: building {} targets ({profile})", all.len());
    cmd::run_bounded(
        cargo_fuzz("build").args([profile, DEBUG_ASSERTIONS]),
        BUILD_TIMEOUT,
    )?;
    let logs = cmd::target_dir(&cmd::workspace_root())?.join("fuzz-logs");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut summary = Vec::new();
    for target in targets {
        let log = logs.join(format!("{target}.log"));
        let stats = run_target(target, profile, opts, &log)?;
        eprintln!("fuzz: {target:<14} {stats}");
        summary.push(format!("{target}: {stats}"));
    }
    eprintln!(
        "fuzz: every target ran {} s without a failure:\n  {}",
        opts.seconds,
        summary.join("\n  ")
    );
    Ok(())
}

/// Runs one target for `opts.seconds`; returns libFuzzer's run count and coverage, or fails
/// naming the input it saved.
fn run_target(target: &str, profile: &str, opts: &Options, log: &Path) -> anyhow::Result<String> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut run = cargo_fuzz("run");
    run.args([profile, DEBUG_ASSERTIONS, target]).arg(&corpus);
    let seeds = dir.join("seeds").join(target);
    if seeds.is_dir() {
        run.arg(&seeds);
    }
    run.args([
        "--",
        &format!("-max_total_time={}", opts.seconds),
        // A single input that takes this long is a hang, reported as a failure.
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]);
    if opts.jobs > 1 {
        run.arg(format!("-fork={}", opts.jobs));
    }
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    run.stdout(Stdio::null()).stderr(file);
    // The build is done: the run takes its time plus loading the corpus.
    let bound = Duration::from_secs(opts.seconds * 2 + 300);
    let outcome = cmd::run_bounded(&mut run, bound);
    let text = fs::read_to_string(log).unwrap_or_default();
    if let Err(e) = outcome {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let artifact = text
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .unwrap_or("(none saved)");
        bail!(
            "fuzz target {target} failed: {e:#}\ninput: fuzz/{artifact}\nreproduce: cd fuzz && \
             cargo +nightly fuzz run {profile} {DEBUG_ASSERTIONS} {target} {artifact}\nlog: {}\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(stats(&text))
}

/// `N runs, cov C, corpus K` from libFuzzer's output.
fn stats(log: &str) -> String {
    let runs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .map_or("?", str::trim);
    // The last status line (`#123 ... cov: 456 ft: 789 corp: 12/345b ...`) has the totals.
    let field = |name: &str| {
        log.lines()
            .rev()
            .find_map(|l| {
                let (_, rest) = l.split_once(name)?;
                rest.split_whitespace().next()
            })
            .unwrap_or("?")
    };
    format!(
        "{runs} runs, cov {}, corpus {}",
        field(" cov: "),
        field(" corp: ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_stats() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 348 ft: 709 corp: 270/11299b lim: 4096 exec/s: 1 rss: 4Mb\n\
                   Done 4343861 runs in 46 second(s)\n\
                   stat::number_of_executed_units: 4343861\n\
                   stat::average_exec_per_sec:     94431\n";
        assert_eq!(stats(log), "4343861 runs, cov 348, corpus 270/11299b");
        assert_eq!(stats(""), "? runs, cov ?, corpus ?");
    }
}
