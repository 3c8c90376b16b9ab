//! A real process in its own PID and network namespaces (a container without a runtime),
//! found through the host's `/proc` by the port it listens on inside its namespace.
//!
//! Needs root (`unshare`): ignored by a plain `cargo test`; `cargo xtask test` runs it as root
//! with `--ignored`.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    config::{DiscoveryConfig, PortSet, Selector},
    discovery::{Change, Scanner, identity::IdentityContext, procfs::ProcFs},
};

/// Kills the namespace's init (and so the namespace) on drop.
struct Namespace(Child);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
#[ignore = "needs root: run as root by `cargo xtask test`"]
fn root_finds_a_server_in_its_own_pid_and_network_namespace() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    for tool in ["unshare", "ip", "python3"] {
        assert!(have(tool), "this test needs {tool}");
    }
    let port = 20_000 + u16::try_from(std::process::id() % 10_000).unwrap();
    let script =
        format!("ip link set lo up && exec python3 -m http.server {port} --bind 127.0.0.1");
    let ns = Namespace(
        Command::new("unshare")
            .args([
                "--net",
                "--pid",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = DiscoveryConfig {
        instrument: vec![Selector {
            open_ports: Some(PortSet::parse(&port.to_string()).unwrap()),
            ..Selector::default()
        }],
        ..DiscoveryConfig::default()
    };
    let identity = IdentityContext {
        host_name: "host".into(),
        service_name_override: None,
    };
    let mut scanner = Scanner::new(ProcFs::host(), config, identity);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (pid, resource) = loop {
        let found = scanner.scan().into_iter().find_map(|c| match c {
            Change::Started { pid, resource } => Some((pid, resource)),
            Change::Exited(_) | Change::Rejected(_) => None,
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the namespaced server was not found"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let procfs = ProcFs::host();
    // The server, not `unshare` itself: its child, pid 1 of the new PID namespace.
    assert_ne!(pid, ns.0.id());
    assert_eq!(procfs.stat(pid).unwrap().ppid, ns.0.id());
    assert!(
        resource.service_name.starts_with("python"),
        "{}",
        resource.service_name
    );
    // Its port exists only in its own network namespace.
    let own = std::process::id();
    assert_ne!(procfs.net_ns(pid).unwrap(), procfs.net_ns(own).unwrap());
    assert!(
        !procfs
            .listening_sockets(own)
            .unwrap()
            .values()
            .any(|p| *p == port)
    );
    assert!(
        procfs
            .listening_sockets(pid)
            .unwrap()
            .values()
            .any(|p| *p == port)
    );
}
