//! Booting one kernel with the initramfs under qemu and reading its serial console.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// `init: success`.
    Success,
    /// `init: failure`.
    Failure,
    /// No verdict: a panic, a hang past the timeout, or qemu failing.
    Crashed(String),
}

/// What one boot printed.
pub(crate) struct Boot {
    /// The console lines (without carriage returns).
    pub(crate) lines: Vec<String>,
    pub(crate) end: End,
    pub(crate) elapsed: Duration,
}

/// Boots `vmlinuz` with `initrd`, copying the console to `log` and echoing the test's lines
/// to stderr as they come; gives up after `timeout`. `kvm` uses hardware virtualisation
/// (where `/dev/kvm` works: it opens but fails under nested virtualisation on the project's
/// machines), else qemu emulates the CPU (TCG).
pub(crate) fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    kvm: bool,
    cpus: u32,
    append: &str,
) -> anyhow::Result<Boot> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-m", "1G", "-smp", &cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio"])
        .args(if kvm {
            ["-accel", "kvm", "-cpu", "host"]
        } else {
            ["-accel", "tcg,thread=single", "-cpu", "max"]
        })
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {append}").trim_end())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .context("starting qemu-system-x86_64 (install qemu-system-x86: cargo xtask setup)")?;
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;

    let rx = console_lines(&mut child);

    let deadline = started + timeout;
    let mut lines = Vec::new();
    let mut end = None;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let _ = writeln!(log_file, "{line}");
                if line.starts_with("mop-vm:") || line.starts_with("init:") {
                    eprintln!("    {line}");
                }
                match line.trim() {
                    "init: success" => end = Some(End::Success),
                    "init: failure" => end = Some(End::Failure),
                    _ => {}
                }
                lines.push(line);
            }
            // Both streams closed: qemu exited (poweroff, panic with -no-reboot, or error).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if end.is_none() {
                    end = Some(End::Crashed(format!(
                        "no verdict within {} s (see {})",
                        timeout.as_secs(),
                        log.display()
                    )));
                }
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    let end = end.unwrap_or_else(|| {
        let last = lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        End::Crashed(format!(
            "qemu exited ({status}) without a verdict; last line: {last} (see {})",
            log.display()
        ))
    });
    Ok(Boot {
        lines,
        end,
        elapsed: started.elapsed(),
    })
}

/// The lines qemu prints (the guest's serial console, then qemu's own errors), read by one
/// thread per stream.
fn console_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as _),
        child.stderr.take().map(|s| Box::new(s) as _),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().replace('\r', "");
                if tx.send(line).is_err() {
                    return;
                }
                buf.clear();
            }
        });
    }
    rx
}
