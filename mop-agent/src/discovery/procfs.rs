//! Reading process facts from a `/proc` tree.
//!
//! Every `/proc` access of the agent goes through [`ProcFs`], which takes its root directory,
//! so discovery logic unit-tests on a fake tree without root.

use std::{
    collections::HashMap,
    ffi::OsStr,
    io,
    path::{Path, PathBuf},
};

/// A `/proc` tree (the host's, or a fake one in tests).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

/// What `/proc/PID/stat` says that discovery needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The command name (up to 15 bytes).
    pub comm: String,
    /// Parent process id.
    pub ppid: u32,
    /// Start time in clock ticks since boot: with the pid, identifies a process across pid
    /// reuse.
    pub start_time: u64,
}

impl ProcFs {
    /// The host's `/proc`.
    pub fn host() -> Self {
        Self::new("/proc")
    }

    /// A tree rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, pid: u32, rest: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rest)
    }

    /// Every numeric entry: the processes (thread groups) that exist now.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Parses `/proc/PID/stat`; the command name may contain spaces and parentheses.
    pub fn stat(&self, pid: u32) -> io::Result<ProcStat> {
        let text = std::fs::read_to_string(self.path(pid, "stat"))?;
        parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
    }

    /// The executable's path as the process sees it (inside its mount namespace); a deleted
    /// file loses its ` (deleted)` suffix.
    pub fn exe(&self, pid: u32) -> io::Result<String> {
        let target = std::fs::read_link(self.path(pid, "exe"))?;
        let s = target.to_string_lossy();
        Ok(s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned())
    }

    /// The values of the named variables in the process's initial environment.
    pub fn environ(&self, pid: u32, names: &[&str]) -> io::Result<HashMap<String, String>> {
        let data = std::fs::read(self.path(pid, "environ"))?;
        let mut out = HashMap::new();
        for entry in data.split(|&b| b == 0) {
            let Some(eq) = entry.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (name, value) = (&entry[..eq], &entry[eq + 1..]);
            if let Some(n) = names.iter().find(|n| n.as_bytes() == name) {
                out.insert((*n).to_owned(), String::from_utf8_lossy(value).into_owned());
            }
        }
        Ok(out)
    }

    /// The inode of the process's network namespace.
    pub fn net_ns(&self, pid: u32) -> io::Result<u64> {
        let link = std::fs::read_link(self.path(pid, "ns/net"))?;
        bracketed_inode(link.as_os_str())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad ns link"))
    }

    /// Listening TCP sockets (inode to port) of the network namespace `pid` lives in.
    pub fn listening_sockets(&self, pid: u32) -> io::Result<HashMap<u64, u16>> {
        let mut out = HashMap::new();
        let mut found = false;
        for table in ["net/tcp", "net/tcp6"] {
            match std::fs::read_to_string(self.path(pid, table)) {
                Ok(text) => {
                    found = true;
                    parse_listeners(&text, &mut out);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if found {
            Ok(out)
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "no tcp tables"))
        }
    }

    /// Inodes of the sockets among the process's open file descriptors.
    pub fn socket_inodes(&self, pid: u32) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.path(pid, "fd"))? {
            let Ok(entry) = entry else { continue };
            if let Ok(target) = std::fs::read_link(entry.path())
                && let Some(rest) = target.to_str().and_then(|t| t.strip_prefix("socket:"))
                && let Some(inode) = bracketed_inode(OsStr::new(rest))
            {
                out.push(inode);
            }
        }
        Ok(out)
    }

    /// The contents of `/proc/PID/cgroup` (container and pod identity on Kubernetes).
    pub fn cgroup(&self, pid: u32) -> io::Result<String> {
        std::fs::read_to_string(self.path(pid, "cgroup"))
    }

    /// The contents of `/proc/PID/maps` (the files a process maps).
    pub fn maps(&self, pid: u32) -> io::Result<String> {
        std::fs::read_to_string(self.path(pid, "maps"))
    }

    /// A path as the process sees it, reached through `/proc/PID/root` (so files inside a
    /// container's mount namespace are found from the host).
    pub fn in_root(&self, pid: u32, path: &str) -> PathBuf {
        self.path(pid, "root").join(path.trim_start_matches('/'))
    }

    /// The root of this tree.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// `[12345]` or `net:[12345]` to 12345.
fn bracketed_inode(s: &OsStr) -> Option<u64> {
    let s = s.to_str()?;
    let start = s.find('[')? + 1;
    let end = s[start..].find(']')? + start;
    s[start..end].parse().ok()
}

/// Parses the fields of `/proc/PID/stat` that discovery reads.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After the comm: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(ProcStat {
        comm,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Adds the listening sockets of a `/proc/net/tcp{,6}` table to `out`.
pub fn parse_listeners<S: std::hash::BuildHasher>(text: &str, out: &mut HashMap<u64, u16, S>) {
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
        else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some(port) = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let Ok(inode) = inode.parse::<u64>()
            && inode != 0
        {
            out.insert(inode, port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 50";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.comm, "my (odd) name");
        assert_eq!(st.ppid, 1);
        assert_eq!(st.start_time, 98765);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn parses_listening_sockets_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        let mut out = HashMap::new();
        parse_listeners(table, &mut out);
        assert_eq!(out, HashMap::from([(4242, 8080)]));
    }

    #[test]
    fn reads_a_fake_tree() {
        let dir = std::env::temp_dir().join(format!("mop-procfs-{}", std::process::id()));
        let p = dir.join("77");
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::create_dir_all(p.join("ns")).unwrap();
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::os::unix::fs::symlink("/usr/sbin/nginx (deleted)", p.join("exe")).unwrap();
        std::os::unix::fs::symlink("socket:[4242]", p.join("fd/3")).unwrap();
        std::os::unix::fs::symlink("/dev/null", p.join("fd/0")).unwrap();
        std::os::unix::fs::symlink("net:[4026531840]", p.join("ns/net")).unwrap();
        std::fs::write(p.join("environ"), b"A=1\0OTEL_SERVICE_NAME=shop\0B\0").unwrap();
        let procfs = ProcFs::new(&dir);
        assert_eq!(procfs.pids().unwrap(), vec![77]);
        assert_eq!(procfs.exe(77).unwrap(), "/usr/sbin/nginx");
        assert_eq!(procfs.socket_inodes(77).unwrap(), vec![4242]);
        assert_eq!(procfs.net_ns(77).unwrap(), 4_026_531_840);
        let env = procfs.environ(77, &["OTEL_SERVICE_NAME", "B"]).unwrap();
        assert_eq!(
            env.get("OTEL_SERVICE_NAME").map(String::as_str),
            Some("shop")
        );
        assert_eq!(env.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
