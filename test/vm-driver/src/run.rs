//! `mop-vm run`: the end-to-end test of one capture path on the running kernel.
//!
//! Starts the server, then the agent (selecting the server by port and the client by its
//! executable path, JSON printer on stdout), waits for the agent's `ready` line, runs the
//! client, stops the agent with SIGTERM and compares the spans it printed with the plan.
//! Prints one `mop-vm:` result line; on anything but a pass also the agent's stderr.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, Sender},
    time::{Duration, Instant},
};

use crate::{
    cpu,
    spans::{self, Expected},
};

/// Options of `mop-vm run`.
pub(crate) struct Options {
    /// The agent binary.
    pub(crate) agent: PathBuf,
    /// The capture path to force (`ebpf.capture_path`).
    pub(crate) path: String,
    /// The server's port.
    pub(crate) port: u16,
    /// Requests the client sends.
    pub(crate) requests: usize,
    /// How long the agent may take to log `ready` (the verifier is slow under emulation).
    pub(crate) ready_timeout: Duration,
    /// Server and client write through a `dup` of the socket (see `http::writer_for`).
    pub(crate) dup_fds: bool,
    /// Show the agent's log on a pass too.
    pub(crate) verbose: bool,
}

/// The outcome of one run; the exit code of `mop-vm run`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass = 0,
    Fail = 1,
    /// The agent does not implement the path yet.
    Missing = 2,
    /// The agent implements the path but this kernel cannot run it.
    NotAvailable = 3,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Missing => "missing",
            Self::NotAvailable => "n/a",
        }
    }
}

/// The `--path` that runs the load with no agent: the baseline of the CPU figures.
pub(crate) const NO_AGENT: &str = "none";
/// Name of the client's copy of this binary: the agent selects it by this path.
const CLIENT_EXE: &str = "mop-vm-client";
/// How long to wait for the expected spans after the client is done.
const SPAN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the agent may take to flush and exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Agent stderr lines shown on a failure (the last ones).
const STDERR_TAIL: usize = 60;
/// Span lines shown on a failure (the first ones).
const SPANS_SHOWN: usize = 80;

/// A line from one of the agent's output streams.
enum Line {
    Out(String),
    Err(String),
    /// One stream reached its end.
    Eof,
}

/// What the test observed; turned into the result line.
struct Report {
    verdict: Verdict,
    chosen: Option<String>,
    server_spans: usize,
    client_spans: usize,
    detail: String,
    stderr: Vec<String>,
    /// The span lines, shown on a failure.
    spans: Vec<String>,
    /// CPU per request (microseconds) of the server while the client ran, and of the agent
    /// from the client's start until the spans arrived (`?` when not measured).
    server_cpu_us: String,
    agent_cpu_us: String,
}

impl Report {
    fn new() -> Self {
        Self {
            verdict: Verdict::Fail,
            chosen: None,
            server_spans: 0,
            client_spans: 0,
            detail: String::new(),
            stderr: Vec::new(),
            spans: Vec::new(),
            server_cpu_us: "?".to_owned(),
            agent_cpu_us: "?".to_owned(),
        }
    }

    fn finish(mut self, verdict: Verdict, detail: impl Into<String>) -> Self {
        self.verdict = verdict;
        self.detail = detail.into();
        self
    }
}

