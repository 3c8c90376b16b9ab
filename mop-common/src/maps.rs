//! Map names, keys and values, and the load-time configuration of the eBPF programs.

use crate::event::ConnAddrs;

/// Ring buffer of [`crate::DataEventHeader`] records.
pub const MAP_EVENTS: &str = "MOP_EVENTS";
/// `HashMap<u32 pid, u32 flags>`: the processes to capture, filled by discovery.
pub const MAP_PIDS: &str = "MOP_PIDS";
/// `Array<u8>` indexed by syscall number: the [`crate::SyscallOp`] of each syscall.
pub const MAP_SYSCALL_OPS: &str = "MOP_SYSCALL_OPS";
/// `HashMap<u64 pid_tgid, InflightSyscall>`: arguments saved at syscall entry.
pub const MAP_INFLIGHT: &str = "MOP_INFLIGHT";
/// `LruHashMap<ConnKey, ConnInfo>`: what the kernel side knows about each `(pid, fd)`.
pub const MAP_CONNS: &str = "MOP_CONNS";
/// `PerCpuArray<u64>` of [`Counter`]s.
pub const MAP_COUNTERS: &str = "MOP_COUNTERS";
/// `PerCpuArray` scratch space where a record is assembled before it is copied out.
pub const MAP_SCRATCH: &str = "MOP_SCRATCH";
/// Name of the `.rodata` global holding the [`KernelConfig`].
pub const GLOBAL_CONFIG: &str = "MOP_CONFIG";

/// Program entering every syscall (`raw_tracepoint/sys_enter`) on the syscall capture path.
pub const PROG_SYS_ENTER: &str = "mop_sys_enter";
/// Program leaving every syscall (`raw_tracepoint/sys_exit`) on the syscall capture path.
pub const PROG_SYS_EXIT: &str = "mop_sys_exit";
/// uprobe on `SSL_read(ssl, buf, num)`.
pub const PROG_SSL_READ: &str = "mop_ssl_read";
/// uprobe on `SSL_write(ssl, buf, num)`.
pub const PROG_SSL_WRITE: &str = "mop_ssl_write";
/// uprobe on `SSL_read_ex(ssl, buf, num, *readbytes)`.
pub const PROG_SSL_READ_EX: &str = "mop_ssl_read_ex";
/// uprobe on `SSL_write_ex(ssl, buf, num, *written)`.
pub const PROG_SSL_WRITE_EX: &str = "mop_ssl_write_ex";
/// uretprobe attached to all four functions above: reports the plaintext.
pub const PROG_SSL_RET: &str = "mop_ssl_ret";
/// uprobe on `SSL_set_fd(ssl, fd)`: remembers which socket an `SSL*` uses.
pub const PROG_SSL_SET_FD: &str = "mop_ssl_set_fd";
/// `HashMap<u64 pid_tgid, SslCall>`: TLS calls in progress.
pub const MAP_SSL_CALLS: &str = "MOP_SSL_CALLS";
/// `LruHashMap<SslKey, i32 fd>`: the socket behind each `SSL*`.
pub const MAP_SSL_FDS: &str = "MOP_SSL_FDS";

/// Program on `raw_tracepoint/sched_process_exec`: new programs are captured at once, pending
/// discovery's decision.
pub const PROG_SCHED_EXEC: &str = "mop_sched_exec";

/// `MOP_PIDS` value: discovery selected the process.
pub const PID_SELECTED: u32 = 1;
/// `MOP_PIDS` value: the process just called `execve`; discovery has not decided yet.
pub const PID_PENDING: u32 = 2;

/// `KernelConfig::flags` bit: report every `execve` and capture the new program until
/// discovery decides (so a short-lived client is seen from its first request).
pub const FLAG_WATCH_EXEC: u32 = 1;
/// `KernelConfig::flags` bit: propagate trace context in a TCP option (`ebpf.context_propagation:
/// tcp`): the kernel gives requests their ids as they start and writes the client's into the
/// first packet of each request.
pub const FLAG_TCP_CONTEXT: u32 = 2;

/// `LruHashMap<u64 pid_tgid, TraceCtx>`: the request each thread is serving (TCP propagation).
pub const MAP_THREAD_CTX: &str = "MOP_THREAD_CTX";
/// `LruHashMap<ConnAddrs, TraceCtx>`: context to write into a socket's next outgoing packet.
pub const MAP_FLOW_OUT: &str = "MOP_FLOW_OUT";
/// `LruHashMap<ConnAddrs, TraceCtx>`: context read from a socket's last incoming option.
pub const MAP_FLOW_IN: &str = "MOP_FLOW_IN";
/// `sock_ops` program on the cgroup v2 root: writes and parses the trace-context TCP option.
pub const PROG_SOCKOPS: &str = "mop_sockops";

