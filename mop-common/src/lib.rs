//! Types shared by mop's eBPF programs (`mop-agent-ebpf`) and its userspace agent (`mop-agent`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so that the kernel side
//! can write it into maps and the ring buffer and the agent can read it back byte for byte.
//! Userspace finds maps and programs only through the name constants defined here.
#![no_std]

pub mod event;
pub mod kfunc;
pub mod maps;
pub mod ops;

pub use event::{
    ConnAddrs, DataEventHeader, EVENT_HEADER_LEN, EventKind, MAX_CAPTURE_BYTES, TAIL_BYTES,
};
pub use maps::{
    ConnInfo, ConnKey, Counter, InflightSyscall, KernelConfig, KernelOffsets, SslCall, SslKey,
    TraceCtx,
};
pub use ops::SyscallOp;

/// `AF_INET` on Linux.
pub const AF_INET: u16 = 2;
/// `AF_INET6` on Linux.
pub const AF_INET6: u16 = 10;
/// `SOCK_STREAM` on Linux.
pub const SOCK_STREAM: u16 = 1;
