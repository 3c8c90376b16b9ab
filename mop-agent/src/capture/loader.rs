//! Loads the embedded eBPF object with this kernel's facts and attaches a capture path.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, RawTracePoint, SockOps},
};
use mop_common::{
    Counter, KernelConfig, MAX_CAPTURE_BYTES, SyscallOp,
    maps::{
        COUNTER_SLOTS, FLAG_TCP_CONTEXT, FLAG_WATCH_EXEC, GLOBAL_CONFIG, MAP_CONNS, MAP_COUNTERS,
        MAP_EVENTS, MAP_PIDS, MAP_SYSCALL_OPS, PID_SELECTED, PROG_SCHED_EXEC, PROG_SOCKOPS,
        PROG_SYS_ENTER, PROG_SYS_EXIT,
    },
};

use super::{
    CaptureError,
    btf::Btf,
    kernel::{self, VMLINUX_BTF},
    sys,
};

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mop-agent-ebpf"));

/// The capture paths the agent knows, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePathKind {
    /// fentry/fexit on the kernel's TCP functions (not built yet).
    Fentry,
    /// kprobes on the kernel's TCP functions (not built yet).
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
}

impl Probes {
    /// The loaded object, for attaching per-process probes (TLS libraries).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Where discovery selects processes: the kernel's pid filter.
pub struct PidFilter {
    map: HashMap<MapData, u32, u32>,
}

impl PidFilter {
    /// Starts capturing `pid`.
    pub fn add(&mut self, pid: u32) -> Result<(), CaptureError> {
        self.map
            .insert(pid, PID_SELECTED, 0)
            .map_err(|source| CaptureError::Map {
                name: MAP_PIDS,
                source,
            })
    }

    /// Stops capturing `pid`; a pid that was not there is fine.
    pub fn remove(&mut self, pid: u32) {
        let _ = self.map.remove(&pid);
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

/// Checks the host before anything else starts: the capabilities the agent needs and the
/// kernel's BTF. Fails with one line naming what is missing.
pub fn preflight(tcp_context: bool) -> Result<(), CaptureError> {
    sys::check_privileges(tcp_context)?;
    sys::check_btf(std::path::Path::new(VMLINUX_BTF))
}

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
    let mut ebpf = EbpfLoader::new()
        .override_global(GLOBAL_CONFIG, &config, true)
        .map_max_entries(MAP_EVENTS, settings.ring_buffer_bytes)
        .map_max_entries(MAP_CONNS, settings.max_connections)
        .load(EBPF_OBJECT)
        .map_err(CaptureError::Load)?;
    fill_syscall_ops(&mut ebpf)?;
    let path = settings.forced_path.unwrap_or(CapturePathKind::Syscalls);
    let mut attached = attach(&mut ebpf, path)?;
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
    let pids =
        HashMap::try_from(take_map(&mut ebpf, MAP_PIDS)?).map_err(|source| CaptureError::Map {
            name: MAP_PIDS,
            source,
        })?;
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
        },
        ring,
        pids: PidFilter { map: pids },
        counters: KernelCounters { map: counters },
    })
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

/// Attaches the programs of `path`; returns how many were attached.
fn attach(ebpf: &mut Ebpf, path: CapturePathKind) -> Result<usize, CaptureError> {
    match path {
        CapturePathKind::Syscalls => {
            attach_raw_tracepoint(ebpf, PROG_SYS_ENTER, "sys_enter")?;
            attach_raw_tracepoint(ebpf, PROG_SYS_EXIT, "sys_exit")?;
            Ok(2)
        }
        other => Err(CaptureError::PathUnavailable {
            path: other.as_str(),
            reason: "not implemented in this build".into(),
        }),
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
        ] {
            assert!(obj.maps.contains_key(map), "map {map} missing");
        }
        for prog in [PROG_SYS_ENTER, PROG_SYS_EXIT, PROG_SCHED_EXEC, PROG_SOCKOPS] {
            assert!(obj.programs.contains_key(prog), "program {prog} missing");
        }
    }
}
