//! Python servers: the standard library's `http.server`, `test/peers/http11_server.py`, the
//! same over `ssl` (`test/peers/https_server.py`), a hypercorn HTTP/2 server
//! (`test/peers/h2c_server.py`) and the chain services of the trace-context tests
//! (`test/peers/chain_*.py`).

use std::{
    io::Write as _,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use super::tls::Certs;
use crate::util::{self, TempDir};

/// The file `http.server` serves at `/file.txt`.
pub const FILE_PATH: &str = "/file.txt";
/// Its size.
pub const FILE_SIZE: i64 = 777;

/// The body `chain_http.py` answers as a backend.
pub const CHAIN_BACKEND_BODY: &str = "backend\n";
/// The body a chain frontend (`chain_http.py --backend`, `chain_aiohttp.py`) answers.
pub const CHAIN_FRONT_BODY: &str = "front+backend\n";
/// The unary method of `chain_grpc.py`.
pub const GRPC_CHAIN_METHOD: &str = "/mop.test.Chain/Call";

/// The port in a peer's `port 41234` line.
fn port_line(line: &str) -> Option<u16> {
    line.strip_prefix("port ")?.trim().parse().ok()
}

/// A running Python server on a port it chose itself, stopped on drop.
pub struct PythonServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    scheme: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    _dir: TempDir,
}

impl PythonServer {
    /// `python3 -m http.server` (HTTP/1.0: one request per connection) serving a directory
    /// that holds [`FILE_PATH`].
    pub fn http_server() -> Self {
        let dir = TempDir::new("pyhttp");
        dir.write(&FILE_PATH[1..], util::pattern(FILE_SIZE));
        let mut cmd = Command::new("python3");
        cmd.args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path());
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        Self::spawn(cmd, dir, |line| {
            let rest = line.split(" port ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// `test/peers/http11_server.py`: HTTP/1.1 keep-alive, chunked responses, POST bodies and
    /// `Expect: 100-continue`; `env` is added to its environment (e.g. `OTEL_SERVICE_NAME`).
    pub fn http11(env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("pyhttp11");
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(util::peers_dir().join("http11_server.py"))
            .arg("0");
        for (key, value) in env {
            cmd.env(key, value);
        }
        Self::spawn(cmd, dir, port_line)
    }

    /// `test/peers/chain_http.py`: a thread-per-request HTTP/1.1 service (`ThreadingHTTPServer`,
    /// keep-alive) answering `GET /work?...`; with `backend` (a base URL) it calls
    /// `GET {backend}/work?<same query>` from the serving thread and answers
    /// [`CHAIN_FRONT_BODY`], else it sleeps `delay_ms` and answers [`CHAIN_BACKEND_BODY`].
    /// `service` is its `OTEL_SERVICE_NAME` (as for the other chain services).
    pub fn chain_http(backend: Option<&str>, service: &str) -> Self {
        let mut cmd = Command::new("python3");
        cmd.env("OTEL_SERVICE_NAME", service);
        cmd.arg("-u").arg(util::peers_dir().join("chain_http.py"));
        if let Some(backend) = backend {
            cmd.args(["--backend", backend]);
        }
        Self::spawn(cmd, TempDir::new("pychain"), port_line)
    }

    /// `test/peers/chain_aiohttp.py`: an aiohttp server on one asyncio event loop whose
    /// `GET /work?...` handler awaits `GET {backend}/work?<same query>` with aiohttp's client
    /// (pooled keep-alive connections) and answers [`CHAIN_FRONT_BODY`].
    pub fn chain_aiohttp(backend: &str, service: &str) -> Self {
        let mut cmd = Command::new("python3");
        cmd.env("OTEL_SERVICE_NAME", service);
        cmd.arg("-u")
            .arg(util::peers_dir().join("chain_aiohttp.py"))
            .args(["--backend", backend]);
        Self::spawn(cmd, TempDir::new("pyaio"), port_line)
    }

    /// `test/peers/chain_grpc.py`: a grpcio server (plaintext HTTP/2) with the unary method
    /// [`GRPC_CHAIN_METHOD`] on raw bytes; with `backend` (`127.0.0.1:PORT`) its handler calls
    /// the same method there and answers `front+` and the backend's answer, else it answers
    /// `backend:` and the request.
    pub fn chain_grpc(backend: Option<&str>, service: &str) -> Self {
        let mut cmd = Command::new("python3");
        cmd.env("OTEL_SERVICE_NAME", service);
        cmd.arg("-u").arg(util::peers_dir().join("chain_grpc.py"));
        if let Some(backend) = backend {
            cmd.args(["--backend", backend]);
        }
        Self::spawn(cmd, TempDir::new("pygrpc"), port_line)
    }

    /// `test/peers/https_server.py`: the endpoints of [`PythonServer::http11`] over TLS with
    /// `certs`, libssl loaded from the start.
    pub fn https(certs: &Certs) -> Self {
        Self::https_server(certs, false)
    }

    /// [`PythonServer::https`] started WITHOUT libssl: it listens with a plain socket and
    /// loads `ssl` (and starts serving HTTPS) only at [`PythonServer::load_tls`].
    pub fn https_late(certs: &Certs) -> Self {
        Self::https_server(certs, true)
    }

    fn https_server(certs: &Certs, late: bool) -> Self {
        let dir = TempDir::new("pyhttps");
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(util::peers_dir().join("https_server.py"))
            .arg(certs.dir());
        if late {
            cmd.arg("--late");
        }
        let mut server = Self::spawn(cmd, dir, port_line);
        server.scheme = "https";
        server
    }

    /// Tells an [`PythonServer::https_late`] server to import `ssl` and serve HTTPS; returns
    /// once it says it does.
    pub fn load_tls(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go")
            .and_then(|()| stdin.flush())
            .expect("telling the server to load ssl");
        let answer = self.lines.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            answer.as_deref(),
            Ok("tls"),
            "https_server.py did not start TLS"
        );
    }

    /// `test/peers/h2c_server.py`: hypercorn on cleartext, HTTP/1.1, HTTP/2 with prior
    /// knowledge and the `Upgrade: h2c` path.
    pub fn h2c() -> Self {
        let dir = TempDir::new("h2c");
        let mut cmd = Command::new("python3");
        cmd.arg("-u").arg(util::peers_dir().join("h2c_server.py"));
        Self::spawn(cmd, dir, port_line)
    }

    fn spawn(mut cmd: Command, dir: TempDir, port_of: fn(&str) -> Option<u16>) -> Self {
        cmd.stdin(Stdio::piped()).stderr(Stdio::null());
        let (mut child, lines) = util::spawn_lines(&mut cmd);
        let stdin = child.stdin.take();
        let what = format!("{cmd:?}");
        let port = util::await_line(&mut child, &lines, Duration::from_secs(10), &what, port_of);
        util::wait_for_port(port, Duration::from_secs(10), "the Python server");
        Self {
            port,
            scheme: "http",
            child,
            stdin,
            lines,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` for the TLS servers).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// The server's pid (threads included: one process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The expected `service`: the base name of its executable (e.g. `python3.11`).
    pub fn service(&self) -> String {
        util::exe_name(self.pid())
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}
