//! Attaching the TLS probes: OpenSSL's `SSL_read`/`SSL_write` family in every library (or
//! statically linked executable) an instrumented process maps, once per distinct file, and
//! detached when no instrumented process uses it any more.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use mop_common::maps::{
    PROG_SSL_READ, PROG_SSL_READ_EX, PROG_SSL_RET, PROG_SSL_SET_FD, PROG_SSL_WRITE,
    PROG_SSL_WRITE_EX,
};

use super::CaptureError;
use crate::discovery::procfs::ProcFs;

/// Entry probes: (function, program). `_ex` exist from OpenSSL 1.1.1 on.
const ENTRY_PROBES: &[(&str, &str)] = &[
    ("SSL_read", PROG_SSL_READ),
    ("SSL_write", PROG_SSL_WRITE),
    ("SSL_read_ex", PROG_SSL_READ_EX),
    ("SSL_write_ex", PROG_SSL_WRITE_EX),
    ("SSL_set_fd", PROG_SSL_SET_FD),
];

/// Functions whose return reports plaintext (the same program serves all four).
const RETURN_PROBES: &[&str] = &["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"];

/// A file on disk, whatever path reaches it (containers see other paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The probes on one library file.
struct Library {
    path: PathBuf,
    links: Vec<(&'static str, UProbeLinkId)>,
    users: HashSet<u32>,
}

/// What the TLS probes are attached to.
#[derive(Default)]
pub struct TlsProbes {
    libraries: HashMap<FileId, Library>,
    /// Files known not to contain `SSL_read` (statically linked candidates that had none).
    without_tls: HashSet<FileId>,
    by_pid: HashMap<u32, Vec<FileId>>,
    /// Whether the kernel's refusal to attach uprobes at all has been logged.
    refusal_logged: bool,
}

/// True for the file names OpenSSL (and forks that keep its API) ship as.
fn is_tls_library(name: &str) -> bool {
    name.starts_with("libssl.so")
}

/// The files a process maps that may hold OpenSSL: its TLS libraries, and its own
/// executable (statically linked OpenSSL/BoringSSL with symbols).
fn candidates(maps: &str, exe: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode pathname
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let wanted = is_tls_library(name) || exe == Some(path);
        if wanted && path.starts_with('/') && !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
    }
    out
}

impl TlsProbes {
    /// Libraries with probes attached now.
    pub fn attached_libraries(&self) -> usize {
        self.libraries.len()
    }

    /// Programs attached now.
    pub fn attached_programs(&self) -> usize {
        self.libraries.values().map(|l| l.links.len()).sum()
    }

    /// Attaches to the TLS libraries `pid` maps that are not probed yet; safe to call again
    /// (a process may load libssl late). Returns how many libraries were newly attached.
    pub fn add_process(
        &mut self,
        ebpf: &mut Ebpf,
        procfs: &ProcFs,
        pid: u32,
        exe: Option<&str>,
    ) -> usize {
        let Ok(maps) = procfs.maps(pid) else {
            return 0;
        };
        let mut added = 0;
        for path in candidates(&maps, exe) {
            // Through the process's root, so a container's files are reached too.
            let host_path = procfs.in_root(pid, &path);
            let Ok(meta) = std::fs::metadata(&host_path) else {
                continue;
            };
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            if self.without_tls.contains(&id) {
                continue;
            }
            if let Some(lib) = self.libraries.get_mut(&id) {
                if lib.users.insert(pid) {
                    self.by_pid.entry(pid).or_default().push(id);
                }
                continue;
            }
            match attach_library(ebpf, &host_path) {
                Ok(links) => {
                    tracing::info!(
                        pid,
                        library = %path,
                        probes = links.len(),
                        "Attached TLS probes."
                    );
                    self.libraries.insert(
                        id,
                        Library {
                            path: host_path,
                            links,
                            users: HashSet::from([pid]),
                        },
                    );
                    self.by_pid.entry(pid).or_default().push(id);
                    added += 1;
                }
                Err(e) => {
                    if is_permission_denied(&e) && !self.refusal_logged {
                        self.refusal_logged = true;
                        tracing::warn!(
                            library = %path,
                            error = %e,
                            "The kernel refuses TLS probes: uprobes need CAP_SYS_ADMIN on kernels \
                             since 6.16 and on stable kernels since July 2025; TLS traffic is not \
                             traced, HTTP and gRPC in clear are."
                        );
                    } else {
                        tracing::debug!(library = %path, error = %e, "No TLS probes attached.");
                    }
                    self.without_tls.insert(id);
                }
            }
        }
        added
    }

