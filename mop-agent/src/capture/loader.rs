//! Loads the embedded eBPF object with this kernel's facts and attaches a capture path.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, RawTracePoint, SockOps},
};
use mop_common::{
    Counter, KernelConfig, MAX_CAPTURE_BYTES, SyscallOp,
    kfunc::{GLOBAL_KFUNC_CONFIG, KfuncConfig, MAP_KFUNC_INFLIGHT, MAP_SOCK_CONNS, MAP_SSL_SOCKS},
    maps::{
        COUNTER_SLOTS, FLAG_TCP_CONTEXT, FLAG_WATCH_EXEC, GLOBAL_CONFIG, MAP_CONNS, MAP_COUNTERS,
        MAP_EVENTS, MAP_INFLIGHT, MAP_PIDS, MAP_SSL_CALLS, MAP_SSL_FDS, MAP_SYSCALL_OPS,
        MAP_THREAD_CTX, MAX_CONNS, MAX_INFLIGHT, PROG_SCHED_EXEC, PROG_SOCKOPS, PROG_SYS_ENTER,
        PROG_SYS_EXIT,
    },
};

use super::{
    CaptureError,
    btf::Btf,
    kernel::{self, VMLINUX_BTF},
    paths::{self, AUTO_ORDER, KernelFacts, Refusal, RefusalReason},
    pid_filter::{PidFilter, ProcessMaps},
    sys,
};

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mop-agent-ebpf"));

/// The capture paths the agent knows, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePathKind {
    /// fentry/fexit on the kernel's TCP functions (BPF trampolines).
    Fentry,
    /// kprobes and kretprobes on the kernel's TCP functions.
    Kprobe,
    /// `sys_enter`/`sys_exit` raw tracepoints: works on every kernel with BPF ring buffers.
    Syscalls,
}

impl CapturePathKind {
    /// The name used in logs, config and the `mop_capture_path_info` metric.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Syscalls => "tracepoint",
        }
    }
}

/// Load-time settings of the capture stage, validated by `config`.
#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Bytes captured from the head of each buffer (at most [`MAX_CAPTURE_BYTES`]).
    pub capture_bytes: u32,
    /// Bytes captured from each buffer of an HTTP/2 connection.
    pub http2_capture_bytes: u32,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Unread bytes above which the kernel wakes the reader.
    pub wakeup_bytes: u32,
    /// Capacity of the kernel's connection table.
    pub max_connections: u32,
    /// The forced path, or `None` to pick the best that attaches.
    pub forced_path: Option<CapturePathKind>,
    /// Capture every newly exec'd program until discovery decides about it, so that a
    /// short-lived client matching `exe_path` is seen from its first request.
    pub watch_exec: bool,
    /// Carry trace context in a TCP option (`ebpf.context_propagation: tcp`): the kernel
    /// gives requests their ids and a `sock_ops` program on the cgroup v2 root writes and
    /// reads the option.
    pub tcp_context: bool,
}

/// The loaded programs; dropping it detaches every program and frees the maps it owns.
pub struct Probes {
    /// Keeps programs and links alive.
    ebpf: Ebpf,
    /// The path that is attached.
    pub path: CapturePathKind,
    /// How many programs are attached.
    pub attached: usize,
    /// The better paths `auto` tried first and why they were refused.
    pub refused: Vec<Refusal>,
}

impl Probes {
    /// The loaded object, for attaching per-process probes (TLS libraries).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// The per-CPU counters the programs keep.
pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// The sum over CPUs of one counter.
    pub fn read(&self, counter: Counter) -> u64 {
        self.map
            .get(&(counter as u32), 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }
}

/// Everything the stages need from a successful load.
pub struct Loaded {
    /// Programs and links.
    pub probes: Probes,
    /// The ring buffer the capture stage reads.
    pub ring: RingBuf<MapData>,
    /// The pid filter discovery fills.
    pub pids: PidFilter,
    /// Kernel-side counters for self-metrics.
    pub counters: KernelCounters,
}

/// Checks the host before anything else starts: the capabilities the agent needs, the
/// kernel's BTF and BPF ring buffers. Fails with one line naming what is missing.
pub fn preflight(tcp_context: bool) -> Result<(), CaptureError> {
    sys::check_privileges(tcp_context)?;
    sys::check_btf(Path::new(VMLINUX_BTF))?;
    // Kernels before 5.11 charge maps to RLIMIT_MEMLOCK, the ring buffer probe included.
    sys::raise_memlock_limit();
    sys::check_ring_buffer()
}

/// Map sizes of a load: the real ones for the chosen path, or tiny ones while `auto` probes
/// which path attaches (so that probing costs no memory and the maps of the paths not taken
/// are never allocated at full size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizing {
    Probe,
    For(CapturePathKind),
}

