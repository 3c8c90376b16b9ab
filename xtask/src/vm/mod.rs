//! `cargo xtask vm-test`: the agent's end-to-end HTTP/1 test on real Debian kernels.
//!
//! Fetches each kernel's image from the Debian archive (verified, cached under
//! `target/vm/kernels/`), builds the agent and the static test driver (`test/vm-driver`),
//! packs them with busybox into an initramfs whose `init` runs `mop-vm run` once per capture
//! path, boots every kernel under qemu, reads the `mop-vm:` result lines and the
//! `init: success`/`init: failure` verdict from the serial console, and prints a
//! kernel x path matrix. Fails when a cell fails or a guest gives no verdict; a path the
//! agent does not implement yet is `missing`, one the kernel cannot run is `n/a`.

mod cost;
mod initramfs;
mod kernels;
mod qemu;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::{cmd, manifests::workspace_root};

/// The host target the static driver is built for (the guests are x86-64).
const DRIVER_TARGET: &str = "x86_64-unknown-linux-gnu";

/// A kernel series on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum KernelChoice {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "7.x")]
    V7,
    /// Every series.
    All,
}

/// A capture path on the command line (`ebpf.capture_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PathChoice {
    /// Whatever the agent picks; the matrix shows which.
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
    /// Every path the agent knows (tracepoint, kprobe, fentry).
    All,
    /// No agent at all: the same load, the baseline of the CPU figures (`--requests 2000`).
    None,
}

/// The capture paths the agent knows (its `ebpf.capture_path` values other than `auto`).
const KNOWN_PATHS: &[&str] = &["tracepoint", "kprobe", "fentry"];

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line flags"
)]
pub(crate) struct Options {
    /// Kernel series to boot (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub(crate) kernel: Vec<KernelChoice>,
    /// Capture paths to test in each kernel (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub(crate) path: Vec<PathChoice>,
    /// Debian archive to download kernels from (default: the `.../debian` source apt uses).
    #[arg(long, env = "MOP_VM_DEBIAN_MIRROR")]
    pub(crate) mirror: Option<String>,
    /// Debian security archive (default: the `.../debian-security` source apt uses, else the
    /// archive's URL with `-security` appended).
    #[arg(long, env = "MOP_VM_DEBIAN_SECURITY_MIRROR")]
    pub(crate) security_mirror: Option<String>,
    /// Use only kernels already in the cache; no network.
    #[arg(long)]
    pub(crate) offline: bool,
    /// Use the already built `target/release/mop-agent` and driver.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Requests the client sends in each run (each must give one server and one client span).
    #[arg(long, default_value_t = initramfs::DEFAULT_REQUESTS)]
    pub(crate) requests: usize,
    /// Seconds one guest may run before it counts as hung (a guest takes 10-15 s here).
    #[arg(long, default_value_t = 180)]
    pub(crate) timeout: u64,
    /// Server and client write through a `dup` of their socket and read through the original
    /// (as Rust programs using `TcpStream::try_clone` do).
    #[arg(long)]
    pub(crate) dup_fds: bool,
    /// Show the agent's log for passing runs too.
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Virtual CPUs of each guest.
    #[arg(long, default_value_t = 2)]
    pub(crate) cpus: u32,
    /// Extra kernel command-line arguments (e.g. `preempt=full`).
    #[arg(long, default_value = "")]
    pub(crate) append: String,
    /// Run guests under KVM instead of emulating the CPU (needs a working /dev/kvm).
    #[arg(long)]
    pub(crate) kvm: bool,
    /// Count `missing` paths (not built into the agent yet) as failures.
    #[arg(long)]
    pub(crate) strict: bool,
}

/// The `vm` suite of `cargo xtask test` (CI): the whole matrix, every kernel series on every
/// path and `auto`, with the defaults of `cargo xtask vm-test`.
pub(crate) fn suite() -> anyhow::Result<()> {
    run(&Options {
        kernel: vec![KernelChoice::All],
        path: vec![PathChoice::All, PathChoice::Auto],
        mirror: std::env::var("MOP_VM_DEBIAN_MIRROR").ok(),
        security_mirror: std::env::var("MOP_VM_DEBIAN_SECURITY_MIRROR").ok(),
        offline: false,
        no_build: false,
        requests: initramfs::DEFAULT_REQUESTS,
        timeout: 180,
        dup_fds: false,
        verbose: false,
        cpus: 2,
        append: String::new(),
        kvm: false,
        strict: true,
    })
}

