//! Dropping the privileges the running agent no longer needs once its programs are attached.
//!
//! Before attach the agent needs more than afterwards: creating maps and loading programs
//! (`CAP_BPF` and `CAP_PERFMON`, or `CAP_SYS_ADMIN` in their place), raising `RLIMIT_MEMLOCK` on
//! old kernels (`CAP_SYS_RESOURCE`), binding the Prometheus port, and everything root has when
//! it runs as root. Afterwards it only
//! - updates the pid filter and reads the kernel counters (`bpf(2)` on its own map fds: `CAP_BPF`
//!   on kernels before 6.5, which check it for every command),
//! - attaches the TLS uprobes to processes discovered later (`perf_event_open(2)` of the uprobe
//!   PMU: `CAP_PERFMON`; program attach: `CAP_BPF`),
//! - reads `/proc` of other processes, their executables and libraries through
//!   `/proc/PID/root` (`CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`).
//!
//! [`drop_after_attach`] keeps exactly those four ([`KEPT`]) in the permitted and effective
//! sets, and `CAP_SYS_ADMIN` when the agent was given it: it stands in for `CAP_BPF` and
//! `CAP_PERFMON` on kernels before 5.8, and kernels with `perf: Revert to requiring
//! CAP_SYS_ADMIN for uprobes` (6.16, and the stable series since July 2025: its
//! `perf_uprobe_event_init` checks `capable(CAP_SYS_ADMIN)` again, not `perfmon_capable()`)
//! refuse the uprobe PMU without it, so TLS probes of processes discovered later need it. It clears the
//! inheritable and ambient sets, removes everything else from the bounding set (when allowed)
//! and sets `no_new_privs`, so that no later `execve` can regain what was dropped.
//!
//! Capabilities belong to threads, not processes, and the runtime's threads are running by
//! then. The calling thread changes its own sets, then signals every other thread of the
//! process with [`signal_number`], whose handler makes the same change in the receiving
//! thread (raw syscalls only: async-signal-safe), and checks each thread's
//! `/proc/self/task/TID/status` until all of them show the new sets.

use std::{
    fs, io,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// The capabilities the agent keeps after attach, by bit.
pub const KEPT: &[(u32, &str)] = &[
    (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_BPF, "CAP_BPF"),
];

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// How long the other threads get to apply the change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the drop did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// A `/proc/self` file could not be read or parsed.
    #[error("reading {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The calling thread's own change failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The call (`capset`, `prctl(PR_SET_NO_NEW_PRIVS)`).
        call: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Some threads still hold other sets after [`APPLY_TIMEOUT`].
    #[error("threads {tids:?} did not drop their capabilities")]
    Threads {
        /// The thread ids.
        tids: Vec<u32>,
    },
}

/// The capability sets of a thread, as `/proc/.../status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// `CapEff`.
    pub effective: u64,
    /// `CapPrm`.
    pub permitted: u64,
    /// `CapInh`.
    pub inheritable: u64,
    /// `CapBnd`.
    pub bounding: u64,
    /// `CapAmb`.
    pub ambient: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
}

impl CapSets {
    /// Parses the capability lines of a `status` file.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Self {
            effective: hex("CapEff:")?,
            permitted: hex("CapPrm:")?,
            inheritable: hex("CapInh:")?,
            bounding: hex("CapBnd:")?,
            ambient: hex("CapAmb:").unwrap_or(0),
            no_new_privs: field("NoNewPrivs:") == Some("1"),
        })
    }
}

/// The permitted set to keep out of `permitted`: [`KEPT`], and `CAP_SYS_ADMIN` when permitted
/// (see the module documentation: old kernels and the uprobe PMU of current ones need it).
pub fn kept_set(permitted: u64) -> u64 {
    let bit = |cap: u32| 1u64 << cap;
    let keep = KEPT
        .iter()
        .fold(bit(CAP_SYS_ADMIN), |set, &(cap, _)| set | bit(cap));
    permitted & keep
}

