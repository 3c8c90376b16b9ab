//! The header fields the agent keeps from one header block.

use super::hpack::{FieldSink, HpackError};

/// A field the agent keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Method,
    Path,
    Scheme,
    Authority,
    Status,
    ContentType,
    ContentLength,
    GrpcStatus,
    GrpcMessage,
    Traceparent,
    Tracestate,
    B3,
    XB3TraceId,
    XB3SpanId,
    XB3ParentSpanId,
    XB3Sampled,
}

const SLOTS: usize = 16;

/// Names are compared as sent: HTTP/2 field names are lowercase (RFC 9113 section 8.2.1), and
/// a block with uppercase names is malformed.
const NAMES: [(&[u8], Slot); SLOTS] = [
    (b":method", Slot::Method),
    (b":path", Slot::Path),
    (b":scheme", Slot::Scheme),
    (b":authority", Slot::Authority),
    (b":status", Slot::Status),
    (b"content-type", Slot::ContentType),
    (b"content-length", Slot::ContentLength),
    (b"grpc-status", Slot::GrpcStatus),
    (b"grpc-message", Slot::GrpcMessage),
    (b"traceparent", Slot::Traceparent),
    (b"tracestate", Slot::Tracestate),
    (b"b3", Slot::B3),
    (b"x-b3-traceid", Slot::XB3TraceId),
    (b"x-b3-spanid", Slot::XB3SpanId),
    (b"x-b3-parentspanid", Slot::XB3ParentSpanId),
    (b"x-b3-sampled", Slot::XB3Sampled),
];

fn slot_of(name: &[u8]) -> Option<Slot> {
    // Most names are not kept: reject them on length and first byte before comparing.
    if !(2..=17).contains(&name.len())
        || !matches!(name[0], b':' | b'c' | b'g' | b't' | b'b' | b'x')
    {
        return None;
    }
    NAMES.iter().find(|(n, _)| *n == name).map(|&(_, s)| s)
}

/// Longest `:path` kept; a longer one is cut (a path prefix, flagged).
const MAX_VALUE: usize = 8 * 1024;

/// Longest value kept of every other field. A longer value is not kept at all (a cut
/// `traceparent` would be a wrong one): it counts as unknown. Generous for what each field
/// holds (W3C caps `tracestate` at 512 bytes), and small enough that 1024 open streams stay
/// within a few MiB.
const fn max_len(slot: Slot) -> usize {
    match slot {
        Slot::Path => MAX_VALUE,
        Slot::Method | Slot::Status | Slot::ContentLength | Slot::GrpcStatus => 32,
        Slot::Scheme | Slot::XB3TraceId | Slot::XB3SpanId | Slot::XB3ParentSpanId => 64,
        Slot::XB3Sampled => 16,
        Slot::ContentType | Slot::Traceparent | Slot::B3 => 256,
        Slot::Authority | Slot::Tracestate | Slot::GrpcMessage => 1024,
    }
}

/// The kept fields of the block being decoded in one direction. Values live in one reused byte
/// buffer: nothing is allocated per field.
#[derive(Debug, Default)]
pub(crate) struct BlockFields {
    arena: Vec<u8>,
    slots: [Option<(u32, u32)>; SLOTS],
    /// Fields whose name, or whose wanted value, could not be known.
    pub(crate) unknown: u32,
    /// Part of the block was not decoded (lost, or a fatal HPACK error).
    pub(crate) lost: bool,
    pub(crate) keep_grpc_message: bool,
    /// The kept `:path` was cut at `MAX_VALUE` bytes.
    pub(crate) path_cut: bool,
    errors: [u32; 7],
}

impl BlockFields {
    pub(crate) fn reset(&mut self) {
        self.arena.clear();
        if self.arena.capacity() > 4 * MAX_VALUE {
            self.arena.shrink_to(4 * MAX_VALUE);
        }
        self.slots = [None; SLOTS];
        self.unknown = 0;
        self.lost = false;
        self.path_cut = false;
        self.errors = [0; 7];
    }

    /// True when every field of the block is known.
    pub(crate) fn complete(&self) -> bool {
        self.unknown == 0 && !self.lost
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<&[u8]> {
        self.slots[slot as usize].map(|(s, l)| &self.arena[s as usize..(s + l) as usize])
    }

    pub(crate) fn string(&self, slot: Slot) -> Option<String> {
        self.get(slot)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A decimal field (`:status`, `grpc-status`, `content-length`).
    pub(crate) fn number(&self, slot: Slot) -> Option<u64> {
        let v = self.get(slot)?;
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(v.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
    }

    /// The HPACK errors of the block, drained.
    pub(crate) fn take_errors(&mut self) -> impl Iterator<Item = (HpackError, u32)> {
        const KINDS: [HpackError; 7] = [
            HpackError::InvalidIndex,
            HpackError::InvalidInteger,
            HpackError::InvalidHuffman,
            HpackError::InvalidSizeUpdate,
            HpackError::TableOverCap,
            HpackError::Oversize,
            HpackError::Truncated,
        ];
        let e = std::mem::take(&mut self.errors);
        KINDS.into_iter().zip(e).filter(|&(_, n)| n > 0)
    }

    fn wanted(&self, slot: Slot) -> bool {
        slot != Slot::GrpcMessage || self.keep_grpc_message
    }
}

impl FieldSink for BlockFields {
    fn wants_value(&mut self, name: &[u8]) -> bool {
        slot_of(name).is_some_and(|s| self.wanted(s))
    }

    fn field(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(name) = name else {
            self.unknown += 1;
            return;
        };
        let Some(slot) = slot_of(name).filter(|&s| self.wanted(s)) else {
            return;
        };
        let Some(value) = value else {
            self.unknown += 1;
            return;
        };
        if value.len() > max_len(slot) && slot != Slot::Path {
            self.unknown += 1;
            return;
        }
        if self.slots[slot as usize].is_none() {
            let v = &value[..value.len().min(MAX_VALUE)];
            self.path_cut |= slot == Slot::Path && v.len() < value.len();
            let start = self.arena.len() as u32;
            self.arena.extend_from_slice(v);
            self.slots[slot as usize] = Some((start, v.len() as u32));
        }
    }

    fn error(&mut self, error: HpackError) {
        self.errors[error as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_known_values_and_counts_unknowns() {
        let mut f = BlockFields::default();
        assert!(f.wants_value(b":path"));
        assert!(!f.wants_value(b"user-agent"));
        assert!(!f.wants_value(b"grpc-message"));
        f.field(Some(b":path"), Some(b"/a"));
        f.field(Some(b":path"), Some(b"/b"));
        f.field(Some(b"user-agent"), None);
        f.field(Some(b":status"), Some(b"204"));
        f.field(Some(b"grpc-status"), Some(b"x"));
        assert!(f.complete());
        f.field(None, None);
        f.field(Some(b":authority"), None);
        assert_eq!(f.unknown, 2);
        assert_eq!(f.get(Slot::Path), Some(&b"/a"[..]));
        assert_eq!(f.number(Slot::Status), Some(204));
        assert_eq!(f.number(Slot::GrpcStatus), None);
        assert_eq!(f.get(Slot::Authority), None);
        f.error(HpackError::Truncated);
        assert_eq!(
            f.take_errors().collect::<Vec<_>>(),
            [(HpackError::Truncated, 1)]
        );
        f.reset();
        assert!(f.complete());
        assert_eq!(f.get(Slot::Path), None);
    }
}