/// Entries of a map the loaded path does not use (LRU maps round up to the CPU count).
const UNUSED_ENTRIES: u32 = 64;
/// Ring buffer bytes while probing.
const PROBE_RING_BYTES: u32 = 64 << 10;

/// Loads the programs with this kernel's offsets and attaches the best capture path (or the
/// forced one). Call [`preflight`] first.
pub fn load(settings: &LoadSettings) -> Result<Loaded, CaptureError> {
    sys::raise_memlock_limit();
    let btf_data = std::fs::read(VMLINUX_BTF)
        .map_err(|e| CaptureError::Host(format!("cannot read {VMLINUX_BTF}: {e}")))?;
    let btf = Btf::parse(&btf_data)?;
    let config = KernelConfig {
        capture_bytes: settings.capture_bytes.min(MAX_CAPTURE_BYTES as u32),
        wakeup_bytes: settings.wakeup_bytes,
        flags: if settings.watch_exec {
            FLAG_WATCH_EXEC
        } else {
            0
        } | if settings.tcp_context {
            FLAG_TCP_CONTEXT
        } else {
            0
        },
        http2_capture_bytes: settings.http2_capture_bytes.min(MAX_CAPTURE_BYTES as u32),
        regs_arg_offsets: kernel::syscall_arg_offsets(&btf)?,
        offsets: kernel::kernel_offsets(&btf)?,
    };
    let kfunc = kernel::kfunc_config(&btf);
    let aya_btf = aya::Btf::from_sys_fs().map_err(|e| format!("reading {VMLINUX_BTF}: {e}"));
    let facts = KernelFacts {
        btf: &btf,
        aya_btf: aya_btf.as_ref().map_err(Clone::clone),
        kfunc_btf_error: kfunc.as_ref().err().map(|e| format!("kernel BTF: {e}")),
        kprobes: paths::kprobes_available(
            Path::new("/sys"),
            &[
                Path::new("/sys/kernel/tracing"),
                Path::new("/sys/kernel/debug/tracing"),
            ],
        ),
    };
    let kfunc = kfunc.unwrap_or_default();
    let open = |sizing| open(settings, &config, &kfunc, sizing);

    let (path, refused) = select_path(settings, &facts, open)?;
    let mut ebpf = open(Sizing::For(path))?;
    let mut attached = attach(&mut ebpf, path, &facts).map_err(|r| {
        if r.reason.is_kernel_limit() {
            CaptureError::PathUnavailable {
                path: path.as_str(),
                reason: r.detail,
            }
        } else {
            CaptureError::PathBroken {
                path: path.as_str(),
                detail: r.detail,
            }
        }
    })?;
    if settings.watch_exec {
        attach_raw_tracepoint(&mut ebpf, PROG_SCHED_EXEC, "sched_process_exec")?;
        attached += 1;
    }
    if settings.tcp_context {
        attached += attach_sock_ops(&mut ebpf);
    }
    let ring = RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?).map_err(|source| {
        CaptureError::Map {
            name: MAP_EVENTS,
            source,
        }
    })?;
    let pids = take_hash_map(&mut ebpf, MAP_PIDS)?;
    let leftovers = ProcessMaps {
        conns: take_hash_map(&mut ebpf, MAP_CONNS)?,
        inflight: take_hash_map(&mut ebpf, MAP_INFLIGHT)?,
        ssl_calls: take_hash_map(&mut ebpf, MAP_SSL_CALLS)?,
        ssl_fds: take_hash_map(&mut ebpf, MAP_SSL_FDS)?,
        thread_ctx: take_hash_map(&mut ebpf, MAP_THREAD_CTX)?,
        sock_conns: take_hash_map(&mut ebpf, MAP_SOCK_CONNS)?,
        kfunc_inflight: take_hash_map(&mut ebpf, MAP_KFUNC_INFLIGHT)?,
        ssl_socks: take_hash_map(&mut ebpf, MAP_SSL_SOCKS)?,
        walk_limit: 2 * [settings.max_connections, MAX_CONNS, MAX_INFLIGHT]
            .into_iter()
            .max()
            .unwrap_or(MAX_CONNS) as usize,
    };
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?).map_err(|source| {
        CaptureError::Map {
            name: MAP_COUNTERS,
            source,
        }
    })?;
    debug_assert_eq!(counters.len(), COUNTER_SLOTS);
    Ok(Loaded {
        probes: Probes {
            ebpf,
            path,
            attached,
            refused,
        },
        ring,
        pids: PidFilter::new(pids, leftovers),
        counters: KernelCounters { map: counters },
    })
}

