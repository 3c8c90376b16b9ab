//! Starting and stopping `mop-agent` the way a user does: a YAML file passed with `--config`,
//! spans on stdout (`trace_printer: json`), logs on stderr.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    span::{self, Span},
    util::{self, TempDir},
};

/// Bound on start-up: load, attach, first discovery pass, `ready` log line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on exit after SIGTERM/SIGINT: the default `shutdown_timeout` (10 s) plus margin.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on runs that are expected to end by themselves (bad config, missing privileges).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The agent binary: `MOP_AGENT_BIN`, else `target/release/mop-agent` of this workspace.
pub fn agent_binary() -> PathBuf {
    let path = std::env::var_os("MOP_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/mop-agent"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "agent binary {} not found: run `cargo build --release -p mop-agent` or set MOP_AGENT_BIN \
         (`cargo xtask test` does both)",
        path.display()
    );
    path
}

/// Lines read from one of the agent's pipes, shared with the reader thread.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn snapshot(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn text(&self) -> String {
        self.snapshot().join("\n")
    }
}

fn read_lines(pipe: impl Read + Send + 'static, into: Arc<Lines>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    into.0
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            }
        }
    })
}

/// The command that runs the agent: `wrapper...` (e.g. `setpriv ...`) then the binary, `args`,
/// with `env` on top of this process's environment minus every `OTEL_*` variable and
/// `RUST_LOG` (so the developer's shell cannot change a test), and `NO_COLOR=1`.
fn agent_command(wrapper: &[&str], args: &[OsString], env: &[(&str, &str)]) -> Command {
    let binary = agent_binary();
    let mut cmd = match wrapper.split_first() {
        None => Command::new(&binary),
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(&binary);
            cmd
        }
    };
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// True for the INFO log line that says the agent is ready: it contains `INFO` and the word
/// `ready` (any case, not part of a longer word such as `already`).
pub fn is_ready_line(line: &str) -> bool {
    let line = util::strip_ansi(line);
    if !line.contains("INFO") {
        return false;
    }
    let lower = line.to_ascii_lowercase();
    lower.match_indices("ready").any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + "ready".len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// A running agent. Dropping it without [`Agent::stop`] kills it (SIGKILL) and, when the
/// test is panicking, prints what it logged.
pub struct Agent {
    child: Option<Child>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    readers: Vec<JoinHandle<()>>,
    _dir: TempDir,
}

impl Agent {
    /// Writes `config_yaml` to a temporary file, starts the agent with `--config FILE` and
    /// `env`, and waits (up to [`READY_TIMEOUT`]) for its `ready` log line.
    pub fn start(config_yaml: &str, env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], config_yaml, env)
    }

    /// [`Agent::start`] with the agent run through `wrapper` (e.g. `setpriv
    /// --bounding-set=...`).
    pub fn start_wrapped(wrapper: &[&str], config_yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("agent");
        let config = dir.write("config.yaml", config_yaml);
        let args = [OsString::from("--config"), config.into_os_string()];
        let mut child = agent_command(wrapper, &args, env)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", agent_binary().display()));
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        let readers = vec![
            read_lines(
                child.stdout.take().expect("piped stdout"),
                Arc::clone(&stdout),
            ),
            read_lines(
                child.stderr.take().expect("piped stderr"),
                Arc::clone(&stderr),
            ),
        ];
        let mut agent = Self {
            child: Some(child),
            stdout,
            stderr,
            readers,
            _dir: dir,
        };
        agent.wait_ready(config_yaml);
        agent
    }

    fn wait_ready(&mut self, config_yaml: &str) {
        let started = Instant::now();
        let child = self.child.as_mut().expect("running");
        let mut exited = None;
        let ready = util::wait_until(READY_TIMEOUT, || {
            if self.stderr.snapshot().iter().any(|l| is_ready_line(l)) {
                return true;
            }
            exited = child.try_wait().ok().flatten();
            exited.is_some()
        });
        if let Some(status) = exited {
            // Let the readers collect the last lines before reporting.
            let _ = util::wait_until(Duration::from_secs(2), || {
                self.readers.iter().all(JoinHandle::is_finished)
            });
            panic!(
                "agent exited ({status}) after {:?} without logging `ready`\nconfig:\n{config_yaml}\nstderr:\n{}",
                started.elapsed(),
                self.stderr.text()
            );
        }
        assert!(
            ready,
            "agent logged no INFO line containing `ready` within {READY_TIMEOUT:?}\nconfig:\n{config_yaml}\nstderr:\n{}",
            self.stderr.text()
        );
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The valid spans printed so far.
    pub fn spans(&self) -> Vec<Span> {
        span::parse_lenient(&self.stdout.snapshot())
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// Waits (up to `timeout`) until `done` holds for the spans printed so far; returns whether
    /// it did. Tests call this before [`Agent::stop`] so that a slow printer is not mistaken
    /// for a missing span, then assert on the complete list that `stop` returns.
    pub fn wait_for_spans(&self, timeout: Duration, done: impl Fn(&[Span]) -> bool) -> bool {
        util::wait_until(timeout, || done(&self.spans()))
    }

    /// SIGTERM, then waits (up to [`STOP_TIMEOUT`]), asserts exit code 0 and returns every span
    /// printed (every stdout line must be one).
    pub fn stop(self) -> Vec<Span> {
        self.stop_with(libc::SIGTERM)
    }

    /// [`Agent::stop`] with another signal (SIGINT).
    pub fn stop_with(self, signal: libc::c_int) -> Vec<Span> {
        self.stop_and_log(signal).0
    }

    /// [`Agent::stop_with`], also returning everything the agent logged.
    pub fn stop_and_log(mut self, signal: libc::c_int) -> (Vec<Span>, String) {
        let mut child = self.child.take().expect("running");
        util::signal(child.id(), signal);
        let Some(status) = util::wait_child(&mut child, STOP_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "agent did not exit within {STOP_TIMEOUT:?} after signal {signal}\nstderr:\n{}",
                self.stderr.text()
            );
        };
        self.join_readers();
        assert_eq!(
            status.code(),
            Some(0),
            "agent exited with {status} after signal {signal}, expected 0\nstderr:\n{}",
            self.stderr.text()
        );
        (span::parse_all(&self.stdout.snapshot()), self.stderr.text())
    }

    /// SIGKILL (what a crash or the OOM killer does), then waits (up to [`STOP_TIMEOUT`]) for
    /// the exit; returns what it logged.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("running");
        util::signal(child.id(), libc::SIGKILL);
        let status = util::wait_child(&mut child, STOP_TIMEOUT);
        assert!(
            status.is_some(),
            "agent still running {STOP_TIMEOUT:?} after SIGKILL"
        );
        self.join_readers();
        self.stderr.text()
    }

    /// Waits (bounded) for both pipes to close after the agent exited.
    fn join_readers(&mut self) {
        let closed = util::wait_until(Duration::from_secs(5), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        assert!(
            closed,
            "the agent's stdout/stderr stayed open 5 s after it exited: did it leave a child behind?"
        );
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = util::wait_child(&mut child, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!(
                "--- agent stderr ---\n{}\n--- agent stdout ---\n{}\n---",
                self.stderr.text(),
                self.stdout.text()
            );
        }
    }
}

