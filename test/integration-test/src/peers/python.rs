//! Python servers: the standard library's `http.server` and `test/peers/http11_server.py`
//! (plain or over TLS).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use crate::util::{self, TempDir};

/// The file `http.server` serves at `/file.txt`.
pub const FILE_PATH: &str = "/file.txt";
/// Its size.
pub const FILE_SIZE: i64 = 777;

/// A running Python server on a port it chose itself, stopped on drop.
pub struct PythonServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    child: Child,
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
        // "port 41234"
        Self::spawn(cmd, dir, |line| {
            line.strip_prefix("port ")?.trim().parse().ok()
        })
    }

    /// [`PythonServer::http11`] over TLS (Python's `ssl`, on OpenSSL's libssl) with a
    /// self-signed certificate made by `openssl req`; clients must not verify it.
    pub fn https11() -> Self {
        let dir = TempDir::new("pyhttps11");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(made.success(), "openssl req failed");
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(util::peers_dir().join("http11_server.py"))
            .args(["0", "--tls"])
            .args([&cert, &key]);
        Self::spawn(cmd, dir, |line| {
            line.strip_prefix("port ")?.trim().parse().ok()
        })
    }

    fn spawn(mut cmd: Command, dir: TempDir, port_of: fn(&str) -> Option<u16>) -> Self {
        cmd.env_remove("PYTHONSTARTUP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the line with the port, then keeps draining stdout until the server exits.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = port_of(&line) {
                    let _ = tx.send(port);
                }
            }
        });
        let Ok(port) = rx.recv_timeout(Duration::from_secs(10)) else {
            util::terminate(&mut child, libc::SIGKILL);
            panic!("{cmd:?} printed no port within 10 s");
        };
        util::wait_for_port(port, Duration::from_secs(10), "the Python server");
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
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
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}
