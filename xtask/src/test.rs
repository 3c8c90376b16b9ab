//! `cargo xtask test`: everything CI checks, in order, with a summary.
//!
//! Runs `setup` first, then the suites: `fmt`, `clippy` (the lints), `unit` (every crate's
//! unit tests but the integration tests), `build` (the release agent), `integration` (the
//! end-to-end tests in `test/integration-test`, as root, one at a time), then every suite in
//! [`EXTRA_SUITES`]. Suites in [`OPT_IN_SUITES`] run only when named with `--suite`. A failing
//! suite does not stop the next; the command fails if any failed.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

/// Suites that other modules register: `(name, function)`, run after the built-in suites in
/// this order, and selectable with `--suite NAME`. The function returns an error to fail.
///
/// For example the Kubernetes manifests check and the fuzz smoke runs:
/// `("manifests", crate::manifests::verify)`.
const EXTRA_SUITES: &[(&str, ExtraSuite)] = &[
    ("manifests", crate::manifests::verify),
    ("experiments", crate::experiment::smoke),
    ("vm", crate::vm::suite),
    ("fuzz", crate::fuzz::smoke),
];

/// Suites that run only when selected with `--suite NAME`, never in a plain `cargo xtask test`
/// (what CI runs). None at the moment: the fuzz smoke run (3 s per target on an unoptimised
/// build) fits in CI's time.
const OPT_IN_SUITES: &[(&str, ExtraSuite)] = &[];

/// The function of an extra suite.
type ExtraSuite = fn() -> anyhow::Result<()>;

/// The function of a built-in suite.
type Runner = Box<dyn Fn(&Context) -> anyhow::Result<()>>;

/// Options of `cargo xtask test`.
#[derive(clap::Args, Default)]
pub(crate) struct Options {
    /// Run only this suite (repeatable): fmt, clippy, unit, build, integration, or an extra
    /// suite's name (manifests, experiments, and fuzz, which runs only when named).
    #[arg(long = "suite", value_name = "NAME")]
    suites: Vec<String>,
    /// Skip the lint suites (fmt and clippy).
    #[arg(long)]
    skip_lint: bool,
    /// Arguments for the integration test binaries after `--`, e.g. a test name filter or
    /// `--nocapture`.
    #[arg(last = true, value_name = "TEST_ARGS")]
    test_args: Vec<OsString>,
}

/// What a suite runs with.
struct Context {
    root: PathBuf,
    test_args: Vec<OsString>,
}

/// A suite: a name, whether it is a lint, whether it runs only when named, and what it runs.
struct Suite {
    name: &'static str,
    lint: bool,
    opt_in: bool,
    run: Runner,
}

fn suites() -> Vec<Suite> {
    let mut suites = vec![
        Suite {
            name: "fmt",
            lint: true,
            opt_in: false,
            run: Box::new(fmt),
        },
        Suite {
            name: "clippy",
            lint: true,
            opt_in: false,
            run: Box::new(clippy),
        },
        Suite {
            name: "unit",
            lint: false,
            opt_in: false,
            run: Box::new(unit),
        },
        Suite {
            name: "build",
            lint: false,
            opt_in: false,
            run: Box::new(|ctx| build_agent(&ctx.root).map(drop)),
        },
        Suite {
            name: "integration",
            lint: false,
            opt_in: false,
            run: Box::new(integration),
        },
    ];
    let extra = EXTRA_SUITES.iter().map(|s| (s, false));
    let opt_in = OPT_IN_SUITES.iter().map(|s| (s, true));
    suites.extend(extra.chain(opt_in).map(|(&(name, run), opt_in)| Suite {
        name,
        lint: false,
        opt_in,
        run: Box::new(move |_: &Context| run()),
    }));
    suites
}

