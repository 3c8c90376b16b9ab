//! The syscalls the capture programs handle, independent of the architecture's numbering.
//!
//! Userspace fills the `MOP_SYSCALL_OPS` array (indexed by the architecture's syscall number)
//! with these codes, so the eBPF programs dispatch on one map lookup and carry no per-arch table.

/// What a syscall does to a socket, from the capture programs' point of view.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallOp {
    /// Not captured.
    Ignore = 0,
    /// `read(fd, buf, count)`.
    Read = 1,
    /// `write(fd, buf, count)`.
    Write = 2,
    /// `readv(fd, iov, iovcnt)`.
    Readv = 3,
    /// `writev(fd, iov, iovcnt)`.
    Writev = 4,
    /// `recvfrom(fd, buf, len, flags, addr, addrlen)`.
    Recvfrom = 5,
    /// `sendto(fd, buf, len, flags, addr, addrlen)`.
    Sendto = 6,
    /// `recvmsg(fd, msg, flags)`.
    Recvmsg = 7,
    /// `sendmsg(fd, msg, flags)`.
    Sendmsg = 8,
    /// `sendfile(out_fd, in_fd, offset, count)`: bytes counted, never captured.
    Sendfile = 9,
    /// `accept(fd, addr, addrlen)` and `accept4(...)`: the return value is the new socket.
    Accept = 10,
    /// `connect(fd, addr, addrlen)`.
    Connect = 11,
    /// `close(fd)`.
    Close = 12,
}

impl SyscallOp {
    /// Decodes a value from the ops map; unknown values are [`SyscallOp::Ignore`].
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Read,
            2 => Self::Write,
            3 => Self::Readv,
            4 => Self::Writev,
            5 => Self::Recvfrom,
            6 => Self::Sendto,
            7 => Self::Recvmsg,
            8 => Self::Sendmsg,
            9 => Self::Sendfile,
            10 => Self::Accept,
            11 => Self::Connect,
            12 => Self::Close,
            _ => Self::Ignore,
        }
    }

    /// True for the operations whose bytes flow from the network into the process.
    pub const fn is_ingress(self) -> bool {
        matches!(
            self,
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg
        )
    }

    /// True for the operations whose bytes flow from the process into the network.
    pub const fn is_egress(self) -> bool {
        matches!(
            self,
            Self::Write | Self::Writev | Self::Sendto | Self::Sendmsg | Self::Sendfile
        )
    }
}

/// Size of the `MOP_SYSCALL_OPS` array: syscall numbers at or above it are never captured.
pub const SYSCALL_TABLE_LEN: u32 = 512;

/// The `x86_64` syscall numbers of each operation (from `arch/x86/entry/syscalls/syscall_64.tbl`).
pub const X86_64_SYSCALLS: &[(u32, SyscallOp)] = &[
    (0, SyscallOp::Read),
    (1, SyscallOp::Write),
    (3, SyscallOp::Close),
    (19, SyscallOp::Readv),
    (20, SyscallOp::Writev),
    (40, SyscallOp::Sendfile),
    (42, SyscallOp::Connect),
    (43, SyscallOp::Accept),
    (44, SyscallOp::Sendto),
    (45, SyscallOp::Recvfrom),
    (46, SyscallOp::Sendmsg),
    (47, SyscallOp::Recvmsg),
    (288, SyscallOp::Accept),
];

/// The aarch64 (generic table) syscall numbers of each operation
/// (from `include/uapi/asm-generic/unistd.h`).
pub const AARCH64_SYSCALLS: &[(u32, SyscallOp)] = &[
    (57, SyscallOp::Close),
    (63, SyscallOp::Read),
    (64, SyscallOp::Write),
    (65, SyscallOp::Readv),
    (66, SyscallOp::Writev),
    (71, SyscallOp::Sendfile),
    (202, SyscallOp::Accept),
    (203, SyscallOp::Connect),
    (206, SyscallOp::Sendto),
    (207, SyscallOp::Recvfrom),
    (211, SyscallOp::Sendmsg),
    (212, SyscallOp::Recvmsg),
    (242, SyscallOp::Accept),
];