    /// Forgets a process; detaches from libraries no instrumented process uses any more.
    pub fn remove_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let Some(ids) = self.by_pid.remove(&pid) else {
            return;
        };
        for id in ids {
            let unused = self.libraries.get_mut(&id).is_some_and(|lib| {
                lib.users.remove(&pid);
                lib.users.is_empty()
            });
            if unused && let Some(lib) = self.libraries.remove(&id) {
                detach_library(ebpf, lib);
            }
        }
    }

    /// True when `pid` has TLS probes on at least one of its libraries.
    pub fn covers(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }
}

/// The uprobe program `name`, loaded on first use.
fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, CaptureError> {
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingObject {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| CaptureError::Attach {
            program: name,
            source,
        })?;
    if program.fd().is_err() {
        program.load().map_err(|source| CaptureError::Attach {
            program: name,
            source,
        })?;
    }
    Ok(program)
}

/// Attaches every probe to one file; fails (and attaches nothing) without `SSL_read`.
/// True when an error's chain holds an `EACCES`/`EPERM` from the kernel.
fn is_permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        next = err.source();
    }
    false
}

fn attach_library(
    ebpf: &mut Ebpf,
    path: &Path,
) -> Result<Vec<(&'static str, UProbeLinkId)>, CaptureError> {
    let mut links = Vec::new();
    let plan = ENTRY_PROBES
        .iter()
        .copied()
        .chain(RETURN_PROBES.iter().map(|f| (*f, PROG_SSL_RET)));
    for (function, name) in plan {
        let attached = program(ebpf, name).and_then(|p| {
            p.attach(function, path, UProbeScope::AllProcesses)
                .map_err(|source| CaptureError::Attach {
                    program: name,
                    source,
                })
        });
        match attached {
            Ok(link) => links.push((name, link)),
            // Without SSL_read there is nothing to do here; the `_ex` variants and
            // SSL_set_fd are optional.
            Err(e) if function == "SSL_read" => {
                let lib = Library {
                    path: path.to_owned(),
                    links,
                    users: HashSet::new(),
                };
                detach_library(ebpf, lib);
                return Err(e);
            }
            Err(e) => tracing::debug!(function, error = %e, "Optional TLS probe not attached."),
        }
    }
    Ok(links)
}

fn detach_library(ebpf: &mut Ebpf, lib: Library) {
    for (name, link) in lib.links {
        if let Ok(p) = program(ebpf, name)
            && let Err(e) = p.detach(link)
        {
            tracing::warn!(program = name, library = %lib.path.display(), error = %e, "Cannot detach a TLS probe.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tls_libraries_and_the_executable() {
        let maps = "\
7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r--p 00001000 08:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r-xp 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f03-7f04 r-xp 00000000 08:01 125 /usr/sbin/nginx
7f04-7f05 rw-p 00000000 00:00 0 [heap]
7f05-7f06 r-xp 00000000 08:01 126 /opt/old/libssl.so.1.1
";
        assert_eq!(
            candidates(maps, Some("/usr/sbin/nginx")),
            vec![
                "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                "/usr/sbin/nginx",
                "/opt/old/libssl.so.1.1"
            ]
        );
        assert_eq!(candidates(maps, None).len(), 2);
    }
}