/// The result of one kernel x path cell.
#[derive(Clone, Debug, PartialEq)]
struct Cell {
    result: String,
    /// The path the agent reported attaching, when it differs (for `auto`).
    chosen: Option<String>,
    expected: String,
    server_spans: String,
    client_spans: String,
    seconds: String,
    /// CPU microseconds per request of the server and of the agent (`?` when not measured).
    server_cpu_us: Option<f64>,
    agent_cpu_us: Option<f64>,
    /// Records the agent counted as lost in the kernel (`agent_lost=`), when it said.
    lost: Option<u64>,
    detail: String,
    /// The agent's stderr the driver relayed for a non-pass.
    agent_log: Vec<String>,
}

impl Cell {
    /// Parses `mop-vm: path=P [chosen=C] kernel=K expected=N server_spans=N client_spans=N
    /// seconds=S result=R detail=...`; returns the path and the cell.
    fn parse(line: &str) -> Option<(String, Self)> {
        let rest = line.strip_prefix("mop-vm: ")?;
        let (fields, detail) = rest.split_once(" detail=").unwrap_or((rest, "-"));
        let get = |key: &str| {
            fields
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        let cell = Self {
            result: get("result")?,
            chosen: get("chosen"),
            expected: get("expected").unwrap_or_default(),
            server_spans: get("server_spans").unwrap_or_default(),
            client_spans: get("client_spans").unwrap_or_default(),
            seconds: get("seconds").unwrap_or_default(),
            server_cpu_us: get("server_cpu_us").and_then(|v| v.parse().ok()),
            agent_cpu_us: get("agent_cpu_us").and_then(|v| v.parse().ok()),
            lost: get("agent_lost").and_then(|v| v.parse().ok()),
            detail: detail.to_owned(),
            agent_log: Vec::new(),
        };
        Some((get("path")?, cell))
    }

    /// A failed run in which the agent counted kernel records as lost: the spans it could not
    /// make are accounted for in `mop_events_lost_total` (on kernels whose syscall tracepoints
    /// run preemptibly, a program that another task re-enters on the same CPU is skipped and
    /// counted as a recursion miss). Shown as `lost N`, not counted as a failure: a silent
    /// loss (nothing counted) still fails.
    fn counted_loss(&self) -> bool {
        self.result == "fail" && self.lost.is_some_and(|n| n > 0)
    }

    fn summary(&self) -> String {
        let chosen = self
            .chosen
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let result = if self.counted_loss() {
            format!("lost {}", self.lost.unwrap_or_default())
        } else {
            self.result.clone()
        };
        match self.result.as_str() {
            "pass" | "fail" => format!(
                "{result}{chosen} {}+{}/{} {}s",
                self.server_spans, self.client_spans, self.expected, self.seconds
            ),
            other => other.to_owned(),
        }
    }

    fn is_failure(&self, strict: bool) -> bool {
        match self.result.as_str() {
            "pass" | "n/a" => false,
            "missing" => strict,
            "fail" => !self.counted_loss(),
            _ => true,
        }
    }
}

/// One row of the matrix.
struct Row {
    kernel: kernels::Kernel,
    cells: Vec<(String, Cell)>,
    end: qemu::End,
    elapsed: Duration,
}

/// Runs the VM tests and prints the matrix.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let series = selected_series(&opts.kernel);
    let paths = selected_paths(&opts.path);
    for tool in [
        "qemu-system-x86_64",
        "curl",
        "gpgv",
        "xz",
        "dpkg-deb",
        "tar",
        "sha256sum",
        "strip",
        "ldd",
    ] {
        if !cmd::have(tool) {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let root = workspace_root();
    let work = root.join("target/vm");
    let cache = work.join("kernels");
    fs::create_dir_all(work.join("logs"))?;

    let mirrors = if opts.offline {
        kernels::Mirrors {
            main: String::new(),
            security: String::new(),
        }
    } else {
        kernels::Mirrors::resolve(opts.mirror.as_deref(), opts.security_mirror.as_deref())?
    };
    let mut kernels = Vec::new();
    for s in series {
        let kernel = kernels::fetch(s, &mirrors, &cache, opts.offline)
            .with_context(|| format!("fetching kernel {}", s.name))?;
        eprintln!(
            "vm-test: kernel {}: {} {} ({})",
            s.name, kernel.package, kernel.version, kernel.release
        );
        kernels.push(kernel);
    }
    let fetched = started.elapsed();

    let (agent, driver) = build(&root, opts.no_build)?;
    let initrd = work.join("initramfs.cpio");
    // The agent is ready about a second after it starts in an emulated guest; a third of the
    // guest's time leaves room for slow verifiers and keeps a hung path from eating the rest.
    let ready_timeout = (opts.timeout / 3).max(20);
    initramfs::build(
        &initramfs::Contents {
            agent: &agent,
            driver: &driver,
            paths: &paths,
            requests: opts.requests,
            ready_timeout,
            dup_fds: opts.dup_fds,
            verbose: opts.verbose,
        },
        &work.join("bin"),
        &initrd,
    )?;
    let built = started.elapsed();

    let mut rows = Vec::new();
    for kernel in kernels {
        eprintln!(
            "vm-test: booting {} ({}) for {}",
            kernel.series.name,
            kernel.release,
            paths.join(", ")
        );
        let log = work
            .join("logs")
            .join(format!("{}.log", kernel.series.name));
        let boot = qemu::boot(
            &kernel.vmlinuz,
            &initrd,
            &log,
            Duration::from_secs(opts.timeout),
            opts.kvm,
            opts.cpus,
            &opts.append,
        )?;
        rows.push(Row {
            cells: cells(&boot.lines),
            kernel,
            end: boot.end,
            elapsed: boot.elapsed,
        });
    }

    let (report, failed) = matrix(&rows, &paths, opts.strict);
    println!("{report}");
    println!(
        "vm-test: {:.0} s in all: kernels {:.0} s, build {:.0} s, guests {:.0} s",
        started.elapsed().as_secs_f64(),
        fetched.as_secs_f64(),
        built.saturating_sub(fetched).as_secs_f64(),
        rows.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>(),
    );
    if failed > 0 {
        bail!("{failed} of {} cells failed", rows.len() * paths.len());
    }
    Ok(())
}

fn selected_series(choices: &[KernelChoice]) -> Vec<kernels::KernelSeries> {
    kernels::SERIES
        .iter()
        .copied()
        .filter(|s| {
            choices.iter().any(|c| match c {
                KernelChoice::All => true,
                KernelChoice::V5_10 => s.name == "5.10",
                KernelChoice::V6_1 => s.name == "6.1",
                KernelChoice::V6_12 => s.name == "6.12",
                KernelChoice::V7 => s.name == "7.x",
            })
        })
        .collect()
}

fn selected_paths(choices: &[PathChoice]) -> Vec<&'static str> {
    let mut paths = Vec::new();
    let mut add = |p: &'static str| {
        if !paths.contains(&p) {
            paths.push(p);
        }
    };
    for choice in choices {
        match choice {
            PathChoice::All => KNOWN_PATHS.iter().for_each(|p| add(p)),
            PathChoice::Tracepoint => add("tracepoint"),
            PathChoice::Kprobe => add("kprobe"),
            PathChoice::Fentry => add("fentry"),
            PathChoice::Auto => add("auto"),
            PathChoice::None => add("none"),
        }
    }
    paths
}

