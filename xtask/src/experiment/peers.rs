//! Peers the experiments add to the integration harness's (nginx, Python `http.server`, curl):
//! programs under `experiments/peers/` that print `port N` once they listen, and the gRPC load
//! client. Every peer is stopped on drop.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use integration_test::util;
use serde_json::Value;

use crate::cmd;

/// `experiments/peers/<file>`.
pub(crate) fn script(file: &str) -> PathBuf {
    cmd::workspace_root().join("experiments/peers").join(file)
}

/// A server process that announced its port with a `port N` line on stdout.
pub(crate) struct Peer {
    pub(crate) port: u16,
    child: Child,
}

impl Peer {
    /// Spawns `cmd` and waits (10 s) for its `port N` line and for the port to accept.
    pub(crate) fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .strip_prefix("port ")
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let Ok(port) = rx.recv_timeout(Duration::from_secs(15)) else {
            util::terminate(&mut child, libc::SIGKILL);
            bail!("{cmd:?} printed no `port N` within 15 s");
        };
        if !util::wait_until(Duration::from_secs(10), || util::port_open(port)) {
            util::terminate(&mut child, libc::SIGKILL);
            bail!("{cmd:?} does not accept on port {port}");
        }
        Ok(Self { port, child })
    }

    /// `python3 -u experiments/peers/<file> args...`.
    pub(crate) fn python(file: &str, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg("-u").arg(script(file)).args(args);
        Self::spawn(cmd)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}

/// What the gRPC load client measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrpcLoad {
    pub(crate) calls: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// Runs `grpc_peer.py client`: closed loop, or `rate` calls/s in total.
pub(crate) fn grpc_load(
    port: u16,
    seconds: f64,
    concurrency: u32,
    rate: Option<f64>,
) -> anyhow::Result<GrpcLoad> {
    let mut cmd = Command::new("python3");
    cmd.arg(script("grpc_peer.py")).args([
        "client".to_owned(),
        port.to_string(),
        seconds.to_string(),
        concurrency.to_string(),
    ]);
    if let Some(r) = rate {
        cmd.arg(r.to_string());
    }
    let out = cmd::output(&mut cmd)?;
    let v: Value =
        serde_json::from_str(out.trim()).with_context(|| format!("client said {out}"))?;
    Ok(GrpcLoad {
        calls: v["calls"].as_u64().unwrap_or(0),
        rps: v["rps"].as_f64().unwrap_or(f64::NAN),
        p50_ms: v["p50_ms"].as_f64().unwrap_or(f64::NAN),
        p99_ms: v["p99_ms"].as_f64().unwrap_or(f64::NAN),
    })
}
