//! Small helpers shared by the harness: temporary directories, ports, bounded waits, clocks
//! and processes. Every wait here is bounded and panics (or returns `false`) when it runs out.

use std::{
    fs,
    io::{BufRead as _, BufReader, ErrorKind},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
        mpsc::{self, Receiver},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(20);

/// A directory under the system temp dir, removed on drop.
///
/// World-readable (0755, files 0644) so that peers and agents started as another user (the
/// capability tests run it as `nobody`) can read what the test wrote.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/mop-itest-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mop-itest-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the directory (mode 0644) and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Deterministic printable bytes (`a`..`z` repeated), for files and bodies of exact sizes
/// (sizes are `i64` like the span attributes they are compared with).
pub fn pattern(len: i64) -> Vec<u8> {
    (0..len)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[usize::try_from(i % 26).expect("0..26")])
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for peers that cannot bind port 0 and
/// report it, like nginx).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits (bounded) until 127.0.0.1:`port` accepts connections; panics naming `what` if not.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    assert!(
        wait_until(timeout, || port_open(port)),
        "{what} did not accept connections on 127.0.0.1:{port} within {timeout:?}"
    );
}

/// Polls `done` every [`POLL`] until it returns true (then true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Waits (bounded) for `child` to exit; `None` when it is still running after `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// Sends `signal` to `pid`; errors (the process is gone) are ignored.
pub fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Stops a peer: `signal`, then SIGKILL if it has not exited within 5 s. Never panics (it
/// runs in `Drop`).
pub fn terminate(child: &mut Child, signal_number: libc::c_int) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    signal(child.id(), signal_number);
    if wait_child(child, Duration::from_secs(5)).is_none() {
        let _ = child.kill();
        let _ = wait_child(child, Duration::from_secs(5));
    }
}

/// Now, in nanoseconds since the Unix epoch (the clock of `start_unix_nano`).
pub fn unix_nanos() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_nanos()).expect("nanoseconds fit in u64 until 2554")
}

/// The base name of `/proc/PID/exe`: the `service` the contract expects by default.
pub fn exe_name(pid: u32) -> String {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/exe: {e}"));
    file_name(&exe)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_else(|| panic!("{} has no file name", path.display()))
        .to_string_lossy()
        .into_owned()
}

/// The canonical path of `program` found on `PATH`, symlinks resolved (so its base name is what
/// `/proc/PID/exe` will show once it runs).
pub fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .and_then(|found| fs::canonicalize(found).ok())
        .unwrap_or_else(|| panic!("{program} not found on PATH: run `cargo xtask setup`"))
}

/// The base name of the executable that `program` on `PATH` resolves to.
pub fn which_name(program: &str) -> String {
    file_name(&which(program))
}

/// The pids whose parent is `parent` (from `/proc/*/stat`).
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid of `pid`, from field 4 of `/proc/PID/stat` (after the parenthesised comm).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(_) => return None,
    };
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// True while `/proc/PID` exists and the process is not a zombie.
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The lock every test takes first: tests share kernel state (attached programs, ports, the
/// agent's view of every process), so they must not overlap even if `--test-threads=1` is
/// forgotten. A test that panicked does not poison it for the next.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes ANSI escape sequences (colours) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in '@'..='~'.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The directory of the peer scripts (`test/peers`).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers")
}

/// Spawns a peer `cmd` (stdin and stderr as the caller set them) with its stdout piped into a
/// channel of lines, read by a thread until the peer closes it. `PYTHONSTARTUP` is removed so
/// that a developer's shell cannot make a Python peer print first.
pub fn spawn_lines(cmd: &mut Command) -> (Child, Receiver<String>) {
    cmd.env_remove("PYTHONSTARTUP").stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads `lines` until `wanted` takes one (lines before it are skipped), for at most `timeout`;
/// otherwise kills `child` and panics naming `what`.
pub fn await_line<T>(
    child: &mut Child,
    lines: &Receiver<String>,
    timeout: Duration,
    what: &str,
    mut wanted: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            terminate(child, libc::SIGKILL);
            panic!("{what} printed no expected line within {timeout:?} (run `cargo xtask setup`)");
        };
        if let Some(found) = wanted(&line) {
            return found;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m mop: Ready."),
            "2026  INFO mop: Ready."
        );
    }

    #[test]
    fn pattern_is_exact() {
        assert_eq!(pattern(28), b"abcdefghijklmnopqrstuvwxyzab");
    }

    #[test]
    fn parent_of_self_is_our_parent() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert!(alive(me));
    }
}