/// Builds the agent (release) and the driver (release, statically linked); returns their
/// paths.
fn build(root: &Path, no_build: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    let agent = root.join("target/release/mop-agent");
    let driver = root.join(format!("target/{DRIVER_TARGET}/release/mop-vm"));
    if !no_build {
        eprintln!("vm-test: building the agent and the test driver");
        cmd::run(Command::new("cargo").current_dir(root).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "mop-agent",
        ]))?;
        // Static, so the guest needs no libraries for it; its own target directory keeps
        // these flags from invalidating the host build.
        cmd::run(
            Command::new("cargo")
                .current_dir(root)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .args(["build", "--release", "--locked", "-p", "vm-driver"])
                .args(["--target", DRIVER_TARGET]),
        )?;
    }
    for binary in [&agent, &driver] {
        if !binary.is_file() {
            bail!("{} does not exist: build it first", binary.display());
        }
    }
    Ok((agent, driver))
}

/// The cells reported on a console, with the agent lines relayed before each.
fn cells(lines: &[String]) -> Vec<(String, Cell)> {
    let mut out = Vec::new();
    let mut agent_log = Vec::new();
    for line in lines {
        if let Some(agent_line) = line.strip_prefix("mop-vm: agent: ") {
            agent_log.push(agent_line.to_owned());
        } else if let Some((path, mut cell)) = Cell::parse(line) {
            cell.agent_log = std::mem::take(&mut agent_log);
            out.push((path, cell));
        }
    }
    out
}

