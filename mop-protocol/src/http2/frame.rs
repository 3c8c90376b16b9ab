//! Frame headers (RFC 9113 section 4.1), the client preface, and the plausibility checks used to
//! find frames again after uncaptured bytes.

use crate::segment::Segment;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of a frame header.
pub(crate) const HEADER_LEN: usize = 9;

/// `SETTINGS_MAX_FRAME_SIZE` until a peer announces another.
pub(crate) const DEFAULT_MAX_FRAME: u32 = 16_384;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY_FLAG: u8 = 0x20;

/// True when `head` (the first captured bytes of a direction) is, or begins with, the client
/// preface. A capture shorter than the preface counts when it is a prefix of at least 3 bytes:
/// `P` and `PR` also begin `POST` and `PROPFIND`, `PRI` begins nothing else.
pub fn looks_like_preface(head: &[u8]) -> bool {
    let n = head.len().min(PREFACE.len());
    n >= 3 && head[..n] == PREFACE[..n]
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    /// The reserved bit of the stream identifier was set (ignored on receipt).
    pub(crate) reserved: bool,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; HEADER_LEN]) -> Self {
        let id = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: id & 0x7fff_ffff,
            reserved: id & 0x8000_0000 != 0,
        }
    }

    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this could be a real frame of a peer that follows RFC 9113: a known type, only
    /// that type's flags, the stream identifier and length that type requires, and a length
    /// within `max_len`. Used only to find frames again, never to reject frames while in sync.
    pub(crate) fn plausible(&self, max_len: u32) -> bool {
        if self.reserved || self.len > max_len {
            return false;
        }
        let on_stream = self.stream != 0;
        let (flags_ok, stream_ok, len_ok) = match self.kind {
            DATA => (END_STREAM | PADDED, on_stream, true),
            HEADERS => (
                END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
                on_stream,
                true,
            ),
            PRIORITY => (0, on_stream, self.len == 5),
            RST_STREAM => (0, on_stream, self.len == 4),
            SETTINGS => (
                ACK,
                !on_stream,
                if self.has(ACK) {
                    self.len == 0
                } else {
                    self.len.is_multiple_of(6)
                },
            ),
            PUSH_PROMISE => (END_HEADERS | PADDED, on_stream, self.len >= 4),
            PING => (ACK, !on_stream, self.len == 8),
            GOAWAY => (0, !on_stream, self.len >= 8),
            WINDOW_UPDATE => (0, true, self.len == 4),
            CONTINUATION => (END_HEADERS, on_stream, true),
            _ => return false,
        };
        self.flags & !flags_ok == 0 && stream_ok && len_ok
    }
}

/// The captured byte at offset `pos` of the segment's buffer, if it was captured.
fn byte_at(seg: &Segment<'_>, pos: u64) -> Option<u8> {
    let head = seg.head.len() as u64;
    if pos < head {
        return Some(seg.head[pos as usize]);
    }
    let tail_start = head + seg.gap;
    let i = pos.checked_sub(tail_start)?;
    seg.tail.get(usize::try_from(i).ok()?).copied()
}

/// The frame header at offset `pos` of the segment, when all its bytes were captured.
fn header_at(seg: &Segment<'_>, pos: u64) -> Option<FrameHeader> {
    let mut b = [0u8; HEADER_LEN];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = byte_at(seg, pos + i as u64)?;
    }
    Some(FrameHeader::parse(&b))
}

/// True when a captured segment is a run of whole, plausible HTTP/2 frames: how a connection
/// joined after its preface (the agent started late) is recognised.
pub fn looks_like_frames(seg: &Segment<'_>) -> bool {
    frames_tile(seg, DEFAULT_MAX_FRAME)
}