/// Kills a child process when dropped (the server, or an agent that did not stop).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the test and prints its result line; returns the verdict.
pub(crate) fn run(opts: &Options) -> Verdict {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    let started = Instant::now();
    let report = test(opts).unwrap_or_else(|(report, detail)| report.finish(Verdict::Fail, detail));
    let chosen = report
        .chosen
        .as_deref()
        .filter(|c| *c != opts.path)
        .map(|c| format!(" chosen={c}"))
        .unwrap_or_default();
    if report.verdict != Verdict::Pass || opts.verbose {
        for line in &report.stderr[report.stderr.len().saturating_sub(STDERR_TAIL)..] {
            println!("mop-vm: agent: {line}");
        }
    }
    if report.verdict == Verdict::Fail {
        for line in report.spans.iter().take(SPANS_SHOWN) {
            println!("mop-vm: span: {}", spans::brief(line));
        }
    }
    // The agent's own totals from its last log line (`Stopped. events=N lost=N spans=N`).
    let stopped = report
        .stderr
        .iter()
        .rev()
        .find(|l| l.contains("Stopped."))
        .map(|l| {
            let get = |k| field(l, k).unwrap_or("?");
            format!(" agent_events={} agent_lost={}", get("events"), get("lost"))
        })
        .unwrap_or_default();
    println!(
        "mop-vm: path={}{chosen} kernel={kernel} expected={} server_spans={} client_spans={}\
         {stopped} server_cpu_us={} agent_cpu_us={} seconds={:.1} result={} detail={}",
        opts.path,
        opts.requests,
        report.server_spans,
        report.client_spans,
        report.server_cpu_us,
        report.agent_cpu_us,
        started.elapsed().as_secs_f64(),
        report.verdict.as_str(),
        if report.detail.is_empty() {
            "-"
        } else {
            &report.detail
        },
    );
    report.verdict
}

type Failed = (Report, String);

/// What the agent did next.
enum Next {
    /// A span line (kept in [`Agent::stdout`]).
    Out,
    /// A log line.
    Err(String),
    /// Both output streams closed: the agent exited.
    Closed,
    Timeout,
}

/// The running agent and what it printed so far.
struct Agent {
    child: Reaper,
    lines: Receiver<Line>,
    open_streams: usize,
    stdout: Vec<String>,
}

impl Agent {
    fn start(binary: &Path, config: &Path) -> Result<Self, String> {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take(), &tx, Line::Out);
        forward(child.stderr.take(), &tx, Line::Err);
        Ok(Self {
            child: Reaper(child),
            lines,
            open_streams: 2,
            stdout: Vec::new(),
        })
    }

    fn next(&mut self, deadline: Instant) -> Next {
        loop {
            if self.open_streams == 0 {
                return Next::Closed;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok(Line::Out(line)) => {
                    self.stdout.push(line);
                    return Next::Out;
                }
                Ok(Line::Err(line)) => return Next::Err(line),
                Ok(Line::Eof) => self.open_streams -= 1,
                Err(_) => return Next::Timeout,
            }
        }
    }
}

