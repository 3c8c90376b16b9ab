//! What one captured syscall contributes to a connection's byte stream.

/// Which way the bytes moved, seen from the instrumented process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process received the bytes (read, recv*).
    Ingress,
    /// The process sent the bytes (write, send*, sendfile).
    Egress,
}

impl Direction {
    /// The other direction.
    #[must_use]
    pub const fn reverse(self) -> Self {
        match self {
            Self::Ingress => Self::Egress,
            Self::Egress => Self::Ingress,
        }
    }
}

/// The bytes one syscall moved in one direction: a captured head, an uncaptured gap of known
/// length, and a captured tail.
///
/// `head.len() + gap + tail.len()` is the number of bytes the syscall transferred.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The first bytes of the buffer (at most the configured capture window).
    pub head: &'a [u8],
    /// Bytes between head and tail that were not captured.
    pub gap: u64,
    /// The last bytes of the buffer when it was longer than the capture window; else empty.
    pub tail: &'a [u8],
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall entered.
    pub enter_ns: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the syscall returned.
    pub exit_ns: u64,
    /// The thread that made the syscall.
    pub tid: u32,
}

impl Segment<'_> {
    /// Total bytes the syscall transferred.
    pub fn total_len(&self) -> u64 {
        self.head.len() as u64 + self.gap + self.tail.len() as u64
    }

    /// True when every byte of the buffer was captured.
    pub fn is_complete(&self) -> bool {
        self.gap == 0 && self.tail.is_empty()
    }
}
