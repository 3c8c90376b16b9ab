//! Checks of the host before anything is loaded: privileges, kernel interfaces, limits.
//!
//! Each check fails with one line naming what is missing, so that the agent can exit at once
//! with a message a user can act on.

use std::path::Path;

use super::CaptureError;

/// A Linux capability the agent needs, and why.
struct Needed {
    bit: u32,
    name: &'static str,
    why: &'static str,
}

/// `CAP_SYS_ADMIN` stands in for `CAP_BPF` + `CAP_PERFMON` on kernels before 5.8 and for root.
const CAP_SYS_ADMIN: u32 = 21;

/// The capabilities the agent needs (the `DaemonSet` grants exactly these).
const NEEDED: &[Needed] = &[
    Needed {
        bit: 39,
        name: "CAP_BPF",
        why: "to load eBPF programs and create maps",
    },
    Needed {
        bit: 38,
        name: "CAP_PERFMON",
        why: "to attach tracing programs and read kernel memory from them",
    },
    Needed {
        bit: 19,
        name: "CAP_SYS_PTRACE",
        why: "to read /proc/PID/exe, environ and fd of other processes",
    },
    Needed {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        why: "to list /proc/PID/fd of processes owned by other users",
    },
];

/// Needed too when trace context travels in TCP options: `sock_ops` programs are "net admin"
/// program types, and attaching one to the cgroup v2 root is a network administration act.
const NET_ADMIN: Needed = Needed {
    bit: 12,
    name: "CAP_NET_ADMIN",
    why: "to attach the sock_ops program of ebpf.context_propagation: tcp to the cgroup v2 root",
};

/// Parses the effective capability set from the text of `/proc/self/status`.
fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The first needed capability missing from `caps`, if any; `CAP_NET_ADMIN` counts only with
/// `tcp_context`.
fn first_missing(caps: u64, tcp_context: bool) -> Option<&'static Needed> {
    let has = |bit: u32| caps & (1 << bit) != 0;
    let extra: &'static [Needed] = if tcp_context {
        std::slice::from_ref(&NET_ADMIN)
    } else {
        &[]
    };
    NEEDED.iter().chain(extra).find(|n| {
        let bpf_like = n.bit == 39 || n.bit == 38;
        !(has(n.bit) || (bpf_like && has(CAP_SYS_ADMIN)))
    })
}

/// Fails naming the first capability the process lacks.
pub fn check_privileges(tcp_context: bool) -> Result<(), CaptureError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| CaptureError::Host(format!("cannot read /proc/self/status: {e}")))?;
    let caps = effective_caps(&status)
        .ok_or_else(|| CaptureError::Host("no CapEff line in /proc/self/status".into()))?;
    match first_missing(caps, tcp_context) {
        None => Ok(()),
        Some(n) => Err(CaptureError::MissingCapability {
            name: n.name,
            why: n.why,
        }),
    }
}

/// Fails when the kernel does not publish its BTF, which the programs' offsets come from.
pub fn check_btf(path: &Path) -> Result<(), CaptureError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CaptureError::Host(format!(
            "{} is missing: the kernel needs CONFIG_DEBUG_INFO_BTF=y",
            path.display()
        )))
    }
}

/// Fails when the kernel has no BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`, Linux 5.8), which
/// every capture path writes its records to.
pub fn check_ring_buffer() -> Result<(), CaptureError> {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |r| r.trim().to_owned());
            Err(CaptureError::Host(format!(
                "kernel {release} has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8): \
                 mop needs Linux 5.8 or newer"
            )))
        }
        // The probe itself failed (e.g. a seccomp filter): let the load report what it finds.
        Err(e) => {
            tracing::debug!(error = %e, "Could not probe for BPF ring buffers.");
            Ok(())
        }
    }
}

/// Raises `RLIMIT_MEMLOCK` for kernels that still charge BPF maps to it (before 5.11).
///
/// Newer kernels account BPF memory to the cgroup and may refuse the change; that is harmless,
/// so a failure is only logged.
pub fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const limit) };
    if ret != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "Could not raise RLIMIT_MEMLOCK; kernels from 5.11 do not need it."
        );
    }
}

/// Runs of this process's eBPF programs the kernel skipped because the program was already
/// running on that CPU (`recursion_misses` in each program fd's fdinfo, kernels 5.12+).
///
/// On kernels whose syscall tracepoints run preemptible (7.x) a preempted program makes the
/// next task on that CPU skip it: those syscalls are never reported, so they count as lost.
pub fn program_recursion_misses() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("prog_type:"))
        .map(|info| parse_recursion_misses(&info))
        .sum()
}

fn parse_recursion_misses(fdinfo: &str) -> u64 {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_recursion_misses() {
        let info =
            "pos:\t0\nflags:\t02000002\nprog_type:\t17\nprog_id:\t42\nrecursion_misses:\t31\n";
        assert_eq!(super::parse_recursion_misses(info), 31);
        assert_eq!(super::parse_recursion_misses("prog_type:\t17\n"), 0);
    }

    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn names_the_first_missing_capability() {
        assert!(first_missing(u64::MAX, true).is_none());
        assert_eq!(first_missing(0, false).map(|n| n.name), Some("CAP_BPF"));
        // CAP_SYS_ADMIN covers BPF and PERFMON but not ptrace.
        let admin = 1 << CAP_SYS_ADMIN;
        assert_eq!(
            first_missing(admin, false).map(|n| n.name),
            Some("CAP_SYS_PTRACE")
        );
        let all = (1 << 39) | (1 << 38) | (1 << 19) | (1 << 2);
        assert!(first_missing(all, false).is_none());
        // The TCP-option carrier needs CAP_NET_ADMIN on top.
        assert_eq!(
            first_missing(all, true).map(|n| n.name),
            Some("CAP_NET_ADMIN")
        );
        assert!(first_missing(all | (1 << 12), true).is_none());
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones); `None` without one.
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    cgroup2_root_in(&mounts)
}

/// [`cgroup2_root`] over the text of a mounts file.
fn cgroup2_root_in(mounts: &str) -> Option<std::path::PathBuf> {
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then_some(point)
        })
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| points.contains(p))
        .or_else(|| points.first().copied())
        .map(std::path::PathBuf::from)
}

#[cfg(test)]
mod cgroup_tests {
    use super::cgroup2_root_in;

    #[test]
    fn finds_the_unified_and_the_hybrid_cgroup2_mount() {
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            cgroup2_root_in(unified).unwrap().to_str(),
            Some("/sys/fs/cgroup")
        );
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            cgroup2_root_in(hybrid).unwrap().to_str(),
            Some("/sys/fs/cgroup/unified")
        );
        assert!(cgroup2_root_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n").is_none());
    }
}
