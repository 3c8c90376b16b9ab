//! Two network namespaces joined by a veth pair: two "nodes" on one machine, for trace context
//! that must cross a real network hop (the TCP-option carrier). Deleted on drop.

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use crate::util;

/// Namespaces `a` and `b`, with `addr_a` and `addr_b` on the two ends of a veth pair.
pub struct NetnsPair {
    /// Name of the first namespace.
    pub a: String,
    /// Name of the second namespace.
    pub b: String,
    /// The first namespace's address.
    pub addr_a: Ipv4Addr,
    /// The second namespace's address.
    pub addr_b: Ipv4Addr,
}

/// Runs `ip args...`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetnsPair {
    /// Creates the namespaces (named after this process, so runs do not collide) and the
    /// link between them, with loopback up in both.
    pub fn new() -> Self {
        let id = std::process::id();
        let (a, b) = (format!("mop-a-{id}"), format!("mop-b-{id}"));
        let (veth_a, veth_b) = (format!("mopa{id}"), format!("mopb{id}"));
        let subnet = (id % 200 + 20) as u8;
        let pair = Self {
            addr_a: Ipv4Addr::new(10, 213, subnet, 1),
            addr_b: Ipv4Addr::new(10, 213, subnet, 2),
            a,
            b,
        };
        // A namespace left over by a killed run of the same pid would make `add` fail.
        for ns in [&pair.a, &pair.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b,
        ]);
        for (ns, dev, addr) in [
            (&pair.a, &veth_a, pair.addr_a),
            (&pair.b, &veth_b, pair.addr_b),
        ] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec` execs it in place,
    /// so the child's pid is the program's).
    pub fn command(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, which deletes the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A server started with [`spawn_ready`]; killed on drop.
pub struct NsServer {
    child: Child,
    /// Keeps its stdout drained.
    _lines: Receiver<String>,
}

impl NsServer {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}

/// Starts `cmd` and waits (up to 10 s) for it to print `ready` on stdout.
pub fn spawn_ready(mut cmd: Command) -> NsServer {
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    let (mut child, lines) = util::spawn_lines(&mut cmd);
    let what = format!("{cmd:?}");
    util::await_line(&mut child, &lines, Duration::from_secs(10), &what, |line| {
        (line.trim() == "ready").then_some(())
    });
    NsServer {
        child,
        _lines: lines,
    }
}
