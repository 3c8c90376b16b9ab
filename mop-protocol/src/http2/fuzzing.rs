//! Drivers shared by the fuzz targets (`fuzz/fuzz_targets/http2_frames.rs` and `hpack.rs`) and
//! the tests that replay what they found, so both decode an input the same way. Not part of the
//! API: they panic when an invariant breaks.

use super::hpack::{Decoder, FieldSink, HpackError};
use super::{Http2Connection, Http2Limits, PREFACE, ParseError};
use crate::exchange::{HttpExchange, HttpVersion};
use crate::segment::{Direction, Segment};

/// Splits `rest` into records of a control byte, a length byte and that many bytes.
fn records(mut rest: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let [ctl, len, tail @ ..] = rest {
        let (bytes, next) = tail.split_at(usize::from(*len).min(tail.len()));
        out.push((*ctl, bytes));
        rest = next;
    }
    out
}

/// The parser's heap never grows past this with the limits [`frames`] picks.
const HEAP_BOUND: usize = 4 * 1024 * 1024;

/// Invariants of every exchange, whatever the input.
fn check(out: &[HttpExchange]) {
    for x in out {
        assert_eq!(x.version, HttpVersion::Http2);
        assert!(x.stream_id % 2 == 1 || x.stream_id == 0, "{x:?}");
        assert!(x.request_start_ns <= x.request_end_ns, "{x:?}");
        if x.method.is_empty() || (x.target.is_empty() && x.method != "CONNECT") {
            assert!(
                x.request_head_truncated,
                "unknown fields must be flagged: {x:?}"
            );
        }
        if x.response_start_ns != 0 {
            assert!(x.response_start_ns <= x.response_end_ns, "{x:?}");
        }
    }
}

struct Seg<'a> {
    dir: Direction,
    head: &'a [u8],
    gap: u64,
    index: u64,
}

