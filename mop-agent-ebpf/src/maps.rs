//! Every map of the capture programs and the load-time configuration global.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mop_common::{
    ConnAddrs, ConnInfo, ConnKey, Counter, InflightSyscall, KernelConfig, KernelOffsets,
    MAX_CAPTURE_BYTES, SslCall, SslKey, TraceCtx,
    event::DataEventHeader,
    kfunc::{ITER_TYPE_NONE, KfuncConfig, KfuncInflight, SockKey},
    maps::{COUNTER_SLOTS, MAX_CONNS, MAX_INFLIGHT, MAX_PIDS},
    ops::SYSCALL_TABLE_LEN,
};

/// Default ring buffer size; userspace resizes it from `ebpf.ring_buffer_size` at load.
const DEFAULT_RING_BYTES: u32 = 16 << 20;

#[map(name = "MOP_EVENTS")]
pub(crate) static MOP_EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "MOP_PIDS")]
pub(crate) static MOP_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PIDS, 0);

#[map(name = "MOP_SYSCALL_OPS")]
pub(crate) static MOP_SYSCALL_OPS: Array<u8> = Array::with_max_entries(SYSCALL_TABLE_LEN, 0);

#[map(name = "MOP_INFLIGHT")]
pub(crate) static MOP_INFLIGHT: LruHashMap<u64, InflightSyscall> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

#[map(name = "MOP_CONNS")]
pub(crate) static MOP_CONNS: LruHashMap<ConnKey, ConnInfo> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "MOP_SSL_CALLS")]
pub(crate) static MOP_SSL_CALLS: LruHashMap<u64, SslCall> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

#[map(name = "MOP_SSL_FDS")]
pub(crate) static MOP_SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(MAX_CONNS, 0);

// The kernel-function paths (fentry/fexit, kprobes): see `kfuncs.rs`.

#[map(name = "MOP_SOCK_CONNS")]
pub(crate) static MOP_SOCK_CONNS: LruHashMap<SockKey, ConnInfo> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "MOP_KFUNC_INFLIGHT")]
pub(crate) static MOP_KFUNC_INFLIGHT: LruHashMap<u64, KfuncInflight> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

#[map(name = "MOP_SSL_SOCKS")]
pub(crate) static MOP_SSL_SOCKS: LruHashMap<SslKey, u64> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

/// Set by the agent at load time from BTF (`iov_iter` layout); see `KfuncConfig`.
#[unsafe(no_mangle)]
pub(crate) static MOP_KFUNC_CONFIG: Global<KfuncConfig> = Global::new(KfuncConfig {
    msghdr_iter: 0,
    iter_type: 0,
    iter_type_mask: 0,
    iter_iovec: ITER_TYPE_NONE,
    iter_ubuf: ITER_TYPE_NONE,
    iter_iov_offset: 0,
    iter_iov: 0,
    iter_ubuf_ptr: 0,
    iter_nr_segs: 0,
    pad: 0,
});

#[map(name = "MOP_COUNTERS")]
pub(crate) static MOP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "MOP_THREAD_CTX")]
pub(crate) static MOP_THREAD_CTX: LruHashMap<u64, TraceCtx> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

#[map(name = "MOP_FLOW_OUT")]
pub(crate) static MOP_FLOW_OUT: LruHashMap<ConnAddrs, TraceCtx> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

#[map(name = "MOP_FLOW_IN")]
pub(crate) static MOP_FLOW_IN: LruHashMap<ConnAddrs, TraceCtx> =
    LruHashMap::with_max_entries(MAX_CONNS, 0);

/// A record assembled before it is copied to the ring buffer.
///
/// The payload area is twice the capture maximum so that the verifier can prove a copy of at
/// most `MAX_CAPTURE_BYTES` at an offset below `MAX_CAPTURE_BYTES` stays inside it.
#[repr(C)]
pub(crate) struct EventBuffer {
    pub(crate) header: DataEventHeader,
    pub(crate) data: [u8; MAX_CAPTURE_BYTES * 2],
}

#[map(name = "MOP_SCRATCH")]
pub(crate) static MOP_SCRATCH: PerCpuArray<EventBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Set by the agent at load time (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
pub(crate) static MOP_CONFIG: Global<KernelConfig> = Global::new(KernelConfig {
    capture_bytes: 256,
    wakeup_bytes: 0,
    flags: 0,
    http2_capture_bytes: 4096,
    regs_arg_offsets: [0; 6],
    offsets: KernelOffsets {
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_private_data: 0,
        socket_type: 0,
        socket_file: 0,
        socket_sk: 0,
        sk_family: 0,
        sk_daddr: 0,
        sk_rcv_saddr: 0,
        sk_dport: 0,
        sk_num: 0,
        sk_v6_daddr: 0,
        sk_v6_rcv_saddr: 0,
        msghdr_iov: 0,
        msghdr_iovlen: 0,
        tcp_copied_seq: 0,
        tcp_write_seq: 0,
        binprm_filename: 0,
    },
});

/// Adds one to a per-CPU counter.
#[inline(always)]
pub(crate) fn bump(counter: Counter) {
    if let Some(slot) = MOP_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the per-CPU slot belongs to this CPU for the duration of the program.
        unsafe { *slot += 1 };
    }
}