/// The set every thread moves to (permitted = effective), read by [`apply_here`].
static TARGET: AtomicU64 = AtomicU64::new(0);
/// The highest capability this kernel knows (`/proc/sys/kernel/cap_last_cap`).
static LAST_CAP: AtomicU32 = AtomicU32::new(40);

/// The real-time signal that asks a thread to apply [`TARGET`].
fn signal_number() -> libc::c_int {
    libc::SIGRTMAX() - 2
}

/// Makes the change in the calling thread: bounding set (while `CAP_SETPCAP` is still there),
/// ambient set, `no_new_privs`, then permitted, effective and inheritable. Raw syscalls only,
/// so that the signal handler may call it; returns the first failure's errno.
fn apply_here() -> Result<(), i32> {
    let target = TARGET.load(Ordering::SeqCst);
    let last = LAST_CAP.load(Ordering::SeqCst).min(63);
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY (all calls): prctl and capset read only the integers and the two structs passed,
    // which live on this stack for the duration of the call.
    unsafe {
        for cap in 0..=last {
            if target & (1 << cap) == 0 {
                // Fails with EPERM without CAP_SETPCAP (not root): the bounding set then stays,
                // and no_new_privs still keeps execve from using it.
                let _ = libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
            }
        }
        let _ = libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(errno());
        }
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let (lo, hi) = (target as u32, (target >> 32) as u32);
        let data = [
            CapData {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            CapData {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; it is restored so that the interrupted code sees its own.
    let saved = unsafe { *libc::__errno_location() };
    let _ = apply_here();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn read(path: &str) -> Result<String, PrivilegeError> {
    fs::read_to_string(path).map_err(|source| PrivilegeError::Proc {
        path: path.to_owned(),
        source,
    })
}

fn thread_ids() -> Result<Vec<u32>, PrivilegeError> {
    let dir = "/proc/self/task";
    let entries = fs::read_dir(dir).map_err(|source| PrivilegeError::Proc {
        path: dir.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// True when thread `tid` shows the target sets (a thread that exited meanwhile counts as done).
fn thread_done(tid: u32, target: u64) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return true;
    };
    CapSets::parse(&status).is_some_and(|s| {
        s.effective == target && s.permitted == target && s.inheritable == 0 && s.no_new_privs
    })
}

/// Drops every capability but [`kept_set`] in every thread of the process; returns the sets
/// kept. See the module documentation.
pub fn drop_after_attach() -> Result<u64, PrivilegeError> {
    let status = read("/proc/self/status")?;
    let current = CapSets::parse(&status).ok_or_else(|| PrivilegeError::Proc {
        path: "/proc/self/status".into(),
        source: io::Error::new(io::ErrorKind::InvalidData, "no capability lines"),
    })?;
    let target = kept_set(current.permitted);
    if let Ok(last) = read("/proc/sys/kernel/cap_last_cap")?.trim().parse() {
        LAST_CAP.store(last, Ordering::SeqCst);
    }
    TARGET.store(target, Ordering::SeqCst);
    // The handler first, so that no thread started from here on can miss the change.
    let signal = signal_number();
    // SAFETY: the handler only makes raw syscalls and touches atomics and errno.
    let previous = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &raw const action, &raw mut previous);
        previous
    };
    let result = broadcast(target, signal);
    // SAFETY: restores the action saved above.
    unsafe { libc::sigaction(signal, &raw const previous, std::ptr::null_mut()) };
    result.map(|()| target)
}

/// Applies [`TARGET`] here, then signals the other threads until every one shows it.
fn broadcast(target: u64, signal: libc::c_int) -> Result<(), PrivilegeError> {
    apply_here().map_err(|errno| PrivilegeError::Syscall {
        call: "capset",
        source: io::Error::from_raw_os_error(errno),
    })?;
    // SAFETY: getpid and gettid have no arguments.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let pending: Vec<u32> = thread_ids()?
            .into_iter()
            .filter(|&tid| tid != me.cast_unsigned() && !thread_done(tid, target))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PrivilegeError::Threads { tids: pending });
        }
        for &tid in &pending {
            // SAFETY: tgkill sends a signal; a thread that exited meanwhile yields ESRCH.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    pid,
                    libc::pid_t::try_from(tid).unwrap_or(0),
                    signal,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names of the capabilities in `set` that the agent knows by name, for the log line.
pub fn names(set: u64) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = KEPT
        .iter()
        .filter(|(cap, _)| set & (1 << cap) != 0)
        .map(|&(_, name)| name)
        .collect();
    if set & (1 << CAP_SYS_ADMIN) != 0 {
        out.push("CAP_SYS_ADMIN");
    }
    out
}

/// Drops what is not needed any more and logs the outcome; a failure is logged, never fatal
/// (the agent keeps working with the privileges it was started with).
pub fn drop_and_log() {
    match drop_after_attach() {
        Ok(kept) => tracing::info!(
            kept = names(kept).join(",").as_str(),
            "Dropped the capabilities not needed after attach."
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "Could not drop the capabilities not needed after attach; running with all of them."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CAP_SETPCAP`: root has it, the agent never keeps it.
    const SETPCAP_BIT: u64 = 1 << 8;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tmop\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        let sets = CapSets::parse(status).unwrap();
        assert_eq!(sets.effective, 0x1ff_ffff_ffff);
        assert_eq!(sets.permitted, 0x1ff_ffff_ffff);
        assert_eq!(sets.bounding, 0x1ff_ffff_ffff);
        assert!(sets.no_new_privs);
        assert!(CapSets::parse("Name: x\n").is_none());
    }

    #[test]
    fn keeps_the_four_and_admin_only_when_given() {
        let four = (1 << CAP_DAC_READ_SEARCH)
            | (1 << CAP_SYS_PTRACE)
            | (1 << CAP_PERFMON)
            | (1 << CAP_BPF);
        // Root: everything permitted, the four and SYS_ADMIN kept.
        assert_eq!(kept_set(0x1ff_ffff_ffff), four | (1 << CAP_SYS_ADMIN));
        // The DaemonSet's grant (with NET_ADMIN = 12): NET_ADMIN goes.
        assert_eq!(kept_set(four | (1 << 12)), four);
        // SYS_ADMIN in place of BPF and PERFMON stays.
        let admin = (1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
        assert_eq!(kept_set(admin | SETPCAP_BIT), admin);
        assert_eq!(
            names(admin),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        );
    }

    /// Set in the child process [`drops_in_every_thread`] starts.
    const CHILD_ENV: &str = "MOP_PRIVILEGES_TEST_CHILD";

    /// Run as root by `cargo xtask test` (`--ignored`): the drop reaches every thread of a
    /// multi-threaded process, threads blocked in a syscall included. It runs in a child process
    /// (this test binary again, filtered to [`drop_in_child`]) so that the other tests keep
    /// their privileges.
    #[test]
    #[ignore = "needs root: run as root by `cargo xtask test`"]
    fn drops_in_every_thread() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "capture::privileges::tests::drop_in_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child of [`drops_in_every_thread`]; does nothing elsewhere.
    #[test]
    #[ignore = "needs root: run by drops_in_every_thread in a child process"]
    fn drop_in_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let blocked = std::thread::spawn(move || rx.recv());
        let busy: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_millis(500))))
            .collect();
        let kept = drop_after_attach().unwrap();
        assert_eq!(kept & SETPCAP_BIT, 0);
        let tids = thread_ids().unwrap();
        assert!(tids.len() >= 5, "{tids:?}");
        for tid in tids {
            let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
            let sets = CapSets::parse(&status).unwrap();
            assert_eq!(
                (sets.effective, sets.permitted),
                (kept, kept),
                "thread {tid}"
            );
            assert_eq!(sets.bounding, kept, "thread {tid}");
            assert!(sets.no_new_privs, "thread {tid}");
        }
        // A thread started afterwards inherits the reduced sets.
        let later = std::thread::spawn(|| {
            CapSets::parse(&fs::read_to_string("/proc/thread-self/status").unwrap()).unwrap()
        });
        assert_eq!(later.join().unwrap().permitted, kept);
        tx.send(()).unwrap();
        blocked.join().unwrap().unwrap();
        for t in busy {
            t.join().unwrap();
        }
    }
}
