//! The kernel-function capture paths: fentry/fexit and kprobes on the kernel's TCP functions.
//!
//! They write the same records as the syscall path (`syscalls.rs`): the hooks below see a
//! `struct sock` instead of a file descriptor, so connections are keyed by `(pid, sock)` in
//! [`MAP_SOCK_CONNS`] and records carry `fd = -1` (userspace keys connections by
//! `(pid, conn_id)` and never needs the fd). The user buffer of a send or receive comes from
//! the `msghdr`'s `iov_iter`, whose layout changed across kernels; [`KfuncConfig`] carries the
//! running kernel's offsets and `enum iter_type` values, read from BTF at load time.
//!
//! | kernel function | fentry path | kprobe path | record |
//! |---|---|---|---|
//! | `tcp_sendmsg` | fentry + fexit | kprobe + kretprobe | data, egress |
//! | `tcp_recvmsg` | fentry + fexit | kprobe + kretprobe | data, ingress |
//! | `tcp_sendpage` (kernels before 6.5, when present) | fentry + fexit | kprobe + kretprobe | data, egress, no payload (`FLAG_SENDFILE`) |
//! | `inet_csk_accept` | fexit | kretprobe | connection opened, server |
//! | `inet_stream_connect` | fexit | kprobe + kretprobe | connection opened, client |
//! | `tcp_close` | fentry | kprobe | connection closed |

/// `LruHashMap<SockKey, ConnInfo>`: what the kernel-function paths know about each socket of
/// each process.
pub const MAP_SOCK_CONNS: &str = "MOP_SOCK_CONNS";
/// `LruHashMap<u64 pid_tgid, KfuncInflight>`: arguments saved at a kernel function's entry.
pub const MAP_KFUNC_INFLIGHT: &str = "MOP_KFUNC_INFLIGHT";
/// `LruHashMap<SslKey, u64 sock>`: the socket a TLS library call used, learnt by the
/// kernel-function paths (the syscall path learns the fd instead).
pub const MAP_SSL_SOCKS: &str = "MOP_SSL_SOCKS";
/// Name of the `.rodata` global holding the [`KfuncConfig`].
pub const GLOBAL_KFUNC_CONFIG: &str = "MOP_KFUNC_CONFIG";

/// A program of a kernel-function path: its name in the object and the kernel function it
/// hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KfuncProgram {
    /// The program's name in the object.
    pub name: &'static str,
    /// The kernel function.
    pub function: &'static str,
    /// For fexit programs that read the return value as the argument after the last
    /// parameter: the parameter count the program was built for; 0 otherwise.
    pub params: u32,
    /// Attached only when the kernel has the function (`tcp_sendpage` left in 6.5).
    pub optional: bool,
}

const fn prog(name: &'static str, function: &'static str) -> KfuncProgram {
    KfuncProgram {
        name,
        function,
        params: 0,
        optional: false,
    }
}

const fn fexit(name: &'static str, function: &'static str, params: u32) -> KfuncProgram {
    KfuncProgram {
        name,
        function,
        params,
        optional: false,
    }
}

const fn optional(p: KfuncProgram) -> KfuncProgram {
    KfuncProgram {
        optional: true,
        ..p
    }
}

/// The fentry/fexit programs. fexit programs read the return value from the slot after the
/// last argument (which works from 5.5, unlike `bpf_get_func_ret`, 5.17+), so a function whose
/// parameter count changed has one program per count; the loader picks the one matching the
/// kernel's BTF prototype.
pub const FENTRY_PROGRAMS: &[KfuncProgram] = &[
    prog("fentry_tcp_sendmsg", "tcp_sendmsg"),
    fexit("fexit_tcp_sendmsg", "tcp_sendmsg", 3),
    prog("fentry_tcp_recvmsg", "tcp_recvmsg"),
    // 6.16 dropped `addr_len`, 5.19 the `nonblock` parameter.
    fexit("fexit_tcp_recvmsg_p4", "tcp_recvmsg", 4),
    fexit("fexit_tcp_recvmsg", "tcp_recvmsg", 5),
    fexit("fexit_tcp_recvmsg_p6", "tcp_recvmsg", 6),
    // 6.10 folded `flags, err, kern` into `struct proto_accept_arg *`.
    fexit("fexit_inet_csk_accept", "inet_csk_accept", 2),
    fexit("fexit_inet_csk_accept_p4", "inet_csk_accept", 4),
    fexit("fexit_inet_stream_connect", "inet_stream_connect", 4),
    prog("fentry_tcp_close", "tcp_close"),
    optional(prog("fentry_tcp_sendpage", "tcp_sendpage")),
    optional(fexit("fexit_tcp_sendpage", "tcp_sendpage", 5)),
];

