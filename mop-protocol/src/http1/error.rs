//! What can go wrong on an HTTP/1 connection, and the counters that record it.

use std::fmt;

/// One kind of problem met while parsing an HTTP/1 connection.
///
/// None of them stops the connection: the parser counts the problem in [`Http1Stats`] and
/// resynchronises on the next message it recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Bytes where a message should start that are neither a request line nor a status line.
    UnexpectedBytes,
    /// A request or status line that does not parse (bad method, target, code or syntax).
    InvalidStartLine,
    /// An `HTTP/x.y` version other than 1.0 and 1.1.
    UnsupportedVersion,
    /// The start line itself was cut by the capture window before the method or status code.
    TruncatedStartLine,
    /// A malformed header line (no colon, whitespace or bad bytes in the name).
    InvalidHeader,
    /// A header block larger than [`Http1Limits::max_head_bytes`](super::Http1Limits).
    HeadTooLarge,
    /// `Content-Length` that is not a number, overflows 64 bits, or disagrees with another one.
    InvalidContentLength,
    /// A request `Transfer-Encoding` whose final coding is not `chunked` (its length is unknown).
    InvalidTransferEncoding,
    /// `Content-Length` and `Transfer-Encoding` on one message (a request-smuggling shape);
    /// `Transfer-Encoding` wins, as RFC 9112 section 6.3 says.
    ContentLengthWithTransferEncoding,
    /// A chunk-size line that is not a hexadecimal number, overflows, or has bad bytes.
    InvalidChunkSize,
    /// Chunk data not followed by CRLF.
    InvalidChunkFraming,
    /// A chunk-size or trailer line longer than [`Http1Limits::max_head_bytes`](super::Http1Limits).
    ChunkLineTooLong,
    /// A response with no request waiting for it (the parser joined mid-connection).
    ResponseWithoutRequest,
    /// More pipelined requests than [`Http1Limits::max_pending`](super::Http1Limits) waited for
    /// responses; the oldest was emitted without a status.
    TooManyPending,
    /// A message started in bytes that were not captured; the parser skipped to the next
    /// segment that starts a message.
    LostSync,
    /// The connection closed in the middle of a message.
    IncompleteAtClose,
}

impl ParseError {
    /// Number of kinds.
    pub const COUNT: usize = 16;

    /// Every kind, in declaration order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::UnexpectedBytes,
        Self::InvalidStartLine,
        Self::UnsupportedVersion,
        Self::TruncatedStartLine,
        Self::InvalidHeader,
        Self::HeadTooLarge,
        Self::InvalidContentLength,
        Self::InvalidTransferEncoding,
        Self::ContentLengthWithTransferEncoding,
        Self::InvalidChunkSize,
        Self::InvalidChunkFraming,
        Self::ChunkLineTooLong,
        Self::ResponseWithoutRequest,
        Self::TooManyPending,
        Self::LostSync,
        Self::IncompleteAtClose,
    ];

    /// A stable `snake_case` name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedBytes => "unexpected_bytes",
            Self::InvalidStartLine => "invalid_start_line",
            Self::UnsupportedVersion => "unsupported_version",
            Self::TruncatedStartLine => "truncated_start_line",
            Self::InvalidHeader => "invalid_header",
            Self::HeadTooLarge => "head_too_large",
            Self::InvalidContentLength => "invalid_content_length",
            Self::InvalidTransferEncoding => "invalid_transfer_encoding",
            Self::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Self::InvalidChunkSize => "invalid_chunk_size",
            Self::InvalidChunkFraming => "invalid_chunk_framing",
            Self::ChunkLineTooLong => "chunk_line_too_long",
            Self::ResponseWithoutRequest => "response_without_request",
            Self::TooManyPending => "too_many_pending",
            Self::LostSync => "lost_sync",
            Self::IncompleteAtClose => "incomplete_at_close",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Self::UnexpectedBytes => "bytes that start neither a request nor a response",
            Self::InvalidStartLine => "invalid request or status line",
            Self::UnsupportedVersion => "unsupported http version",
            Self::TruncatedStartLine => "start line cut by the capture window",
            Self::InvalidHeader => "invalid header line",
            Self::HeadTooLarge => "header block over the size limit",
            Self::InvalidContentLength => "invalid content-length",
            Self::InvalidTransferEncoding => "request transfer-encoding not ending in chunked",
            Self::ContentLengthWithTransferEncoding => "both content-length and transfer-encoding",
            Self::InvalidChunkSize => "invalid chunk size",
            Self::InvalidChunkFraming => "chunk data not followed by crlf",
            Self::ChunkLineTooLong => "chunk line over the size limit",
            Self::ResponseWithoutRequest => "response without a pending request",
            Self::TooManyPending => "too many pipelined requests without a response",
            Self::LostSync => "message started in uncaptured bytes",
            Self::IncompleteAtClose => "connection closed inside a message",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for ParseError {}

/// Counters of one connection (or, after [`Http1Stats::add`], of many).
///
/// Read them with [`Http1Stats::count`] and drain them with
/// [`Http1Connection::take_stats`](super::Http1Connection::take_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http1Stats {
    errors: [u64; ParseError::COUNT],
    /// Exchanges emitted.
    pub exchanges: u64,
    /// Header blocks cut by the capture window (parsed from what was captured).
    pub truncated_heads: u64,
    /// Whole segments skipped while looking for the start of a message.
    pub skipped_segments: u64,
    /// Connections switched to another protocol (101 responses, CONNECT tunnels).
    pub upgrades: u64,
}

impl Http1Stats {
    /// How many times `kind` happened.
    pub const fn count(&self, kind: ParseError) -> u64 {
        self.errors[kind.index()]
    }

    /// Sum over every [`ParseError`] kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Every kind with its count, zeros included.
    pub fn errors(&self) -> impl Iterator<Item = (ParseError, u64)> + '_ {
        ParseError::ALL.iter().map(|&k| (k, self.count(k)))
    }

    /// Adds `other` to `self` (to sum many connections).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.exchanges += other.exchanges;
        self.truncated_heads += other.truncated_heads;
        self.skipped_segments += other.skipped_segments;
        self.upgrades += other.upgrades;
    }

    pub(crate) fn record(&mut self, kind: ParseError) {
        self.errors[kind.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, k) in ParseError::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn count_add_and_names() {
        let mut a = Http1Stats::default();
        a.record(ParseError::LostSync);
        a.record(ParseError::LostSync);
        a.exchanges = 3;
        let mut b = Http1Stats::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.count(ParseError::LostSync), 4);
        assert_eq!(b.errors_total(), 4);
        assert_eq!(b.exchanges, 6);
        let names: std::collections::HashSet<_> =
            ParseError::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ParseError::COUNT);
        assert_eq!(
            ParseError::HeadTooLarge.to_string(),
            "header block over the size limit"
        );
    }
}
