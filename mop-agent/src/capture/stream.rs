//! Keeping each direction of a connection in order with the kernel's own TCP stream
//! positions: a syscall the probes never reported (the kernel can skip a program) shows as a
//! gap, and bytes reported twice (`MSG_PEEK`) as an overlap.
//!
//! The parsers are told about gaps as uncaptured bytes of known length, so a lost segment
//! inside a body is skipped by count and a lost head makes them resynchronise, instead of
//! pairing later responses with the wrong requests.

use mop_protocol::Segment;

/// Where a data record falls relative to what was already seen in its direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// Right after the previous record (or the first with a position).
    InOrder,
    /// This many bytes were never reported before it.
    Gap(u64),
    /// Its first this-many bytes were already reported (only the rest is new).
    Overlap(u64),
    /// Everything in it was already reported.
    Duplicate,
}

/// The next expected stream position of one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamPosition {
    next: Option<u32>,
}

impl StreamPosition {
    /// Places a record of `len` bytes that ended at stream position `end` (wrapping u32).
    pub fn place(&mut self, end: u32, len: u64) -> Alignment {
        // Positions are 32-bit and wrap: compare with wrapping arithmetic, reading a forward
        // distance below 2^31 as ahead and anything else as behind.
        let start = end.wrapping_sub(len as u32);
        let alignment = match self.next {
            None => Alignment::InOrder,
            Some(expected) => {
                let ahead = start.wrapping_sub(expected);
                if ahead == 0 {
                    Alignment::InOrder
                } else if ahead < 1 << 31 {
                    Alignment::Gap(u64::from(ahead))
                } else {
                    let behind = u64::from(expected.wrapping_sub(start));
                    if behind >= len {
                        Alignment::Duplicate
                    } else {
                        Alignment::Overlap(behind)
                    }
                }
            }
        };
        if alignment != Alignment::Duplicate {
            self.next = Some(end);
        }
        alignment
    }
}

/// `seg` without its first `n` bytes (from the head, then the gap, then the tail).
pub fn trim_front<'a>(seg: &Segment<'a>, n: u64) -> Segment<'a> {
    let mut out = *seg;
    let head = usize::try_from(n).unwrap_or(usize::MAX).min(out.head.len());
    out.head = &out.head[head..];
    let mut rest = n - head as u64;
    let gap = rest.min(out.gap);
    out.gap -= gap;
    rest -= gap;
    let tail = usize::try_from(rest)
        .unwrap_or(usize::MAX)
        .min(out.tail.len());
    out.tail = &out.tail[tail..];
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_records_in_order_with_gaps_and_overlaps() {
        let mut p = StreamPosition::default();
        assert_eq!(p.place(100, 100), Alignment::InOrder);
        assert_eq!(p.place(150, 50), Alignment::InOrder);
        // 30 bytes (150..180) never reported.
        assert_eq!(p.place(200, 20), Alignment::Gap(30));
        // A peek of 200..210, then the real read of 200..230: 10 bytes seen twice.
        assert_eq!(p.place(210, 10), Alignment::InOrder);
        assert_eq!(p.place(230, 30), Alignment::Overlap(10));
        assert_eq!(p.place(230, 30), Alignment::Duplicate);
        assert_eq!(p.place(240, 10), Alignment::InOrder);
    }

    #[test]
    fn positions_wrap() {
        let mut p = StreamPosition::default();
        assert_eq!(p.place(u32::MAX - 9, 10), Alignment::InOrder);
        assert_eq!(p.place(10, 20), Alignment::InOrder);
        assert_eq!(p.place(40, 10), Alignment::Gap(20));
    }

    #[test]
    fn trims_head_then_gap_then_tail() {
        let seg = Segment {
            head: b"abcdef",
            gap: 10,
            tail: b"xyz",
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        let t = trim_front(&seg, 4);
        assert_eq!((t.head, t.gap, t.tail), (&b"ef"[..], 10, &b"xyz"[..]));
        let t = trim_front(&seg, 10);
        assert_eq!((t.head, t.gap, t.tail), (&b""[..], 6, &b"xyz"[..]));
        let t = trim_front(&seg, 17);
        assert_eq!((t.head, t.gap, t.tail), (&b""[..], 0, &b"yz"[..]));
        assert_eq!(t.total_len(), seg.total_len() - 17);
    }
}