/// How one suite ended.
enum Outcome {
    Passed,
    Failed(anyhow::Error),
    Skipped(&'static str),
}

/// Runs setup, then the selected suites, then prints the summary.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let all = suites();
    for name in &opts.suites {
        if !all.iter().any(|s| s.name == name) {
            let known: Vec<&str> = all.iter().map(|s| s.name).collect();
            bail!("unknown suite `{name}`; suites: {}", known.join(", "));
        }
    }
    setup::run(&setup::Options::default()).context("setup failed; no suite was run")?;
    let ctx = Context {
        root: cmd::workspace_root(),
        test_args: opts.test_args.clone(),
    };
    let mut results: Vec<(&str, Outcome, Duration)> = Vec::new();
    for suite in &all {
        let selected = if opts.suites.is_empty() {
            !suite.opt_in
        } else {
            opts.suites.iter().any(|n| n == suite.name)
        };
        if !selected {
            continue;
        }
        if suite.lint && opts.skip_lint {
            results.push((suite.name, Outcome::Skipped("--skip-lint"), Duration::ZERO));
            continue;
        }
        eprintln!("\n=== test: {} ===", suite.name);
        let started = Instant::now();
        let outcome = match (suite.run)(&ctx) {
            Ok(()) => Outcome::Passed,
            Err(e) => {
                eprintln!("=== test: {} FAILED: {e:#}", suite.name);
                Outcome::Failed(e)
            }
        };
        results.push((suite.name, outcome, started.elapsed()));
    }
    let (summary, failed) = summary(&results);
    eprintln!("\n{summary}");
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("failed suites: {}", failed.join(", "))
    }
}

fn summary(results: &[(&str, Outcome, Duration)]) -> (String, Vec<String>) {
    let mut text = String::from("test summary:\n");
    let mut failed = Vec::new();
    for (name, outcome, elapsed) in results {
        let (verdict, detail) = match outcome {
            Outcome::Passed => ("ok".to_owned(), String::new()),
            Outcome::Failed(e) => {
                failed.push((*name).to_owned());
                ("FAILED".to_owned(), format!("  {e:#}"))
            }
            Outcome::Skipped(why) => ("skipped".to_owned(), format!("  ({why})")),
        };
        let _ = writeln!(
            text,
            "  {name:<14} {verdict:<8} {:>7.1}s{detail}",
            elapsed.as_secs_f64()
        );
    }
    (text, failed)
}

/// Cargo in the workspace, without incremental compilation: its caches are a gigabyte and more
/// of the target directory that a one-off CI build never reuses.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(cmd::cargo());
    cmd.current_dir(root).env("CARGO_INCREMENTAL", "0");
    cmd
}

/// Bounds on each step, far above their normal durations on a 2-core machine: they only keep a
/// hung step from hanging CI.
const FMT_TIMEOUT: Duration = Duration::from_mins(10);
const BUILD_TIMEOUT: Duration = Duration::from_hours(1);
const TESTS_TIMEOUT: Duration = Duration::from_mins(30);

fn fmt(ctx: &Context) -> anyhow::Result<()> {
    cmd::run_bounded(
        cargo(&ctx.root).args(["fmt", "--all", "--", "--check"]),
        FMT_TIMEOUT,
    )
}

