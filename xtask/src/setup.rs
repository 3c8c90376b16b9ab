//! `cargo xtask setup`: installs what is missing to build the agent and run its tests.
//!
//! Idempotent: every step first checks whether its result is already there. Run as root or
//! with sudo available (packages and the tracefs mount need root).

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::cmd;

/// The bpf-linker release that matches the pinned nightly (see shared/environment.md).
const BPF_LINKER_VERSION: &str = "0.10.3";

/// Debian packages the tests and benchmarks drive: real servers, clients and tools.
const APT_PACKAGES: &[&str] = &[
    "nginx",
    "wrk",
    "curl",
    "prometheus",
    "openssl",
    "iproute2",
    "procps",
    "util-linux",
    "nodejs",
    "npm",
    "golang-go",
    // `cargo xtask vm-test`: guests, their initramfs, and verified Debian kernel downloads.
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "binutils",
    "gpgv",
    "debian-archive-keyring",
    "xz-utils",
    "skopeo",
    "umoci",
    // The integration tests: Python peers (and pip for the packages below), `bpftool prog
    // show` to check that the agent leaves nothing loaded, `strace` to check that a bad
    // config stops it before it attaches anything (`setpriv` is in util-linux).
    "python3",
    "python3-pip",
    "bpftool",
    "strace",
];

/// Python packages (`PyPI`) the tests use as real peers: OTLP receivers, gRPC, HTTP/2 servers,
/// Prometheus parsing, manifest rendering and validation.
const PIP_PACKAGES: &[(&str, &str)] = &[
    ("grpcio", "grpc"),
    ("grpcio-tools", "grpc_tools"),
    ("opentelemetry-proto", "opentelemetry.proto"),
    ("prometheus-client", "prometheus_client"),
    ("aiohttp", "aiohttp"),
    ("hypercorn", "hypercorn"),
    ("h2", "h2"),
    ("rotel", "rotel"),
    ("gojsonnet", "_gojsonnet"),
    ("kubernetes-validate", "kubernetes_validate"),
    ("pyyaml", "yaml"),
    ("matplotlib", "matplotlib"),
    ("opentelemetry-sdk", "opentelemetry.sdk"),
    (
        "opentelemetry-instrumentation-wsgi",
        "opentelemetry.instrumentation.wsgi",
    ),
    (
        "opentelemetry-instrumentation-grpc",
        "opentelemetry.instrumentation.grpc",
    ),
];

/// Options of `cargo xtask setup`.
#[derive(clap::Args, Default)]
pub(crate) struct Options {
    /// Only the build toolchain (rust-src, bpf-linker) and tracefs; no test peers.
    #[arg(long)]
    pub(crate) build_only: bool,
}

/// Runs every set-up step.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    tracefs()?;
    if !opts.build_only {
        lint_components()?;
        apt_packages()?;
        pip_packages()?;
        stop_system_services();
    }
    eprintln!("setup: done");
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// rustfmt and clippy for the stable toolchain (`cargo xtask test` runs both).
fn lint_components() -> anyhow::Result<()> {
    let have = |tool: &str| {
        Command::new("cargo")
            .args([tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("fmt") && have("clippy") {
        return Ok(());
    }
    eprintln!("setup: installing rustfmt and clippy");
    cmd::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = cmd::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if current.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION}");
    cmd::run(Command::new("cargo").args([
        "install",
        "--locked",
        "--force",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
    ]))
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    eprintln!("setup: mounting tracefs on /sys/kernel/tracing");
    cmd::run(cmd::as_root("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
        .context("mounting tracefs (the agent attaches to syscall tracepoints through it)")
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        // A command of the package's name already on PATH counts: e.g. `npm` comes with
        // NodeSource's `nodejs`, which conflicts with Debian's `npm` package.
        .filter(|p| !cmd::have(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    cmd::run(cmd::as_root("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        cmd::as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn pip_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PIP_PACKAGES
        .iter()
        .filter(|(_, module)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Python packages: {}", missing.join(" "));
    // Debian 12 marks its Python as externally managed (PEP 668); these packages are test
    // tools for this machine, so pip may install them system-wide. Older pips ignore this.
    cmd::run(
        Command::new("python3")
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&missing),
    )
}

/// Debian starts nginx and Prometheus as services on install; the tests start their own
/// instances on their own ports, so the system ones are stopped (failures are harmless).
fn stop_system_services() {
    for service in ["nginx", "prometheus"] {
        let _ = cmd::as_root("systemctl")
            .args(["stop", service])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