/// TCP option kind of the trace-context option (RFC 6994 experimental, with an `ExID`).
pub const TCP_OPT_KIND: u8 = 254;
/// RFC 6994 experiment id of mop's option (`mo`).
pub const TCP_OPT_EXID: u16 = 0x6d6f;
/// Length of the option: kind, length, `ExID`, trace id, span id.
pub const TCP_OPT_LEN: u8 = 28;

/// Capacity of [`MAP_PIDS`]: the most processes one agent instruments.
pub const MAX_PIDS: u32 = 16_384;
/// Capacity of [`MAP_INFLIGHT`]: threads of instrumented processes inside a captured syscall.
pub const MAX_INFLIGHT: u32 = 16_384;
/// Default capacity of [`MAP_CONNS`] (least recently used entries are evicted).
pub const MAX_CONNS: u32 = 65_536;

/// Counters kept per CPU by the eBPF programs; the agent sums and exports them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records written to the ring buffer.
    EventsSubmitted = 0,
    /// Records lost because the ring buffer was full.
    RingbufFull = 1,
    /// Syscalls not captured because [`MAP_INFLIGHT`] was full.
    InflightFull = 2,
    /// Socket lookups (fd to `struct sock`) that failed to read kernel memory.
    SocketLookupFailed = 3,
    /// Payload copies from user memory that failed (the head was not captured).
    ReadUserFailed = 4,
    /// Connections inserted into [`MAP_CONNS`].
    ConnsTracked = 5,
    /// TLS plaintext not reported because the call's socket was not known.
    TlsNoSocket = 6,
}

/// Number of counter slots in [`MAP_COUNTERS`].
pub const COUNTER_SLOTS: u32 = 8;

/// Key of [`MAP_CONNS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Process id.
    pub pid: u32,
    /// File descriptor.
    pub fd: i32,
}

/// `ConnInfo::kind`: the fd is a TCP socket over IPv4 or IPv6.
pub const CONN_TCP: u32 = 1;
/// `ConnInfo::kind`: the fd is something else (file, pipe, UDP, Unix socket); ignored until
/// it is closed.
pub const CONN_OTHER: u32 = 2;

/// Value of [`MAP_CONNS`].
///
/// `conn_id` is the address of the kernel's `struct sock`: every fd of one socket (dup'd or
/// inherited within a process) reports the same connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// See [`crate::DataEventHeader::conn_id`]; the `struct sock` address for TCP.
    pub conn_id: u64,
    /// The socket's addresses (zero for [`CONN_OTHER`]).
    pub addrs: ConnAddrs,
    /// [`CONN_TCP`] or [`CONN_OTHER`].
    pub kind: u32,
    /// See [`crate::DataEventHeader::role`].
    pub role: u32,
    /// `PROTO_*`: what the connection speaks, as far as capture needs to know.
    pub proto: u32,
    /// `CONN_FLAG_*` bits.
    pub flags: u32,
}

/// `ConnInfo::flags`: the connection carries TLS; its syscall bytes are ciphertext and are
/// never reported (its plaintext comes from the TLS library probes instead).
pub const CONN_FLAG_TLS: u32 = 1;
/// `ConnInfo::flags`: data has been seen on the connection (request starts are direction
/// flips after the first data).
pub const CONN_FLAG_SEEN_DATA: u32 = 2;
/// `ConnInfo::flags`: the last data moved out of the process.
pub const CONN_FLAG_LAST_EGRESS: u32 = 4;
/// `ConnInfo::flags`: the process is the server end (accepted, or its first data was read).
pub const CONN_FLAG_SERVER_END: u32 = 8;

/// `ConnInfo::proto`: no payload seen yet; the next data event peeks at its first bytes.
pub const PROTO_UNKNOWN: u32 = 0;
/// `ConnInfo::proto`: not HTTP/2 (HTTP/1 or anything else): the normal capture window.
pub const PROTO_OTHER: u32 = 1;
/// `ConnInfo::proto`: HTTP/2 (client preface seen, or userspace recognised frames): the
/// larger HTTP/2 capture window, so HPACK header blocks arrive whole.
pub const PROTO_HTTP2: u32 = 2;

/// Trace context the kernel assigns to a request as it starts (TCP-option propagation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtx {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// This request's span id.
    pub span_id: [u8; 8],
    /// The parent span (zero for none): the remote client's span (from the option), or the
    /// request this thread serves.
    pub parent_span_id: [u8; 8],
}

/// `SslCall::op`: `SSL_read` or `SSL_read_ex`.
pub const SSL_OP_READ: u32 = 1;
/// `SslCall::op`: `SSL_write` or `SSL_write_ex`.
pub const SSL_OP_WRITE: u32 = 2;