/// The forced path, or what `auto` picks, with the refusals of the better paths.
fn select_path(
    settings: &LoadSettings,
    facts: &KernelFacts<'_>,
    open: impl Fn(Sizing) -> Result<Ebpf, CaptureError>,
) -> Result<(CapturePathKind, Vec<Refusal>), CaptureError> {
    match settings.forced_path {
        // The TCP-option carrier's hooks live in the syscall path (they key connections by
        // fd); the kernel-function paths would attach the carrier with nothing to carry.
        Some(path) if settings.tcp_context && path != CapturePathKind::Syscalls => {
            Err(CaptureError::PathUnavailable {
                path: path.as_str(),
                reason: "ebpf.context_propagation tcp/all needs the tracepoint path".into(),
            })
        }
        Some(path) => Ok((path, Vec::new())),
        None if settings.tcp_context => {
            let skipped = AUTO_ORDER
                .iter()
                .filter(|p| **p != CapturePathKind::Syscalls)
                .map(|&path| Refusal {
                    path,
                    reason: RefusalReason::ContextPropagation,
                    detail: "ebpf.context_propagation tcp/all needs the tracepoint path".into(),
                })
                .collect();
            Ok((CapturePathKind::Syscalls, skipped))
        }
        None => choose_path(facts, open),
    }
}

/// `auto`: probes each path, best first, on a throw-away load with tiny maps (dropping it
/// detaches); returns the first that attaches and the refusals of the better ones.
fn choose_path(
    facts: &KernelFacts<'_>,
    open: impl Fn(Sizing) -> Result<Ebpf, CaptureError>,
) -> Result<(CapturePathKind, Vec<Refusal>), CaptureError> {
    let mut fatal = None;
    let choice = paths::choose(&AUTO_ORDER, |path| match open(Sizing::Probe) {
        Ok(mut probe) => attach(&mut probe, path, facts).map(drop),
        Err(e) => {
            let detail = e.to_string();
            fatal.get_or_insert(e);
            Err(Refusal {
                path,
                reason: RefusalReason::LoadFailed,
                detail,
            })
        }
    });
    if let Some(e) = fatal {
        return Err(e);
    }
    let choice = choice.map_err(|refused| CaptureError::NoCapturePath {
        refusals: refused
            .iter()
            .map(|r| format!("{}: {}", r.path.as_str(), r.detail))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    Ok((choice.path, choice.refused))
}

/// Loads the object (no program yet) with this kernel's facts and the map sizes of `sizing`.
fn open(
    settings: &LoadSettings,
    config: &KernelConfig,
    kfunc: &KfuncConfig,
    sizing: Sizing,
) -> Result<Ebpf, CaptureError> {
    let mut loader = EbpfLoader::new();
    loader
        .override_global(GLOBAL_CONFIG, config, true)
        .override_global(GLOBAL_KFUNC_CONFIG, kfunc, true);
    let fd_maps = [MAP_CONNS, MAP_INFLIGHT];
    let sock_maps = [MAP_SOCK_CONNS, MAP_KFUNC_INFLIGHT, MAP_SSL_SOCKS];
    let (ring, unused): (u32, &[&str]) = match sizing {
        Sizing::Probe => (
            PROBE_RING_BYTES,
            &[
                MAP_CONNS,
                MAP_INFLIGHT,
                MAP_SOCK_CONNS,
                MAP_KFUNC_INFLIGHT,
                MAP_SSL_SOCKS,
            ],
        ),
        Sizing::For(CapturePathKind::Syscalls) => (settings.ring_buffer_bytes, &sock_maps),
        // The TLS return probe may still classify an fd (`MOP_CONNS`) before the socket
        // of its `SSL*` is known; a few entries are enough for that.
        Sizing::For(_) => (settings.ring_buffer_bytes, &fd_maps),
    };
    loader.map_max_entries(MAP_EVENTS, ring);
    for name in [MAP_CONNS, MAP_SOCK_CONNS] {
        if !unused.contains(&name) {
            loader.map_max_entries(name, settings.max_connections);
        }
    }
    for name in unused {
        loader.map_max_entries(name, UNUSED_ENTRIES);
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(CaptureError::Load)?;
    fill_syscall_ops(&mut ebpf)?;
    Ok(ebpf)
}

/// [`take_map`] as a hash map (plain or LRU) with these key and value types.
fn take_hash_map<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, CaptureError> {
    HashMap::try_from(take_map(ebpf, name)?).map_err(|source| CaptureError::Map { name, source })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or(CaptureError::MissingObject { kind: "map", name })
}

/// Writes the architecture's syscall numbers into the dispatch table.
fn fill_syscall_ops(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
    let map = ebpf
        .map_mut(MAP_SYSCALL_OPS)
        .ok_or(CaptureError::MissingObject {
            kind: "map",
            name: MAP_SYSCALL_OPS,
        })?;
    let mut ops: Array<&mut MapData, u8> =
        Array::try_from(map).map_err(|source| CaptureError::Map {
            name: MAP_SYSCALL_OPS,
            source,
        })?;
    for &(nr, op) in kernel::syscall_table() {
        debug_assert_ne!(op, SyscallOp::Ignore);
        ops.set(nr, op as u8, 0)
            .map_err(|source| CaptureError::Map {
                name: MAP_SYSCALL_OPS,
                source,
            })?;
    }
    Ok(())
}

/// Loads `prog` and attaches it to the raw tracepoint `tracepoint`.
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tracepoint: &str,
) -> Result<(), CaptureError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or(CaptureError::MissingObject {
            kind: "program",
            name: prog,
        })?
        .try_into()
        .map_err(|source| CaptureError::Attach {
            program: prog,
            source,
        })?;
    program.load().map_err(|source| CaptureError::Attach {
        program: prog,
        source,
    })?;
    program
        .attach(tracepoint)
        .map_err(|source| CaptureError::Attach {
            program: prog,
            source,
        })?;
    Ok(())
}

/// Attaches the trace-context `sock_ops` program to the cgroup v2 root; returns how many
/// programs were attached. Without it the kernel still gives requests their ids (so every
/// span of this node stays consistent), but no option crosses the wire: that is logged, not
/// fatal.
fn attach_sock_ops(ebpf: &mut Ebpf) -> usize {
    let attach = |ebpf: &mut Ebpf| -> Result<std::path::PathBuf, String> {
        let root = sys::cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
        let dir = std::fs::File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let program: &mut SockOps = ebpf
            .program_mut(PROG_SOCKOPS)
            .ok_or("the object has no sock_ops program")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        program.load().map_err(|e| format!("loading: {e}"))?;
        // On 5.7+ aya attaches with a BPF link, which coexists with other programs on the
        // cgroup and refuses the ALLOW_MULTI flag; `Single` passes no flag. (The option
        // helpers need 5.10, so the older attach never runs.)
        program
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|e| format!("attaching to {}: {e}", root.display()))?;
        Ok(root)
    };
    match attach(ebpf) {
        Ok(root) => {
            tracing::info!(cgroup = %root.display(), "trace context travels in TCP options");
            1
        }
        Err(why) => {
            tracing::warn!(
                "ebpf.context_propagation: the TCP option carrier is unavailable ({why}); \
                 traces will not continue across nodes"
            );
            0
        }
    }
}

