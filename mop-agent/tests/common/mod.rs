//! Helpers shared by the export integration tests: real peers as child processes, a tiny
//! HTTP/1.0 client, polling.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A child process killed on drop.
pub(crate) struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python OTLP receiver (`test/peers/otlp_receiver.py`).
pub(crate) struct Receiver {
    pub(crate) peer: Peer,
    pub(crate) grpc_port: u16,
    pub(crate) http_port: u16,
    pub(crate) out: PathBuf,
    _dir: TempDir,
}

impl Receiver {
    /// Starts the receiver on ephemeral ports; it fails the first `fail_first` requests of each
    /// transport. Panics (never skips) when Python or its packages are missing.
    pub(crate) fn start(fail_first: usize) -> Self {
        Self::start_on(fail_first, 0, 0, None)
    }

    /// Starts it on given ports, appending to `out` when given.
    pub(crate) fn start_on(
        fail_first: usize,
        grpc_port: u16,
        http_port: u16,
        out: Option<PathBuf>,
    ) -> Self {
        Self::start_with(fail_first, grpc_port, http_port, out, &[])
    }

    /// Starts it on ephemeral ports, never answering its first request per transport.
    pub(crate) fn start_stalling(out: PathBuf) -> Self {
        Self::start_with(
            0,
            0,
            0,
            Some(out),
            &["--stall-first".as_ref(), "1".as_ref()],
        )
    }

    /// Starts it over TLS with a certificate and key (PEM files).
    pub(crate) fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let args = [
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ];
        Self::start_with(0, 0, 0, None, &args)
    }

    fn start_with(
        fail_first: usize,
        grpc_port: u16,
        http_port: u16,
        out: Option<PathBuf>,
        extra: &[&std::ffi::OsStr],
    ) -> Self {
        let dir = TempDir::new("receiver");
        let out = out.unwrap_or_else(|| dir.0.join("received.jsonl"));
        let script = repo_root().join("test/peers/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([
                "--grpc-port",
                &grpc_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .args(["--fail-first", &fail_first.to_string(), "--out"])
            .arg(&out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (cargo xtask setup)");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let ports: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| {
            panic!("the OTLP receiver did not start ({e}): needs PyPI opentelemetry-proto and grpcio (cargo xtask setup)")
        });
        Self {
            peer: Peer(child),
            grpc_port: u16::try_from(ports["grpc_port"].as_u64().unwrap()).unwrap(),
            http_port: u16::try_from(ports["http_port"].as_u64().unwrap()).unwrap(),
            out,
            _dir: dir,
        }
    }

    /// Every record of a type received so far.
    pub(crate) fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == kind)
            .collect()
    }
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("mop-{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub(crate) async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A blocking HTTP/1.0 GET: status code and body.
pub(crate) fn http_get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// A free loopback port (bound then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