/// Value of [`MAP_SSL_CALLS`]: a TLS library call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SslCall {
    /// The `SSL*`.
    pub ssl: u64,
    /// The plaintext buffer.
    pub buf: u64,
    /// Where the `_ex` variants store the byte count (0 for `SSL_read`/`SSL_write`).
    pub len_out: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at entry.
    pub enter_ns: u64,
    /// The socket, once a syscall inside the call or `SSL_set_fd` revealed it; else -1.
    pub fd: i32,
    /// `SSL_OP_READ` or `SSL_OP_WRITE`.
    pub op: u32,
}

/// Key of [`MAP_SSL_FDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SslKey {
    /// Process id.
    pub pid: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// The `SSL*` in that process.
    pub ssl: u64,
}

/// `InflightSyscall::op` bit: the syscall runs inside a TLS library call, so its bytes are
/// ciphertext.
pub const INFLIGHT_IN_TLS: u32 = 0x100;

/// Value of [`MAP_INFLIGHT`]: what a syscall's exit needs from its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InflightSyscall {
    /// `CLOCK_MONOTONIC` nanoseconds at entry.
    pub enter_ns: u64,
    /// First argument that points into user memory (buffer, iovec array or msghdr).
    pub buf: u64,
    /// Length argument (buffer length or iovec count).
    pub len: u64,
    /// The file descriptor argument.
    pub fd: i32,
    /// A [`crate::SyscallOp`] as `u32`.
    pub op: u32,
}

/// Byte offsets of kernel struct members, read from the running kernel's BTF at load time.
///
/// aya has no CO-RE relocations for Rust programs, so the agent resolves these members in
/// `/sys/kernel/btf/vmlinux` and hands them to the programs as a read-only global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: u32,
    /// `fdtable.fd`.
    pub fdt_fd: u32,
    /// `file.private_data`.
    pub file_private_data: u32,
    /// `socket.type`.
    pub socket_type: u32,
    /// `socket.file`.
    pub socket_file: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock_common.skc_family` (as a member of `sock`).
    pub sk_family: u32,
    /// `sock_common.skc_daddr`.
    pub sk_daddr: u32,
    /// `sock_common.skc_rcv_saddr`.
    pub sk_rcv_saddr: u32,
    /// `sock_common.skc_dport`.
    pub sk_dport: u32,
    /// `sock_common.skc_num`.
    pub sk_num: u32,
    /// `sock_common.skc_v6_daddr`.
    pub sk_v6_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr`.
    pub sk_v6_rcv_saddr: u32,
    /// `user_msghdr.msg_iov`.
    pub msghdr_iov: u32,
    /// `user_msghdr.msg_iovlen`.
    pub msghdr_iovlen: u32,
    /// `tcp_sock.copied_seq` (`tcp_sock` starts with its `sock`).
    pub tcp_copied_seq: u32,
    /// `tcp_sock.write_seq`.
    pub tcp_write_seq: u32,
    /// `linux_binprm.filename` (the path a process exec'd).
    pub binprm_filename: u32,
}

/// The read-only global [`GLOBAL_CONFIG`] of the eBPF programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Bytes of each buffer to capture; at most [`crate::MAX_CAPTURE_BYTES`].
    pub capture_bytes: u32,
    /// Unread bytes in the ring buffer above which a record wakes the reader up; below it the
    /// reader finds records on its next poll tick, which saves a wake-up per record under load.
    pub wakeup_bytes: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bytes captured from each buffer of an HTTP/2 connection (at most
    /// [`crate::MAX_CAPTURE_BYTES`]).
    pub http2_capture_bytes: u32,
    /// Offsets of the six syscall arguments in the architecture's `struct pt_regs`.
    pub regs_arg_offsets: [u32; 6],
    /// Kernel struct member offsets.
    pub offsets: KernelOffsets,
}

const _: () = assert!(core::mem::size_of::<ConnKey>() == 8);
const _: () = assert!(core::mem::size_of::<ConnInfo>() == 64);
const _: () = assert!(core::mem::size_of::<InflightSyscall>() == 32);
const _: () = assert!(core::mem::size_of::<SslCall>() == 40);
const _: () = assert!(core::mem::size_of::<SslKey>() == 16);
const _: () = assert!(core::mem::size_of::<TraceCtx>() == 32);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);
const _: () = assert!(core::mem::size_of::<KernelConfig>() == 120);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `repr(C)`, `Copy`, every bit pattern valid, no implicit padding (sizes
    // asserted above).
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::InflightSyscall {}
    unsafe impl aya::Pod for super::SslCall {}
    unsafe impl aya::Pod for super::SslKey {}
    unsafe impl aya::Pod for super::TraceCtx {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::KernelConfig {}
}
