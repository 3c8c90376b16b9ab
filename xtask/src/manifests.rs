//! `cargo xtask manifests`: renders the Kubernetes manifests and checks them.
//!
//! `deploy/environments/<env>/main.jsonnet` renders to `deploy/manifests/<env>/<component>.yaml`
//! through `deploy/tools/manifests.py` (`PyPI` gojsonnet, pyyaml). [`verify`] is what CI runs for
//! the deploy part: staleness, `kubernetes-validate` of every object and the property tests in
//! `deploy/tests/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Python modules the deploy tooling imports, with the `PyPI` package that provides each.
const PYTHON_MODULES: &[(&str, &str)] = &[
    ("_gojsonnet", "gojsonnet"),
    ("yaml", "pyyaml"),
    ("kubernetes_validate", "kubernetes-validate"),
];

/// Options of `cargo xtask manifests`.
#[derive(clap::Args, Default)]
pub(crate) struct Options {
    /// Fail when `deploy/manifests` differs from a fresh render instead of writing it.
    #[arg(long)]
    pub(crate) check: bool,
    /// Also validate every object and run the property tests (what CI runs).
    #[arg(long, conflicts_with = "check")]
    pub(crate) verify: bool,
}

/// Renders every environment to `deploy/manifests`, or checks or verifies them.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.verify {
        return verify();
    }
    python_modules()?;
    if opts.check {
        tool("check")
    } else {
        tool("render")
    }
}

/// Everything CI checks for the deploy part: the committed manifests are up to date, every
/// object is valid for Kubernetes 1.33 (strict, offline schemas) and the property tests of
/// `deploy/tests/` pass.
pub(crate) fn verify() -> anyhow::Result<()> {
    python_modules()?;
    eprintln!("manifests: checking that deploy/manifests is up to date");
    tool("check")?;
    eprintln!("manifests: validating every object with kubernetes-validate");
    tool("validate")?;
    eprintln!("manifests: running the property tests in deploy/tests");
    let root = workspace_root();
    cmd::run(
        Command::new("python3")
            .current_dir(&root)
            .args(["-m", "unittest", "discover", "--start-directory"])
            .arg(root.join("deploy/tests"))
            .args(["--top-level-directory"])
            .arg(root.join("deploy/tests"))
            .arg("-v"),
    )
    .context("the deploy property tests failed")
}

/// Runs a subcommand of `deploy/tools/manifests.py` from the workspace root.
fn tool(subcommand: &str) -> anyhow::Result<()> {
    let root = workspace_root();
    cmd::run(
        Command::new("python3")
            .current_dir(&root)
            .arg(root.join("deploy/tools/manifests.py"))
            .arg(subcommand),
    )
}

/// Fails with the command that installs them when Python modules are missing.
fn python_modules() -> anyhow::Result<()> {
    let missing: Vec<&str> = PYTHON_MODULES
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing Python packages {}: run `cargo xtask setup` (or `python3 -m pip install {}`)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