fn clippy(ctx: &Context) -> anyhow::Result<()> {
    cmd::run_bounded(
        cargo(&ctx.root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        BUILD_TIMEOUT,
    )
}

/// Unit tests of every crate that runs without root: the workspace minus the integration
/// tests (which `integration` runs as root). `--no-fail-fast` reports every failing binary.
fn unit(ctx: &Context) -> anyhow::Result<()> {
    cmd::run_bounded(
        cargo(&ctx.root).args([
            "test",
            "--workspace",
            "--exclude",
            "integration-test",
            "--no-fail-fast",
        ]),
        TESTS_TIMEOUT,
    )
}

/// Builds the release agent and returns its path.
fn build_agent(root: &Path) -> anyhow::Result<PathBuf> {
    cmd::run_bounded(
        cargo(root).args(["build", "--release", "-p", "mop-agent"]),
        BUILD_TIMEOUT,
    )?;
    let binary = cmd::target_dir(root)?.join("release/mop-agent");
    if !binary.is_file() {
        bail!("{} missing after the build", binary.display());
    }
    Ok(binary)
}

/// Builds the release agent and the integration test binaries as the current user, then runs
/// each binary as root (sudo when not root) with `--test-threads=1`: the tests share kernel
/// state (attached programs, ports, the agent's view of every process).
fn integration(ctx: &Context) -> anyhow::Result<()> {
    integration_with(ctx, &[], TESTS_TIMEOUT)
}

/// Runs the integration test binaries as [`integration`] does, with `test_args`, `env` added
/// to their environment and each bounded by `timeout` (for `cargo xtask soak`).
pub(crate) fn run_integration(
    test_args: Vec<OsString>,
    env: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let ctx = Context {
        root: cmd::workspace_root(),
        test_args,
    };
    integration_with(&ctx, env, timeout)
}

fn integration_with(
    ctx: &Context,
    env: &[(&str, &std::ffi::OsStr)],
    timeout: Duration,
) -> anyhow::Result<()> {
    if !cmd::is_root() && !cmd::have("sudo") {
        bail!("the integration tests need root: run as root or install sudo");
    }
    let agent = build_agent(&ctx.root)?;
    // The end-to-end tests, and the unit tests marked `#[ignore = "needs root ..."]`.
    let suites: [(&[&str], &str, &[&str]); 2] = [
        (&["-p", "integration-test"], "test/integration-test", &[]),
        (&["-p", "mop-agent", "--lib"], "mop-agent", &["--ignored"]),
    ];
    for (select, dir, extra) in suites {
        let out = cmd::stdout(
            cargo(&ctx.root)
                .arg("test")
                .args(select)
                .args(["--no-run", "--message-format=json-render-diagnostics"]),
        )?;
        let binaries = test_binaries(&out)?;
        if binaries.is_empty() {
            bail!("cargo built no test binary for {select:?}");
        }
        for binary in binaries {
            let mut vars = vec![("MOP_AGENT_BIN", agent.as_os_str())];
            vars.extend_from_slice(env);
            let mut test = cmd::as_root_with_env(&binary, &vars);
            test.current_dir(ctx.root.join(dir))
                .arg("--test-threads=1")
                // libtest refuses a flag given twice (`--ignored` from `cargo xtask soak`).
                .args(
                    extra
                        .iter()
                        .filter(|a| !ctx.test_args.iter().any(|t| t == **a)),
                )
                .args(&ctx.test_args);
            cmd::run_bounded(&mut test, timeout)?;
        }
    }
    Ok(())
}

/// The test executables in cargo's `--message-format=json` output.
fn test_binaries(cargo_json: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut binaries = Vec::new();
    for line in cargo_json.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cargo message {line}"))?;
        let is_test =
            message["reason"] == "compiler-artifact" && message["profile"]["test"] == true;
        if let (true, Some(executable)) = (is_test, message["executable"].as_str()) {
            binaries.push(PathBuf::from(executable));
        }
    }
    Ok(binaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_binaries_in_cargo_output() {
        let out = r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/debug/deps/integration_test-1"}
{"reason":"compiler-artifact","profile":{"test":true},"executable":null}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_binaries(out).unwrap(),
            [PathBuf::from("/t/debug/deps/integration_test-1")]
        );
    }

    #[test]
    fn summary_lists_failures() {
        let results = [
            ("fmt", Outcome::Skipped("--skip-lint"), Duration::ZERO),
            ("unit", Outcome::Passed, Duration::from_secs(3)),
            (
                "integration",
                Outcome::Failed(anyhow::anyhow!("boom")),
                Duration::from_secs(1),
            ),
        ];
        let (text, failed) = summary(&results);
        assert_eq!(failed, ["integration"]);
        assert!(text.contains("integration    FAILED"), "{text}");
        assert!(text.contains("fmt            skipped"), "{text}");
    }

    #[test]
    fn suite_names_are_unique() {
        let mut names: Vec<&str> = suites().iter().map(|s| s.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