#[expect(
    clippy::result_large_err,
    reason = "called once per run; the report travels with the error"
)]
fn test(opts: &Options) -> Result<Report, Failed> {
    let mut report = Report::new();
    let fail = |e: String| (Report::new(), e);
    let dir = std::env::temp_dir().join(format!("mop-vm-{}", std::process::id()));
    let client_exe = prepare_dir(&dir).map_err(fail)?;
    let _cleanup = RemoveDir(dir.clone());

    let me = std::env::current_exe().map_err(|e| fail(e.to_string()))?;
    let server = start_server(&me, opts.port, opts.dup_fds).map_err(fail)?;
    if opts.path == NO_AGENT {
        // The baseline of the CPU figures: the same load with no agent and no hooks.
        let before = cpu::on_cpu_ns(server.0.id());
        run_client(&client_exe, opts).map_err(|e| (Report::new(), e))?;
        report.server_cpu_us =
            cpu::per_request_us(before, cpu::on_cpu_ns(server.0.id()), opts.requests);
        return Ok(report.finish(Verdict::Pass, ""));
    }
    let config = dir.join("agent.yaml");
    std::fs::write(&config, agent_config(opts, &client_exe))
        .map_err(|e| fail(format!("writing {}: {e}", config.display())))?;
    let mut agent = Agent::start(&opts.agent, &config).map_err(fail)?;

    // Ready, or an early exit that says why.
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        match agent.next(deadline) {
            Next::Err(line) => {
                let ready = is_ready_line(&line);
                note_stderr(&mut report, &line);
                if ready {
                    break;
                }
            }
            Next::Out => {}
            Next::Closed => {
                let status = agent.child.0.wait().ok();
                return Ok(classify_early_exit(report, status));
            }
            Next::Timeout => {
                let secs = opts.ready_timeout.as_secs();
                return Err((report, format!("no ready line within {secs} s")));
            }
        }
    }

    let agent_pid = agent.child.0.id();
    let (server_before, agent_before) = (cpu::on_cpu_ns(server.0.id()), cpu::on_cpu_ns(agent_pid));
    let client_pid = match run_client(&client_exe, opts) {
        Ok(pid) => pid,
        Err(e) => return Err((report, e)),
    };
    report.server_cpu_us =
        cpu::per_request_us(server_before, cpu::on_cpu_ns(server.0.id()), opts.requests);

    // Wait for the spans we expect (extra ones show up in the counts after the flush).
    let expected = Expected::new(opts.requests, opts.port, server.0.id(), client_pid);
    let deadline = Instant::now() + SPAN_TIMEOUT;
    while !spans::enough(&agent.stdout, &expected) {
        match agent.next(deadline) {
            Next::Out => {}
            Next::Err(line) => note_stderr(&mut report, &line),
            Next::Closed | Next::Timeout => break,
        }
    }
    report.agent_cpu_us =
        cpu::per_request_us(agent_before, cpu::on_cpu_ns(agent_pid), opts.requests);
    drop(server);

    // SIGTERM: the agent flushes and exits 0.
    let pid = agent.child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    loop {
        match agent.next(deadline) {
            Next::Out => {}
            Next::Err(line) => note_stderr(&mut report, &line),
            Next::Closed => break,
            Next::Timeout => {
                let secs = SHUTDOWN_TIMEOUT.as_secs();
                return Err((
                    report,
                    format!("agent still running {secs} s after SIGTERM"),
                ));
            }
        }
    }
    let status = match agent.child.0.wait() {
        Ok(status) => status,
        Err(e) => return Err((report, format!("waiting for the agent: {e}"))),
    };

    let outcome = spans::check(&agent.stdout, &expected);
    report.spans = std::mem::take(&mut agent.stdout);
    report.server_spans = outcome.server_spans;
    report.client_spans = outcome.client_spans;
    if !status.success() {
        return Err((report, format!("agent exited with {status} after SIGTERM")));
    }
    if let Some(problem) = outcome.problem {
        return Err((report, problem));
    }
    Ok(report.finish(Verdict::Pass, ""))
}