/// How a run that ended by itself ended.
#[derive(Debug)]
pub struct Exit {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Exit {
    /// The non-empty stderr lines, colours removed.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .map(util::strip_ansi)
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs the agent with `args` (through `wrapper`) and `env` until it exits by itself, bounded by
/// [`EXIT_TIMEOUT`]: for runs that must fail (bad config, no privileges) or that do not run the
/// agent (`--version`, `config check`). Panics if it is still running then.
pub fn run_to_exit(wrapper: &[&str], args: &[OsString], env: &[(&str, &str)]) -> Exit {
    let started = Instant::now();
    let mut child = agent_command(wrapper, args, env)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", agent_binary().display()));
    let stdout = Arc::new(Lines::default());
    let stderr = Arc::new(Lines::default());
    let readers = [
        read_lines(
            child.stdout.take().expect("piped stdout"),
            Arc::clone(&stdout),
        ),
        read_lines(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        ),
    ];
    let Some(status) = util::wait_child(&mut child, EXIT_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "agent {args:?} still running after {EXIT_TIMEOUT:?} (expected it to exit by itself)\nstderr:\n{}",
            stderr.text()
        );
    };
    let elapsed = started.elapsed();
    let _ = util::wait_until(Duration::from_secs(5), || {
        readers.iter().all(JoinHandle::is_finished)
    });
    Exit {
        status,
        stdout: stdout.text(),
        stderr: stderr.text(),
        elapsed,
    }
}

/// [`run_to_exit`] with `--config FILE` holding `config_yaml` (plus `extra_args`).
pub fn run_config_to_exit(
    wrapper: &[&str],
    config_yaml: &str,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> Exit {
    let dir = TempDir::new("agent-exit");
    let config = dir.write("config.yaml", config_yaml);
    let mut args = vec![OsString::from("--config"), config.into_os_string()];
    args.extend(extra_args.iter().map(OsString::from));
    run_to_exit(wrapper, &args, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_detection() {
        assert!(is_ready_line(
            "2026-11-25T13:00:00Z  INFO mop_agent: Ready. capture_path=tracepoint"
        ));
        assert!(is_ready_line(
            "\u{1b}[32m INFO\u{1b}[0m mop_agent: agent ready"
        ));
        assert!(!is_ready_line(
            "2026-11-25T13:00:00Z  INFO mop_agent: tracefs already mounted."
        ));
        assert!(!is_ready_line(
            "2026-11-25T13:00:00Z DEBUG mop_agent: ready"
        ));
        assert!(!is_ready_line(
            "2026-11-25T13:00:00Z  INFO mop_agent: readying"
        ));
    }
}
