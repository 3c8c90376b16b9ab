//! What can go wrong on an HTTP/2 connection, and the counters that record it.

use std::fmt;

use super::hpack::HpackError;

/// One kind of problem met while parsing an HTTP/2 connection.
///
/// None of them stops the connection: the parser counts the problem in [`Http2Stats`], reports
/// what it cannot know as unknown (`None`, or a `*_truncated` / `*_unknown` flag on the
/// exchange), and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// A direction that had to start with the client preface did not.
    InvalidPreface,
    /// A frame header fell in uncaptured bytes: that direction is skipped until a segment
    /// starts with frames again, and its HPACK table is forgotten.
    LostSync,
    /// A frame longer than the receiver's `SETTINGS_MAX_FRAME_SIZE`.
    FrameTooLarge,
    /// A frame that breaks RFC 9113: a wrong fixed length, padding longer than the payload, a
    /// stream frame on stream 0 or a connection frame on a stream.
    InvalidFrame,
    /// A CONTINUATION without a header block to continue, or another frame inside a header
    /// block (the block is then incomplete).
    UnexpectedContinuation,
    /// Part of a header block was not captured: its remaining fields are unknown and the
    /// direction's HPACK table is forgotten.
    HeaderBlockLost,
    /// One header field longer than [`Http2Limits::max_header_block_bytes`](super::Http2Limits):
    /// the rest of its block is unknown and the HPACK table is forgotten.
    HeaderBlockTooLarge,
    /// An HPACK index 0, or past the dynamic table while the table is known exactly.
    HpackInvalidIndex,
    /// An HPACK integer over 32 bits.
    HpackInvalidInteger,
    /// A Huffman string with EOS or bad padding.
    HpackInvalidHuffman,
    /// A dynamic table size update after a field or over the announced limit.
    HpackInvalidSizeUpdate,
    /// A dynamic table size update over
    /// [`Http2Limits::max_table_size`](super::Http2Limits): the parser keeps the cap.
    HpackTableOverCap,
    /// A header block that ended inside a field.
    HpackTruncated,
    /// More open streams than [`Http2Limits::max_streams`](super::Http2Limits): the oldest was
    /// emitted with what was known.
    TooManyStreams,
    /// Response headers for a stream whose request was not seen (joined mid-connection).
    ResponseWithoutRequest,
    /// A header block opening a stream with neither `:method` nor `:status` known, on a
    /// connection whose client side is not known yet: it is ignored.
    UnknownRole,
    /// A stream above a GOAWAY's last stream id: the peer never processed it; emitted with what
    /// was known.
    StreamAbandoned,
    /// The connection closed with the stream still open; emitted with what was known.
    IncompleteAtClose,
}

impl ParseError {
    /// Number of kinds.
    pub const COUNT: usize = 18;