/// Whether the segment's buffer is a run of whole plausible frames: every frame header in it
/// captured and plausible, and the last frame ending exactly at the segment's end (HTTP/2
/// stacks write whole frames, and a frame-aware capture delivers one per segment). A segment
/// whose last frame runs past its end, or whose frame header is cut or falls in uncaptured
/// bytes, does not count: random bytes rarely chain to the exact end, so this is what keeps
/// frames found again from being bytes of a DATA payload.
pub(crate) fn frames_tile(seg: &Segment<'_>, max_len: u32) -> bool {
    let total = seg.total_len();
    if total == 0 {
        return false;
    }
    let mut pos = 0u64;
    while pos < total {
        match header_at(seg, pos) {
            Some(h) if h.plausible(max_len) => pos += HEADER_LEN as u64 + u64::from(h.len),
            _ => return false,
        }
    }
    pos == total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg<'a>(head: &'a [u8], gap: u64, tail: &'a [u8]) -> Segment<'a> {
        Segment {
            head,
            gap,
            tail,
            enter_ns: 0,
            exit_ns: 0,
            tid: 0,
        }
    }

    #[test]
    fn preface_detection() {
        assert!(looks_like_preface(PREFACE));
        assert!(looks_like_preface(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04"
        ));
        assert!(looks_like_preface(b"PRI"));
        assert!(looks_like_preface(b"PRI * HT"));
        assert!(!looks_like_preface(b"PR"));
        assert!(!looks_like_preface(b""));
        assert!(!looks_like_preface(b"POST / HTTP/1.1\r\n"));
        assert!(!looks_like_preface(b"PRI * HTTP/1.1\r\n"));
    }

    #[test]
    fn header_parse_and_plausibility() {
        let h = FrameHeader::parse(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!((h.len, h.kind, h.flags, h.stream), (6, SETTINGS, 0, 0));
        assert!(h.plausible(DEFAULT_MAX_FRAME));
        let h = FrameHeader::parse(&[0x01, 0, 0, DATA, 1, 0x80, 0, 0, 3]);
        assert!(h.reserved);
        assert_eq!((h.len, h.stream), (65536, 3));
        assert!(!h.plausible(DEFAULT_MAX_FRAME));
        // Wrong flags, stream 0 for DATA, bad fixed lengths, unknown types.
        for b in [
            [0, 0, 1, DATA, 0x2, 0, 0, 0, 1],
            [0, 0, 1, DATA, 0, 0, 0, 0, 0],
            [0, 0, 5, RST_STREAM, 0, 0, 0, 0, 1],
            [0, 0, 7, SETTINGS, 0, 0, 0, 0, 0],
            [0, 0, 8, PING, 0, 0, 0, 0, 1],
            [0, 0, 0, 0x0a, 0, 0, 0, 0, 0],
        ] {
            assert!(
                !FrameHeader::parse(&b).plausible(DEFAULT_MAX_FRAME),
                "{b:?}"
            );
        }
    }

    #[test]
    fn tiling() {
        let settings = [0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0];
        let data = [0, 0, 4, DATA, 0, 0, 0, 0, 1, b'a', b'b', b'c', b'd'];
        let two: Vec<u8> = settings.iter().chain(&data).copied().collect();
        assert!(frames_tile(&seg(&two, 0, &[]), DEFAULT_MAX_FRAME));
        // A frame running past the end does not count.
        assert!(!frames_tile(&seg(&two[..20], 0, &[]), DEFAULT_MAX_FRAME));
        assert!(!frames_tile(&seg(&two[..12], 0, &[]), DEFAULT_MAX_FRAME));
        // A header cut by the end, or in uncaptured bytes, does not count.
        assert!(!frames_tile(&seg(&two[..5], 0, &[]), DEFAULT_MAX_FRAME));
        assert!(!frames_tile(&seg(&two[..5], 8, &[]), DEFAULT_MAX_FRAME));
        // A DATA payload as a gap.
        assert!(frames_tile(&seg(&data[..9], 4, &[]), DEFAULT_MAX_FRAME));
        // Header, gap, then the next header in the tail.
        assert!(frames_tile(
            &seg(&data[..9], 4, &settings),
            DEFAULT_MAX_FRAME
        ));
        assert!(!frames_tile(
            &seg(&data[..9], 5, &settings),
            DEFAULT_MAX_FRAME
        ));
        assert!(!frames_tile(
            &seg(b"GET / HTTP/1.1\r\n", 0, &[]),
            DEFAULT_MAX_FRAME
        ));
        assert!(!frames_tile(&seg(&[], 0, &[]), DEFAULT_MAX_FRAME));
    }
}