fn run(limits: Http2Limits, segs: &[Seg<'_>]) -> (Vec<HttpExchange>, super::Http2Stats) {
    let mut conn = Http2Connection::new(limits);
    let mut out = Vec::new();
    for s in segs {
        let seg = Segment {
            head: s.head,
            gap: s.gap,
            tail: &[],
            enter_ns: s.index * 10,
            exit_ns: s.index * 10 + 5,
            tid: s.index as u32,
        };
        conn.feed(s.dir, &seg, &mut out);
        assert!(conn.heap_bytes() < HEAP_BOUND, "{}", conn.heap_bytes());
    }
    conn.on_close(u64::MAX, &mut out);
    assert_eq!(conn.open_streams(), 0);
    check(&out);
    (out, conn.take_stats())
}

/// Frames fed in the input's segments (a config byte, then records of a control byte, a length
/// and bytes: bit 0 the direction, bit 1 a gap of `ctl >> 2` bytes after the bytes), checked for
/// invariants and bounded memory. When no record has a gap, the same bytes with every segment
/// cut in two must give the same exchanges, unless frame sync was lost on the way; and with half
/// of one segment not captured, what is known must agree with the full run.
pub fn frames(data: &[u8]) {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let limits = Http2Limits {
        max_streams: 1 + usize::from(cfg & 7) * 8,
        max_header_block_bytes: 64 << ((cfg >> 3) & 7),
        max_table_size: 256 << ((cfg >> 3) & 7),
        keep_grpc_message: cfg & 0x80 != 0,
    };
    let preface = [(0u8, &PREFACE[..])];
    let recs = records(rest);
    let all: Vec<(u8, &[u8])> = if cfg & 0x40 == 0 {
        preface.iter().copied().chain(recs).collect()
    } else {
        recs
    };
    let dir = |ctl: u8| {
        if ctl & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    };
    let segs: Vec<Seg<'_>> = all
        .iter()
        .enumerate()
        .map(|(i, &(ctl, b))| Seg {
            dir: dir(ctl),
            head: b,
            gap: if ctl & 2 == 0 { 0 } else { u64::from(ctl >> 2) },
            index: i as u64,
        })
        .collect();
    let (a, sa) = run(limits, &segs);
    if segs.iter().any(|s| s.gap > 0) {
        return;
    }
    let halves: Vec<Seg<'_>> = all
        .iter()
        .enumerate()
        .flat_map(|(i, &(ctl, b))| {
            let cut = usize::from(ctl >> 2).min(b.len());
            [&b[..cut], &b[cut..]].map(|head| Seg {
                dir: dir(ctl),
                head,
                gap: 0,
                index: i as u64,
            })
        })
        .collect();
    let (b, sb) = run(limits, &halves);
    let clean = |s: &super::Http2Stats| {
        s.count(ParseError::LostSync) == 0
            && s.count(ParseError::InvalidPreface) == 0
            && s.skipped_segments == 0
            && s.joined_late == 0
    };
    if clean(&sa) && clean(&sb) {
        assert_eq!(a, b, "split segments changed the exchanges");
        assert_eq!(sa, sb, "split segments changed the counters");
    }
    // The same bytes with the second half of one segment not captured.
    let j = usize::from(cfg) % segs.len().max(1);
    let mut gapped: Vec<Seg<'_>> = all
        .iter()
        .enumerate()
        .map(|(i, &(ctl, b))| Seg {
            dir: dir(ctl),
            head: b,
            gap: 0,
            index: i as u64,
        })
        .collect();
    if let Some(s) = gapped.get_mut(j) {
        let keep = s.head.len() / 2;
        s.gap = (s.head.len() - keep) as u64;
        s.head = &s.head[..keep];
    }
    let (c, sc) = run(limits, &gapped);
    let same_fate = |x: &super::Http2Stats, y: &super::Http2Stats| {
        x.resets == y.resets
            && [ParseError::StreamAbandoned, ParseError::TooManyStreams]
                .iter()
                .all(|&k| x.count(k) == y.count(k))
    };
    if clean(&sa) && clean(&sc) && same_fate(&sa, &sc) {
        never_wrong(&c, &a);
    }
}

/// Every exchange of `lossy` agrees with the one for its stream in `full` wherever it claims to
/// know something, unless the full run did not know either (its block was flagged).
fn never_wrong(lossy: &[HttpExchange], full: &[HttpExchange]) {
    for x in lossy {
        let Some(y) = full.iter().find(|y| y.stream_id == x.stream_id) else {
            continue;
        };
        let req_known = !y.request_head_truncated;
        let resp_known = !y.response_head_truncated && y.status.is_some();
        assert_eq!(x.role, y.role);
        if !x.method.is_empty() && req_known {
            assert_eq!(x.method, y.method, "{x:?}\n{y:?}");
        }
        if !x.target.is_empty() && req_known {
            assert_eq!(x.target, y.target, "{x:?}\n{y:?}");
        }
        for (a, b) in [
            (&x.host, &y.host),
            (&x.content_type, &y.content_type),
            (&x.trace_headers.traceparent, &y.trace_headers.traceparent),
        ] {
            if a.is_some() && req_known {
                assert_eq!(a, b, "{x:?}\n{y:?}");
            }
        }
        if x.status.is_some() && resp_known {
            assert_eq!(x.status, y.status, "{x:?}\n{y:?}");
        }
        if x.grpc_status.is_some() && resp_known && y.grpc_status.is_some() {
            assert_eq!(x.grpc_status, y.grpc_status, "{x:?}\n{y:?}");
        }
        if !x.request_body_size_unknown && !y.request_body_size_unknown {
            assert_eq!(x.request_body_size, y.request_body_size, "{x:?}\n{y:?}");
        }
        if !x.response_body_size_unknown && !y.response_body_size_unknown {
            assert_eq!(x.response_body_size, y.response_body_size, "{x:?}\n{y:?}");
        }
    }
}

/// A field's name and value, `None` when unknown.
type Field = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Every field, known or not, and the errors.
#[derive(Debug, Default, PartialEq, Eq)]
struct All {
    fields: Vec<Field>,
    errors: Vec<HpackError>,
}

impl FieldSink for All {
    fn field(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        self.fields
            .push((name.map(<[u8]>::to_vec), value.map(<[u8]>::to_vec)));
    }
    fn error(&mut self, e: HpackError) {
        self.errors.push(e);
    }
}

/// Header blocks (a config byte, then records of a length byte and bytes) decoded three ways:
/// whole; in two fragments, which must give the same fields and table; and with one block cut
/// by a gap, after which every field must be the one the exact decoder got, or unknown.
pub fn hpack(data: &[u8]) {
    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let cap = 64 << (cfg & 7);
    let pending = 64 << ((cfg >> 3) & 3);
    let lost_block = usize::from(cfg >> 5);
    let mut blocks = Vec::new();
    while let [len, tail @ ..] = rest {
        let (b, next) = tail.split_at(usize::from(*len).min(tail.len()));
        blocks.push(b);
        rest = next;
    }
    let mut exact = Decoder::new(cap, pending);
    let mut split = Decoder::new(cap, pending);
    let mut lossy = Decoder::new(cap, pending);
    for (k, block) in blocks.iter().enumerate() {
        let mut a = All::default();
        exact.decode_block(block, &mut a);
        let cut = block.len() / 2 + usize::from(cfg) % (block.len() / 2 + 1);
        let cut = cut.min(block.len());
        let mut s = All::default();
        split.fragment(&block[..cut], &mut s);
        split.fragment(&block[cut..], &mut s);
        split.end_block(&mut s);
        assert_eq!(a, s, "block {k} split at {cut}");
        assert_eq!(
            (exact.table_len(), exact.table_size(), exact.inserted()),
            (split.table_len(), split.table_size(), split.inserted())
        );
        let mut l = All::default();
        if k == lost_block {
            lossy.fragment(&block[..cut], &mut l);
            lossy.lost();
            lossy.fragment(&block[cut..], &mut l);
            lossy.end_block(&mut l);
            assert!(l.fields.len() <= a.fields.len());
            assert_eq!(l.fields, a.fields[..l.fields.len()], "before the gap");
        } else {
            lossy.decode_block(block, &mut l);
            assert_eq!(l.fields.len(), a.fields.len(), "block {k}");
            for (i, (got, want)) in l.fields.iter().zip(&a.fields).enumerate() {
                // Where the exact decoder knows, the lossy one agrees or does not know.
                if want.0.is_some() {
                    assert!(
                        got.0.is_none() || got.0 == want.0,
                        "block {k} field {i} name"
                    );
                }
                if want.1.is_some() {
                    assert!(
                        got.1.is_none() || got.1 == want.1,
                        "block {k} field {i} value"
                    );
                }
            }
        }
        for d in [&exact, &split, &lossy] {
            assert!(d.table_size() <= cap);
            assert!(
                d.heap_bytes() < 16 * cap + 8 * pending + 4096,
                "{}",
                d.heap_bytes()
            );
        }
    }
}