/// The matrix and the details of every cell that did not pass; returns the text and the
/// number of failed cells.
fn matrix(rows: &[Row], paths: &[&str], strict: bool) -> (String, usize) {
    let mut failed = 0;
    let mut table = vec![
        std::iter::once("kernel".to_owned())
            .chain(std::iter::once("debian package".to_owned()))
            .chain(paths.iter().map(|p| (*p).to_owned()))
            .chain(std::iter::once("guest".to_owned()))
            .collect::<Vec<_>>(),
    ];
    let mut details = String::new();
    for row in rows {
        let mut line = vec![
            format!("{} ({})", row.kernel.series.name, row.kernel.release),
            format!("{} {}", row.kernel.package, row.kernel.version),
        ];
        for path in paths {
            let cell = row.cells.iter().find(|(p, _)| p == path).map(|(_, c)| c);
            let Some(c) = cell else {
                failed += 1;
                let why = match &row.end {
                    qemu::End::Crashed(why) => why.clone(),
                    _ => "the guest printed no result for this path".to_owned(),
                };
                let _ = writeln!(
                    details,
                    "{} x {path}: no result: {why}",
                    row.kernel.series.name
                );
                line.push("no result".to_owned());
                continue;
            };
            if c.is_failure(strict) {
                failed += 1;
            }
            if c.result != "pass" {
                let _ = writeln!(
                    details,
                    "{} x {path}: {}: {}",
                    row.kernel.series.name, c.result, c.detail
                );
                for l in &c.agent_log {
                    let _ = writeln!(details, "    agent: {l}");
                }
            }
            line.push(c.summary());
        }
        let end = match &row.end {
            qemu::End::Success => "success",
            qemu::End::Failure => "failure",
            qemu::End::Crashed(_) => "crashed",
        };
        line.push(format!("{end} {:.0} s", row.elapsed.as_secs_f64()));
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &table {
        let cols: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cols.join("  ").trim_end());
    }
    if !details.is_empty() {
        out.push('\n');
        out.push_str(&details);
    }
    out.push_str(
        "\ncells: result [(path auto chose)] server+client spans/expected, seconds of the run; \
         `lost N`: spans missing but the agent counted N kernel records lost (not a failure)",
    );
    if let Some(table) = cost::table(rows, paths) {
        out.push_str("\n\n");
        out.push_str(&table);
    }
    (out, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let line = "mop-vm: path=auto chosen=tracepoint kernel=6.1.0-50-amd64 expected=12 \
                    server_spans=12 client_spans=11 seconds=4.2 result=fail detail=client GET /x 200: 0 spans, want 1";
        let (path, cell) = Cell::parse(line).unwrap();
        assert_eq!(path, "auto");
        assert_eq!(cell.chosen.as_deref(), Some("tracepoint"));
        assert_eq!(cell.summary(), "fail (tracepoint) 12+11/12 4.2s");
        assert_eq!(cell.detail, "client GET /x 200: 0 spans, want 1");
        assert!(cell.is_failure(false));
        assert!(Cell::parse("mop-vm: agent: boom").is_none());
    }

    #[test]
    fn a_failure_the_agent_counted_as_kernel_loss_is_shown_apart() {
        let counted = "mop-vm: path=tracepoint kernel=7.2.13 expected=12 server_spans=12 \
                       client_spans=11 agent_events=53 agent_lost=2 seconds=3.8 result=fail \
                       detail=client GET /x 200: 0 spans, want 1";
        let (_, cell) = Cell::parse(counted).unwrap();
        assert_eq!(cell.lost, Some(2));
        assert_eq!(cell.summary(), "lost 2 12+11/12 3.8s");
        assert!(!cell.is_failure(false));
        let silent = counted.replace("agent_lost=2", "agent_lost=0");
        let (_, cell) = Cell::parse(&silent).unwrap();
        assert!(cell.is_failure(false), "a loss nothing counted fails");
        let unknown = counted.replace(" agent_events=53 agent_lost=2", "");
        assert!(Cell::parse(&unknown).unwrap().1.is_failure(false));
    }

    #[test]
    fn relays_agent_lines_to_their_cell() {
        let lines: Vec<String> = [
            "[    1.0] random kernel line",
            "mop-vm: agent: mop-agent: capture path kprobe is unavailable: not implemented in this build",
            "mop-vm: path=kprobe kernel=k expected=12 server_spans=0 client_spans=0 seconds=1.0 result=missing detail=not implemented in this build",
            "mop-vm: path=tracepoint kernel=k expected=12 server_spans=12 client_spans=12 seconds=3.0 result=pass detail=-",
        ]
        .map(str::to_owned)
        .to_vec();
        let cells = cells(&lines);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].1.agent_log.len(), 1);
        assert!(!cells[0].1.is_failure(false) && cells[0].1.is_failure(true));
        assert!(cells[1].1.agent_log.is_empty());
        assert_eq!(cells[1].1.summary(), "pass 12+12/12 3.0s");
    }

    #[test]
    fn all_means_every_known_path_once() {
        assert_eq!(
            selected_paths(&[PathChoice::Tracepoint, PathChoice::All]),
            ["tracepoint", "kprobe", "fentry"]
        );
        assert_eq!(selected_series(&[KernelChoice::All]).len(), 4);
        assert_eq!(selected_series(&[KernelChoice::V7])[0].suite, "sid");
    }
}
