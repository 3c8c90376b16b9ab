//! Small helpers to run external commands with clear errors.

use std::{
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Runs `cmd`, inheriting stdio, and fails naming the command when it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` like [`run`], but kills it and everything it started if it has not finished
/// within `timeout` (a hung test must not hang CI).
pub(crate) fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<()> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            if !status.success() {
                bail!("{cmd:?} failed: {status}");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            kill_descendants(child.id());
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs every descendant of `pid` (found through `/proc/*/stat`), deepest first.
fn kill_descendants(pid: u32) {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let parent = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, parent))
        })
        .collect();
    let mut order = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, parent)| *parent == p) {
            order.push(child);
            frontier.push(child);
        }
    }
    for child in order.into_iter().rev() {
        let _ = Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `cmd` and returns its standard output, failing when it exits non-zero.
pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with stderr inherited (progress and diagnostics stay visible) and returns its
/// standard output, failing when it exits non-zero.
pub(crate) fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when `program` is found on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the current process runs as root.
pub(crate) fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// A command that runs `program` as root: directly when we are root, else through `sudo`.
pub(crate) fn as_root(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-E", "--preserve-env=PATH"]).arg(program);
        cmd
    }
}

/// Like [`as_root`], with `env` set for `program` even when sudo's policy would drop it (sudo
/// runs `env NAME=VALUE... program`).
pub(crate) fn as_root_with_env(program: impl AsRef<OsStr>, env: &[(&str, &OsStr)]) -> Command {
    if is_root() {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["--preserve-env=PATH", "env"]);
        for (key, value) in env {
            let mut assignment = OsString::from(key);
            assignment.push("=");
            assignment.push(value);
            cmd.arg(assignment);
        }
        cmd.arg(program);
        cmd
    }
}

/// The cargo that runs us (`CARGO`, set by `cargo run`), else `cargo` from `PATH`.
pub(crate) fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Cargo's target directory for the workspace at `root` (honours `CARGO_TARGET_DIR` and
/// `build.target-dir`).
pub(crate) fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let out = output(Command::new(cargo()).current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&out).context("parsing `cargo metadata`")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` has no target_directory")
}