/// Runs the client to completion; returns its pid (the client spans must carry it).
fn run_client(client_exe: &Path, opts: &Options) -> Result<u32, String> {
    let client = Command::new(client_exe)
        .args(["client", &opts.port.to_string(), &opts.requests.to_string()])
        .args(opts.dup_fds.then_some("--dup"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the client: {e}"))?;
    let pid = client.id();
    let out = client
        .wait_with_output()
        .map_err(|e| format!("waiting for the client: {e}"))?;
    if out.status.success() {
        Ok(pid)
    } else {
        Err(format!(
            "client failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the scratch directory when the test ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates the scratch directory with a copy of this binary that the agent selects as the
/// client by its path; returns that path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let exe = dir.join(CLIENT_EXE);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    std::fs::copy(&me, &exe).map_err(|e| format!("copying {}: {e}", me.display()))?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(exe)
}

/// Starts `mop-vm serve PORT` and waits until it listens.
fn start_server(me: &Path, port: u16, dup: bool) -> Result<Reaper, String> {
    let mut child = Command::new(me)
        .args(["serve", &port.to_string()])
        .args(dup.then_some("--dup"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let reaper = Reaper(child);
    let mut line = String::new();
    match out.read_line(&mut line) {
        Ok(n) if n > 0 && line.starts_with("listening") => Ok(reaper),
        _ => Err(format!("the server did not start on port {port}")),
    }
}

/// The agent's configuration: the server by port, the client by path, spans as JSON.
fn agent_config(opts: &Options, client_exe: &Path) -> String {
    format!(
        "discovery:\n  instrument:\n    - open_ports: {port}\n    - exe_path: \"{client}\"\n\
         trace_printer: json\nebpf:\n  capture_path: {path}\n",
        port = opts.port,
        client = client_exe.display(),
        path = opts.path,
    )
}

/// Sends every line of `stream` to `tx`, then [`Line::Eof`].
fn forward(
    stream: Option<impl Read + Send + 'static>,
    tx: &Sender<Line>,
    wrap: fn(String) -> Line,
) {
    let tx = tx.clone();
    std::thread::spawn(move || {
        if let Some(stream) = stream {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Line::Eof);
    });
}

/// Keeps an agent log line (without colour codes) and notes the path the agent attached.
fn note_stderr(report: &mut Report, line: &str) {
    let line = strip_ansi(line);
    if line.contains("Capture attached") {
        report.chosen = field(&line, "path").map(str::to_owned);
    }
    report.stderr.push(line);
}

/// The value of `name=value` (or `name="value"`) in a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// True for the agent's INFO line announcing that it is ready (the word `ready`).
fn is_ready_line(line: &str) -> bool {
    line.contains("INFO")
        && line
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case("ready"))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The agent exited before `ready`: a path not built yet is `missing`, a path this kernel
/// cannot run is `n/a`, anything else fails.
fn classify_early_exit(report: Report, status: Option<ExitStatus>) -> Report {
    let reason = report
        .stderr
        .iter()
        .rev()
        .find_map(|l| l.split_once(" is unavailable: ").map(|(_, r)| r.to_owned()));
    let status = status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
    match reason {
        Some(r) if r.contains("not implemented") => report.finish(Verdict::Missing, r),
        Some(r) => report.finish(Verdict::NotAvailable, r),
        None => {
            let last = report.stderr.last().cloned().unwrap_or_default();
            report.finish(
                Verdict::Fail,
                format!("agent exited before ready ({status}): {last}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ready_line() {
        assert!(is_ready_line(
            "2026-01-01T00:00:00Z  INFO Agent ready: probes attached and first discovery pass done. processes=1"
        ));
        assert!(!is_ready_line(
            "2026-01-01T00:00:00Z  INFO already attached"
        ));
        assert!(!is_ready_line("2026-01-01T00:00:00Z DEBUG ready"));
    }

    #[test]
    fn strips_colours_and_reads_fields() {
        let line =
            strip_ansi("\u{1b}[32m INFO\u{1b}[0m Capture attached. path=\"tracepoint\" programs=3");
        assert_eq!(
            line,
            " INFO Capture attached. path=\"tracepoint\" programs=3"
        );
        assert_eq!(field(&line, "path"), Some("tracepoint"));
        assert_eq!(field(&line, "programs"), Some("3"));
    }

    #[test]
    fn classifies_early_exits() {
        let mut r = Report::new();
        r.stderr.push(
            "mop-agent: capture path kprobe is unavailable: not implemented in this build".into(),
        );
        assert!(classify_early_exit(r, None).verdict == Verdict::Missing);
        let mut r = Report::new();
        r.stderr
            .push("mop-agent: capture path fentry is unavailable: no BTF trampolines".into());
        let r = classify_early_exit(r, None);
        assert!(r.verdict == Verdict::NotAvailable);
        assert_eq!(r.detail, "no BTF trampolines");
        let mut r = Report::new();
        r.stderr
            .push("mop-agent: loading the eBPF object: boom".into());
        assert!(classify_early_exit(r, None).verdict == Verdict::Fail);
    }
}
