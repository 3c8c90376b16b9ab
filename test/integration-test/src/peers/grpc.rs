//! Real gRPC peers: a Python grpcio server (`test/peers/grpc_peer.py server`) and two clients
//! driven command by command over stdin, grpcio (`grpc_peer.py client`) and Node's
//! `@grpc/grpc-js` (`test/peers/node/grpc_client.js`), each with one channel for its whole life.
//!
//! The service is `mop.test.Echo` with methods `Unary`, `ServerStream`, `ClientStream`,
//! `Missing` (`NOT_FOUND`), `Broken` (`INTERNAL`) and `Slow` (sleeps); see the Python script.

use std::{
    io::Write as _,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use serde_json::Value;

use super::tls::Certs;
use crate::util;

/// The fully qualified service name of the test service.
pub const SERVICE: &str = "mop.test.Echo";

/// gRPC status codes the tests use.
pub mod code {
    /// OK.
    pub const OK: i64 = 0;
    /// `DEADLINE_EXCEEDED`.
    pub const DEADLINE_EXCEEDED: i64 = 4;
    /// `NOT_FOUND`.
    pub const NOT_FOUND: i64 = 5;
    /// `INTERNAL`.
    pub const INTERNAL: i64 = 13;
}

/// Bound on one client command (a deadline test sleeps about a second).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The `node_modules` the Node client needs (`cargo xtask setup` runs `npm ci` there).
fn node_dir() -> PathBuf {
    util::peers_dir().join("node")
}

/// Spawns a peer with piped stdin and stdout (stderr inherited), returns it with a channel of
/// its stdout lines.
fn spawn_lines(mut cmd: Command) -> (Child, Receiver<String>) {
    cmd.stdin(Stdio::piped()).stderr(Stdio::inherit());
    util::spawn_lines(&mut cmd)
}

/// Waits (bounded) for the `port N` line.
fn read_port(child: &mut Child, lines: &Receiver<String>, what: &str) -> u16 {
    util::await_line(child, lines, Duration::from_secs(15), what, |line| {
        line.strip_prefix("port ")?.trim().parse().ok()
    })
}

/// A grpcio server on a free loopback port, stopped on drop.
pub struct GrpcServer {
    /// The port it serves on (127.0.0.1).
    pub port: u16,
    child: Child,
    _lines: Receiver<String>,
}

impl GrpcServer {
    /// Starts the server, with TLS when `tls` is given (its certificate and key).
    pub fn start(tls: Option<&Certs>) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(util::peers_dir().join("grpc_peer.py"))
            .arg("server");
        if let Some(certs) = tls {
            cmd.arg("--tls").arg(certs.dir());
        }
        let (mut child, lines) = spawn_lines(cmd);
        let port = read_port(&mut child, &lines, "grpc_peer.py server");
        util::wait_for_port(port, Duration::from_secs(10), "the grpcio server");
        Self {
            port,
            child,
            _lines: lines,
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The expected `service`: its executable's base name (e.g. `python3.11`).
    pub fn service(&self) -> String {
        util::exe_name(self.pid())
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}

/// What one client command measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The status code of each call, in the order the calls were made.
    pub codes: Vec<i64>,
    /// The whole answer (`messages`, `reply`).
    pub json: Value,
}

/// A gRPC client process with one channel, driven command by command; stopped on drop.
pub struct GrpcClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The port the Python client listens on only so that `open_ports` can select it (every
    /// Python process has the same executable); `None` for Node.
    pub select_port: Option<u16>,
}

impl GrpcClient {
    /// A grpcio client of 127.0.0.1:`port` (TLS trusting `tls`'s CA when given). The channel
    /// connects on the first call.
    pub fn python(port: u16, tls: Option<&Certs>) -> Self {
        let mut cmd = Command::new("python3");
        cmd.arg("-u")
            .arg(util::peers_dir().join("grpc_peer.py"))
            .arg("client")
            .arg(port.to_string());
        if let Some(certs) = tls {
            cmd.arg("--tls").arg(certs.dir());
        }
        let (mut child, lines) = spawn_lines(cmd);
        let select_port = read_port(&mut child, &lines, "grpc_peer.py client");
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            select_port: Some(select_port),
        }
    }

    /// A `@grpc/grpc-js` client of 127.0.0.1:`port` under `node`.
    pub fn node(port: u16, tls: Option<&Certs>) -> Self {
        assert!(
            node_dir().join("node_modules/@grpc/grpc-js").is_dir(),
            "{} has no node_modules: run `cargo xtask setup`",
            node_dir().display()
        );
        let mut cmd = Command::new(util::which("node"));
        cmd.current_dir(node_dir())
            .arg("grpc_client.js")
            .arg(port.to_string());
        if let Some(certs) = tls {
            cmd.arg("--tls").arg(certs.dir());
        }
        let (mut child, lines) = spawn_lines(cmd);
        util::await_line(
            &mut child,
            &lines,
            Duration::from_secs(15),
            "grpc_client.js",
            |line| (line == "ready").then_some(()),
        );
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            select_port: None,
        }
    }

    /// The client's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The expected `service`: its executable's base name.
    pub fn service(&self) -> String {
        util::exe_name(self.pid())
    }

    /// Runs one command (`unary 3`, `concurrent 20`, `missing`, ...) and returns what it
    /// measured.
    pub fn run(&mut self, command: &str) -> Outcome {
        let stdin = self.stdin.as_mut().expect("client running");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("sending {command:?} to the gRPC client: {e}"));
        let line = self
            .lines
            .recv_timeout(COMMAND_TIMEOUT)
            .unwrap_or_else(|_| panic!("the gRPC client did not answer {command:?} in time"));
        let json: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("gRPC client answer {line:?} to {command:?}: {e}"));
        let codes = json["codes"]
            .as_array()
            .unwrap_or_else(|| panic!("no codes in {json} for {command:?}"))
            .iter()
            .map(|c| c.as_i64().expect("integer status code"))
            .collect();
        Outcome { codes, json }
    }

    /// Runs `command` and asserts every call ended with `expected`; returns the outcome.
    pub fn expect(&mut self, command: &str, calls: usize, expected: i64) -> Outcome {
        let outcome = self.run(command);
        assert_eq!(
            outcome.codes,
            vec![expected; calls],
            "status codes of {command:?}: the peers did not behave as the test assumes"
        );
        outcome
    }

    /// Closes the channel and waits (bounded) for the client to exit.
    pub fn quit(mut self) {
        drop(self.stdin.take());
        if util::wait_child(&mut self.child, Duration::from_secs(10)).is_none() {
            util::terminate(&mut self.child, libc::SIGTERM);
        }
    }
}

impl Drop for GrpcClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}