/// Loads and attaches the programs of `path`; returns how many were attached.
fn attach(
    ebpf: &mut Ebpf,
    path: CapturePathKind,
    facts: &KernelFacts<'_>,
) -> Result<usize, Refusal> {
    match path {
        CapturePathKind::Fentry => paths::attach_fentry(ebpf, facts),
        CapturePathKind::Kprobe => paths::attach_kprobe(ebpf, facts),
        CapturePathKind::Syscalls => {
            for (prog, tracepoint) in [(PROG_SYS_ENTER, "sys_enter"), (PROG_SYS_EXIT, "sys_exit")] {
                attach_raw_tracepoint(ebpf, prog, tracepoint).map_err(|e| Refusal {
                    path,
                    reason: RefusalReason::LoadFailed,
                    detail: e.to_string(),
                })?;
            }
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map and program userspace looks up by name exists in the embedded object.
    #[test]
    fn object_has_every_named_map_and_program() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).unwrap();
        for map in [
            MAP_EVENTS,
            MAP_PIDS,
            MAP_SYSCALL_OPS,
            MAP_CONNS,
            MAP_COUNTERS,
            MAP_INFLIGHT,
            MAP_SOCK_CONNS,
            MAP_KFUNC_INFLIGHT,
            MAP_SSL_SOCKS,
        ] {
            assert!(obj.maps.contains_key(map), "map {map} missing");
        }
        for prog in [PROG_SYS_ENTER, PROG_SYS_EXIT, PROG_SCHED_EXEC, PROG_SOCKOPS] {
            assert!(obj.programs.contains_key(prog), "program {prog} missing");
        }
        let kfuncs = mop_common::kfunc::FENTRY_PROGRAMS
            .iter()
            .chain(mop_common::kfunc::KPROBE_PROGRAMS);
        for prog in kfuncs {
            assert!(
                obj.programs.contains_key(prog.name),
                "program {} missing",
                prog.name
            );
        }
    }
}
