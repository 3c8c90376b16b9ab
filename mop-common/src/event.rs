//! The records the kernel side writes into the `MOP_EVENTS` ring buffer.
//!
//! Every record starts with a [`DataEventHeader`]; a [`EventKind::Data`] record is followed by
//! `captured_len` bytes of payload (the head of what the syscall transferred).

/// Upper bound of the per-buffer capture window: `ebpf.buffer_size` may not exceed it.
///
/// A power of two so that the verifier can bound copies with a mask.
pub const MAX_CAPTURE_BYTES: usize = 4096;

/// Bytes kept from the end of a buffer that was longer than the capture window.
///
/// Lets the HTTP/1 parser see the terminating `0\r\n\r\n` of a chunked body whose middle was
/// not captured.
pub const TAIL_BYTES: usize = 16;

/// What a ring-buffer record reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A TCP connection was accepted (`role` = server) or connected (`role` = client).
    ConnOpen = 1,
    /// Bytes were read from or written to a TCP socket.
    Data = 2,
    /// A TCP socket the agent had seen was closed by the process.
    ConnClose = 3,
    /// A process called `execve` while exec watching is on: the kernel already captures it
    /// (its pid is in the filter as pending) until discovery decides about it.
    ProcExec = 4,
    /// The kernel gave a request that starts in this syscall its trace context (TCP-option
    /// propagation): the payload is a [`crate::TraceCtx`]; the data record of the same
    /// syscall follows.
    TraceCtx = 5,
}

impl EventKind {
    /// Decodes the `kind` field of a header; `None` for a value this build does not know.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::ConnOpen),
            2 => Some(Self::Data),
            3 => Some(Self::ConnClose),
            4 => Some(Self::ProcExec),
            5 => Some(Self::TraceCtx),
            _ => None,
        }
    }
}

/// `direction` of a data event: bytes the process received.
pub const DIR_INGRESS: u32 = 0;
/// `direction` of a data event: bytes the process sent.
pub const DIR_EGRESS: u32 = 1;

/// `role` of a connection: it is not known how it was opened (it predates the agent).
pub const ROLE_UNKNOWN: u32 = 0;
/// `role` of a connection: the process accepted it (it is the server end).
pub const ROLE_SERVER: u32 = 1;
/// `role` of a connection: the process connected it (it is the client end).
pub const ROLE_CLIENT: u32 = 2;

/// `flags` bit: the payload came from `sendfile`, whose bytes are never captured.
pub const FLAG_SENDFILE: u32 = 1;
/// `flags` bit: `seq_end` holds the socket's stream position after the syscall.
pub const FLAG_STREAM_SEQ: u32 = 8;
/// `flags` bit: the payload is TLS plaintext read at the TLS library (uprobes), not socket bytes.
pub const FLAG_TLS: u32 = 4;
/// `flags` bit: the payload was gathered from an iovec array that had more entries than the
/// kernel side walks, so the captured head may be shorter than the window.
pub const FLAG_IOV_TRUNCATED: u32 = 2;

/// The two ends of a TCP connection, as seen from the instrumented process.
///
/// IPv4 addresses sit in the first four bytes (network order) when `family` is
/// [`crate::AF_INET`]; an IPv6 socket may carry a v4-mapped address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnAddrs {
    /// Local address, network byte order.
    pub local_addr: [u8; 16],
    /// Remote address, network byte order.
    pub remote_addr: [u8; 16],
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Explicit padding; always zero.
    pub pad: u16,
}

/// Header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`] for data; zero otherwise.
    pub direction: u32,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall entered.
    pub enter_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall returned.
    pub exit_ns: u64,
    /// Thread group id (the process id) in the initial PID namespace.
    pub pid: u32,
    /// Thread id in the initial PID namespace.
    pub tid: u32,
    /// The socket's file descriptor in `pid`.
    pub fd: i32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Identifies the connection for as long as the fd stays open; unique per boot.
    pub conn_id: u64,
    /// The connection's addresses.
    pub addrs: ConnAddrs,
    /// [`ROLE_UNKNOWN`], [`ROLE_SERVER`] or [`ROLE_CLIENT`].
    pub role: u32,
    /// Bytes of payload that follow this header.
    pub captured_len: u32,
    /// Bytes the syscall transferred (its return value).
    pub total_len: u64,
    /// Valid bytes in `tail`.
    pub tail_len: u32,
    /// With [`FLAG_STREAM_SEQ`]: the TCP stream position (low 32 bits of the socket's
    /// `copied_seq` for reads, `write_seq` for writes) right after this syscall, so userspace
    /// can tell when a syscall of the connection was never reported (a gap).
    pub seq_end: u32,
    /// The last bytes of the buffer when it was longer than the capture window.
    pub tail: [u8; TAIL_BYTES],
}

/// Size of [`DataEventHeader`] in bytes; the payload starts at this offset.
pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<DataEventHeader>();

const _: () = assert!(core::mem::size_of::<ConnAddrs>() == 40);
const _: () = assert!(EVENT_HEADER_LEN == 128);
const _: () = assert!(EVENT_HEADER_LEN.is_multiple_of(8));

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, every bit pattern valid, no implicit padding (asserted above).
unsafe impl aya::Pod for ConnAddrs {}
#[cfg(feature = "user")]
// SAFETY: `repr(C)`, `Copy`, every bit pattern valid, no implicit padding (asserted above).
unsafe impl aya::Pod for DataEventHeader {}