    /// Every kind, in declaration order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::InvalidPreface,
        Self::LostSync,
        Self::FrameTooLarge,
        Self::InvalidFrame,
        Self::UnexpectedContinuation,
        Self::HeaderBlockLost,
        Self::HeaderBlockTooLarge,
        Self::HpackInvalidIndex,
        Self::HpackInvalidInteger,
        Self::HpackInvalidHuffman,
        Self::HpackInvalidSizeUpdate,
        Self::HpackTableOverCap,
        Self::HpackTruncated,
        Self::TooManyStreams,
        Self::ResponseWithoutRequest,
        Self::UnknownRole,
        Self::StreamAbandoned,
        Self::IncompleteAtClose,
    ];

    /// A stable `snake_case` name, for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPreface => "invalid_preface",
            Self::LostSync => "lost_sync",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidFrame => "invalid_frame",
            Self::UnexpectedContinuation => "unexpected_continuation",
            Self::HeaderBlockLost => "header_block_lost",
            Self::HeaderBlockTooLarge => "header_block_too_large",
            Self::HpackInvalidIndex => "hpack_invalid_index",
            Self::HpackInvalidInteger => "hpack_invalid_integer",
            Self::HpackInvalidHuffman => "hpack_invalid_huffman",
            Self::HpackInvalidSizeUpdate => "hpack_invalid_size_update",
            Self::HpackTableOverCap => "hpack_table_over_cap",
            Self::HpackTruncated => "hpack_truncated",
            Self::TooManyStreams => "too_many_streams",
            Self::ResponseWithoutRequest => "response_without_request",
            Self::UnknownRole => "unknown_role",
            Self::StreamAbandoned => "stream_abandoned",
            Self::IncompleteAtClose => "incomplete_at_close",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<HpackError> for ParseError {
    fn from(e: HpackError) -> Self {
        match e {
            HpackError::InvalidIndex => Self::HpackInvalidIndex,
            HpackError::InvalidInteger => Self::HpackInvalidInteger,
            HpackError::InvalidHuffman => Self::HpackInvalidHuffman,
            HpackError::InvalidSizeUpdate => Self::HpackInvalidSizeUpdate,
            HpackError::TableOverCap => Self::HpackTableOverCap,
            HpackError::Oversize => Self::HeaderBlockTooLarge,
            HpackError::Truncated => Self::HpackTruncated,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Self::InvalidPreface => "no client preface where one was due",
            Self::LostSync => "frame header in uncaptured bytes",
            Self::FrameTooLarge => "frame over the receiver's max frame size",
            Self::InvalidFrame => "frame violating rfc 9113",
            Self::UnexpectedContinuation => "continuation out of place",
            Self::HeaderBlockLost => "header block partly not captured",
            Self::HeaderBlockTooLarge => "header field over the size limit",
            Self::HpackInvalidIndex => "invalid hpack index",
            Self::HpackInvalidInteger => "hpack integer overflow",
            Self::HpackInvalidHuffman => "invalid huffman string",
            Self::HpackInvalidSizeUpdate => "invalid dynamic table size update",
            Self::HpackTableOverCap => "dynamic table size over the cap",
            Self::HpackTruncated => "header block ended inside a field",
            Self::TooManyStreams => "too many open streams",
            Self::ResponseWithoutRequest => "response on a stream whose request was not seen",
            Self::UnknownRole => "stream opened by an unidentifiable header block",
            Self::StreamAbandoned => "stream above the goaway last stream id",
            Self::IncompleteAtClose => "connection closed with the stream open",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for ParseError {}

/// Counters of one connection (or, after [`Http2Stats::add`], of many).
///
/// Read them with [`Http2Stats::count`] and drain them with
/// [`Http2Connection::take_stats`](super::Http2Connection::take_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Stats {
    errors: [u64; ParseError::COUNT],
    /// Exchanges emitted.
    pub exchanges: u64,
    /// Exchanges emitted whose request or response headers were not all known.
    pub degraded_exchanges: u64,
    /// Header fields whose name or wanted value could not be known (lost HPACK context).
    pub unknown_fields: u64,
    /// Streams reset by `RST_STREAM` before their response ended.
    pub resets: u64,
    /// Whole segments skipped while looking for frames.
    pub skipped_segments: u64,
    /// Directions whose first bytes were not the start of the connection (joined late).
    pub joined_late: u64,
    /// Frames for streams the parser does not track (closed, pushed, or never seen opening).
    pub untracked_frames: u64,
    /// `PUSH_PROMISE` frames (pushed streams are not reported).
    pub push_promises: u64,
    /// Connections started from an HTTP/1.1 `Upgrade: h2c`.
    pub upgrades: u64,
}

impl Http2Stats {
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
        self.degraded_exchanges += other.degraded_exchanges;
        self.unknown_fields += other.unknown_fields;
        self.resets += other.resets;
        self.skipped_segments += other.skipped_segments;
        self.joined_late += other.joined_late;
        self.untracked_frames += other.untracked_frames;
        self.push_promises += other.push_promises;
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
    fn all_is_in_index_order_and_names_unique() {
        for (i, k) in ParseError::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let names: std::collections::HashSet<_> =
            ParseError::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ParseError::COUNT);
    }

    #[test]
    fn count_and_add() {
        let mut a = Http2Stats::default();
        a.record(ParseError::LostSync);
        a.record(ParseError::from(HpackError::Oversize));
        a.exchanges = 2;
        a.resets = 1;
        let mut b = Http2Stats::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.count(ParseError::LostSync), 2);
        assert_eq!(b.count(ParseError::HeaderBlockTooLarge), 2);
        assert_eq!(b.errors_total(), 4);
        assert_eq!((b.exchanges, b.resets), (4, 2));
        assert_eq!(
            ParseError::LostSync.to_string(),
            "frame header in uncaptured bytes"
        );
    }
}