/// The kprobe/kretprobe programs (`kprobe_*` on entry, `kretprobe_*` on return).
pub const KPROBE_PROGRAMS: &[KfuncProgram] = &[
    prog("kprobe_tcp_sendmsg", "tcp_sendmsg"),
    prog("kretprobe_tcp_sendmsg", "tcp_sendmsg"),
    prog("kprobe_tcp_recvmsg", "tcp_recvmsg"),
    prog("kretprobe_tcp_recvmsg", "tcp_recvmsg"),
    prog("kretprobe_inet_csk_accept", "inet_csk_accept"),
    prog("kprobe_inet_stream_connect", "inet_stream_connect"),
    prog("kretprobe_inet_stream_connect", "inet_stream_connect"),
    prog("kprobe_tcp_close", "tcp_close"),
    optional(prog("kprobe_tcp_sendpage", "tcp_sendpage")),
    optional(prog("kretprobe_tcp_sendpage", "tcp_sendpage")),
];

/// Key of [`MAP_SOCK_CONNS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// Process id.
    pub pid: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// The `struct sock` address (the connection id).
    pub sk: u64,
}

/// `KfuncInflight::op`: `tcp_sendmsg`.
pub const KOP_SEND: u32 = 1;
/// `KfuncInflight::op`: `tcp_recvmsg`.
pub const KOP_RECV: u32 = 2;
/// `KfuncInflight::op`: `tcp_sendpage` (sendfile and splice before 6.5).
pub const KOP_SENDPAGE: u32 = 3;
/// `KfuncInflight::op`: `inet_stream_connect` (kprobe path: the socket saved at entry).
pub const KOP_CONNECT: u32 = 4;

/// `KfuncInflight::source`: the bytes are not in user memory (sendfile, splice, kernel
/// buffers): counted, never captured.
pub const SRC_NONE: u32 = 0;
/// `KfuncInflight::source`: one contiguous user buffer at `buf` (`ITER_UBUF`).
pub const SRC_USER: u32 = 1;
/// `KfuncInflight::source`: an iovec array in kernel memory at `buf` with `nr_segs` entries,
/// whose first `skip` bytes were already consumed (`ITER_IOVEC`).
pub const SRC_KERNEL_IOV: u32 = 2;

/// Value of [`MAP_KFUNC_INFLIGHT`]: what a kernel function's return needs from its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KfuncInflight {
    /// `CLOCK_MONOTONIC` nanoseconds at entry.
    pub enter_ns: u64,
    /// The `struct sock` (for [`KOP_CONNECT`]: the `struct socket`).
    pub sk: u64,
    /// The user buffer or the kernel iovec array (see `source`).
    pub buf: u64,
    /// iovec entries.
    pub nr_segs: u64,
    /// Bytes of the first iovec entry already consumed.
    pub skip: u64,
    /// `KOP_*`, with `crate::maps::INFLIGHT_IN_TLS` when inside a TLS library call.
    pub op: u32,
    /// `SRC_*`.
    pub source: u32,
}

/// `KfuncConfig::iter_ubuf` when the kernel has no `ITER_UBUF` (before 6.0).
pub const ITER_TYPE_NONE: u32 = u32::MAX;

/// Offsets and enum values the kernel-function paths need, read from the running kernel's
/// BTF (the read-only global [`GLOBAL_KFUNC_CONFIG`]).
///
/// `struct iov_iter` changed twice: 5.14 replaced `unsigned int type` (iter type | direction
/// bit) with `u8 iter_type` and renumbered `enum iter_type`; 6.0 added `ITER_UBUF` (a single
/// user buffer in `ubuf`), and 6.4 renamed `iov` to `__iov` and moved `count` into a union
/// with it. The programs read a 32-bit word at `iter_type` and mask it with `iter_type_mask`
/// (`0xff` for the `u8`, all bits but the direction bit for the old `type`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KfuncConfig {
    /// `msghdr.msg_iter` (the kernel's `struct msghdr`).
    pub msghdr_iter: u32,
    /// `iov_iter.iter_type` (5.14+) or `iov_iter.type`.
    pub iter_type: u32,
    /// Mask giving the `enum iter_type` value from the 32-bit word at `iter_type`.
    pub iter_type_mask: u32,
    /// `ITER_IOVEC`.
    pub iter_iovec: u32,
    /// `ITER_UBUF`, or [`ITER_TYPE_NONE`].
    pub iter_ubuf: u32,
    /// `iov_iter.iov_offset`.
    pub iter_iov_offset: u32,
    /// `iov_iter.__iov` (6.4+) or `iov_iter.iov`.
    pub iter_iov: u32,
    /// `iov_iter.ubuf` (6.0+; the same union as `iov`).
    pub iter_ubuf_ptr: u32,
    /// `iov_iter.nr_segs`.
    pub iter_nr_segs: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<SockKey>() == 16);
const _: () = assert!(core::mem::size_of::<KfuncInflight>() == 48);
const _: () = assert!(core::mem::size_of::<KfuncConfig>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `repr(C)`, `Copy`, every bit pattern valid, no implicit padding (sizes
    // asserted above).
    unsafe impl aya::Pod for super::SockKey {}
    unsafe impl aya::Pod for super::KfuncInflight {}
    unsafe impl aya::Pod for super::KfuncConfig {}
}
