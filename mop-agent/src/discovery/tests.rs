//! Discovery passes over a fake `/proc` tree.

use std::{fmt::Write as _, fs, os::unix::fs::symlink, path::PathBuf};

use super::*;
use crate::config::{
    discovery::{PortSet, Selector},
    glob::Glob,
};

/// A fake `/proc` in a temporary directory, removed on drop (shared with `kube::tests`).
pub(super) struct FakeProc {
    pub(super) root: PathBuf,
}

impl FakeProc {
    pub(super) fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("mop-fakeproc-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// Adds a process with an executable, a start time, a netns and socket fds.
    pub(super) fn add(&self, pid: u32, exe: &str, start: u64, sockets: &[u64]) {
        let dir = self.root.join(pid.to_string());
        let _ = fs::remove_dir_all(&dir);
        for sub in ["fd", "ns", "net"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let stat_line = format!("{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0");
        fs::write(dir.join("stat"), stat_line).unwrap();
        symlink(exe, dir.join("exe")).unwrap();
        symlink("net:[4026531840]", dir.join("ns/net")).unwrap();
        fs::write(dir.join("environ"), b"").unwrap();
        for (i, inode) in sockets.iter().enumerate() {
            symlink(
                format!("socket:[{inode}]"),
                dir.join(format!("fd/{}", i + 3)),
            )
            .unwrap();
        }
        self.set_listeners(pid, &[]);
    }

    /// Writes the TCP table `pid` sees: `(inode, port)` listeners.
    pub(super) fn set_listeners(&self, pid: u32, listeners: &[(u64, u16)]) {
        let mut t = String::from(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
        );
        for (i, (inode, port)) in listeners.iter().enumerate() {
            let _ = writeln!(
                t,
                "   {i}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0 100 0 0 10 0"
            );
        }
        fs::write(self.root.join(pid.to_string()).join("net/tcp"), t).unwrap();
    }

    pub(super) fn remove(&self, pid: u32) {
        fs::remove_dir_all(self.root.join(pid.to_string())).unwrap();
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn scanner(fake: &FakeProc, instrument: Vec<Selector>) -> Scanner {
    let config = DiscoveryConfig {
        instrument,
        ..DiscoveryConfig::default()
    };
    let identity = IdentityContext {
        host_name: "h".into(),
        service_name_override: None,
    };
    Scanner::new(ProcFs::new(&fake.root), config, identity)
}

fn ports(p: &str) -> Selector {
    Selector {
        open_ports: Some(PortSet::parse(p).unwrap()),
        ..Selector::default()
    }
}

fn started(changes: &[Change]) -> Vec<(u32, String)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Started { pid, resource } => Some((*pid, resource.service_name.clone())),
            Change::Exited(_) | Change::Rejected(_) => None,
        })
        .collect()
}

#[test]
fn selects_by_port_and_forgets_on_exit() {
    let fake = FakeProc::new("port");
    fake.add(10, "/usr/sbin/nginx", 100, &[555]);
    fake.add(11, "/usr/bin/bash", 100, &[]);
    fake.set_listeners(10, &[(555, 8080)]);
    fake.set_listeners(11, &[(555, 8080)]);
    let mut s = scanner(&fake, vec![ports("8000-8999")]);
    assert_eq!(started(&s.scan()), vec![(10, "nginx".to_owned())]);
    assert_eq!(s.instrumented(), 1);
    assert!(s.scan().is_empty(), "a second pass changes nothing");
    fake.remove(10);
    assert_eq!(s.scan(), vec![Change::Exited(10)]);
    assert_eq!(s.instrumented(), 0);
}

#[test]
fn selects_by_exe_glob() {
    let fake = FakeProc::new("exe");
    fake.add(20, "/usr/bin/curl", 1, &[]);
    fake.add(21, "/usr/bin/wget", 1, &[]);
    let sel = Selector {
        exe_path: Some(Glob::new("*/curl").unwrap()),
        ..Selector::default()
    };
    let mut s = scanner(&fake, vec![sel]);
    assert_eq!(started(&s.scan()), vec![(20, "curl".to_owned())]);
}

#[test]
fn picks_up_a_process_that_starts_listening_later() {
    let fake = FakeProc::new("later");
    fake.add(30, "/usr/bin/python3.11", 1, &[]);
    let mut s = scanner(&fake, vec![ports("8080")]);
    assert!(s.scan().is_empty());
    fake.add(30, "/usr/bin/python3.11", 1, &[777]);
    fake.set_listeners(30, &[(777, 8080)]);
    assert_eq!(started(&s.scan()), vec![(30, "python3.11".to_owned())]);
}

#[test]
fn a_reused_pid_is_a_new_process() {
    let fake = FakeProc::new("reuse");
    fake.add(40, "/usr/bin/curl", 1, &[]);
    let sel = Selector {
        exe_path: Some(Glob::new("*/curl").unwrap()),
        ..Selector::default()
    };
    let mut s = scanner(&fake, vec![sel]);
    assert_eq!(started(&s.scan()).len(), 1);
    fake.add(40, "/usr/bin/curl", 2, &[]);
    let changes = s.scan();
    assert_eq!(changes[0], Change::Exited(40));
    assert_eq!(started(&changes), vec![(40, "curl".to_owned())]);
}

#[test]
fn without_selectors_every_listener_but_the_agent() {
    let fake = FakeProc::new("default");
    fake.add(50, "/usr/sbin/nginx", 1, &[1]);
    fake.add(51, "/opt/mop-agent", 1, &[2]);
    fake.add(52, "/usr/bin/sleep", 1, &[]);
    for pid in [50, 51, 52] {
        fake.set_listeners(pid, &[(1, 80), (2, 9400)]);
    }
    let mut s = scanner(&fake, vec![]);
    assert_eq!(started(&s.scan()), vec![(50, "nginx".to_owned())]);
}

#[test]
fn exec_decides_at_once() {
    let fake = FakeProc::new("exec");
    let sel = Selector {
        exe_path: Some(Glob::new("*/curl").unwrap()),
        ..Selector::default()
    };
    let mut s = scanner(&fake, vec![sel]);
    fake.add(60, "/usr/bin/curl", 1, &[]);
    assert_eq!(started(&s.exec(60, None)), vec![(60, "curl".to_owned())]);
    fake.add(61, "/usr/bin/ls", 1, &[]);
    assert_eq!(s.exec(61, None), vec![Change::Rejected(61)]);
    // The scan that follows does not announce the exec'd process a second time.
    assert!(started(&s.scan()).is_empty());
}

#[test]
fn old_processes_are_rechecked_less_often() {
    let fake = FakeProc::new("old");
    fake.add(70, "/usr/bin/python3.11", 1, &[]);
    let mut s = scanner(&fake, vec![ports("8080")]);
    for _ in 0..12 {
        assert!(s.scan().is_empty());
    }
    // Pass 13 onwards: the process is old; it starts listening now.
    fake.add(70, "/usr/bin/python3.11", 1, &[777]);
    fake.set_listeners(70, &[(777, 8080)]);
    let mut passes = 0;
    let found = loop {
        passes += 1;
        let changes = s.scan();
        if !changes.is_empty() {
            break started(&changes);
        }
        assert!(
            passes < OLD_PROCESS_PASSES,
            "not found within one slow period"
        );
    };
    assert_eq!(found, vec![(70, "python3.11".to_owned())]);
    assert!(passes > 1, "an old process is not re-checked every pass");
}

#[test]
fn a_gone_exec_is_decided_from_the_kernel_path() {
    let fake = FakeProc::new("gone");
    let sel = Selector {
        exe_path: Some(Glob::new("*/curl").unwrap()),
        ..Selector::default()
    };
    let mut s = scanner(&fake, vec![sel]);
    // Pid 80 exec'd curl and exited before discovery looked.
    assert_eq!(
        started(&s.exec(80, Some("/usr/bin/curl"))),
        vec![(80, "curl".to_owned())]
    );
    assert_eq!(s.scan(), vec![Change::Exited(80)]);
    // Not selected from its path, or a relative path: rejected.
    assert_eq!(s.exec(81, Some("/usr/bin/ls")), vec![Change::Rejected(81)]);
    assert_eq!(s.exec(82, Some("curl")), vec![Change::Rejected(82)]);
}
