//! The capture window: heads cut with gaps, frame-aware segments, connections joined late, and
//! header blocks partly lost. The parser may know less, never something wrong.

use mop_protocol::HttpExchange;
use mop_protocol::http2::{Http2Limits, ParseError};

use crate::fixtures::expected;
use crate::support::{
    FIXTURES, Piece, Side, assert_never_wrong, by_stream, fixture, frame, lit_named, preface,
    run_h2_pieces, run_pieces, whole,
};

/// What the kernel gives for a buffer of `b` with a capture window of `window` bytes and a
/// 16-byte tail.
fn captured(index: usize, c2s: bool, b: &[u8], window: usize) -> Piece<'_> {
    if b.len() <= window {
        return whole(index, c2s, b);
    }
    let tail = (b.len() - window).min(16);
    Piece {
        index,
        c2s,
        head: &b[..window],
        gap: (b.len() - window - tail) as u64,
        tail: &b[b.len() - tail..],
    }
}

#[test]
fn heads_cut_by_the_window() {
    for window in [64, 256, 4096] {
        for name in FIXTURES {
            let rec = fixture(name);
            for side in [Side::Server, Side::Client] {
                let pieces = rec
                    .iter()
                    .enumerate()
                    .map(|(i, (c, b))| captured(i, *c, b, window));
                let (got, stats) = run_pieces(side, Http2Limits::default(), pieces);
                let want = expected(name, side);
                let what = format!("{name} window {window} as {side:?}");
                let exact = assert_never_wrong(&got, &want, &what);
                let flagged = got
                    .iter()
                    .filter(|x| x.request_head_truncated || x.response_head_truncated)
                    .count();
                assert_eq!(stats.degraded_exchanges, flagged as u64, "{what}");
                if window == 4096
                    && !matches!(name, "grpc_concurrent" | "nginx_h2" | "hypercorn_h2")
                {
                    assert_eq!(exact, want.len(), "{what}: {got:#?}");
                }
            }
        }
    }
}

/// One segment per frame, as the frame-aware kernel capture delivers: the frame header and up
/// to `cap` payload bytes, DATA payloads always as a gap. Each segment keeps the index of the
/// recorded segment its frame started in.
fn frame_aware(rec: &[(bool, Vec<u8>)], cap: usize) -> Vec<(usize, bool, Vec<u8>, u64)> {
    let mut out = Vec::new();
    for dir in [true, false] {
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        for (i, (c, b)) in rec.iter().enumerate() {
            if *c == dir {
                starts.extend(std::iter::repeat_n(i, b.len()));
                stream.extend_from_slice(b);
            }
        }
        let mut at = 0;
        if stream.starts_with(mop_protocol::http2::PREFACE) {
            out.push((starts[0], dir, stream[..24].to_vec(), 0));
            at = 24;
        }
        while at + 9 <= stream.len() {
            let len = u32::from_be_bytes([0, stream[at], stream[at + 1], stream[at + 2]]) as usize;
            let kept = if stream[at + 3] == 0 { 0 } else { len.min(cap) };
            let end = (at + 9 + len).min(stream.len());
            let head = stream[at..(at + 9 + kept).min(end)].to_vec();
            out.push((
                starts[at],
                dir,
                head,
                (end - at - 9 - kept.min(end - at - 9)) as u64,
            ));
            at = end;
        }
    }
    // Both directions interleaved in recorded order (stable: request frames first on ties).
    out.sort_by_key(|(i, c, _, _)| (*i, !*c));
    out
}

fn untimed(v: Vec<HttpExchange>) -> Vec<HttpExchange> {
    by_stream(v)
        .into_iter()
        .map(|mut x| {
            x.request_start_ns = 0;
            x.request_first_exit_ns = 0;
            x.request_end_ns = 0;
            x.response_start_ns = 0;
            x.response_end_ns = 0;
            x.request_tid = 0;
            x
        })
        .collect()
}

#[test]
fn frame_aware_segments() {
    for name in FIXTURES.iter().filter(|n| **n != "hypercorn_upgrade") {
        let rec = fixture(name);
        for side in [Side::Server, Side::Client] {
            let segs = frame_aware(&rec, 4096);
            let pieces = segs.iter().map(|(i, c, h, gap)| Piece {
                index: *i,
                c2s: *c,
                head: h,
                gap: *gap,
                tail: &[],
            });
            let (got, stats) = run_pieces(side, Http2Limits::default(), pieces);
            assert_eq!(
                untimed(got),
                untimed(expected(name, side)),
                "{name} as {side:?}"
            );
            assert_eq!(stats.errors_total(), 0, "{name}: {stats:?}");
            // A small cap cuts header blocks: less is known, nothing is wrong.
            let segs = frame_aware(&rec, 20);
            let pieces = segs.iter().map(|(i, c, h, gap)| Piece {
                index: *i,
                c2s: *c,
                head: h,
                gap: *gap,
                tail: &[],
            });
            let (got, stats) = run_pieces(side, Http2Limits::default(), pieces);
            assert_never_wrong(&got, &expected(name, side), &format!("{name} cap 20"));
            assert_eq!(
                stats.count(ParseError::LostSync),
                0,
                "{name}: frame sync is never lost"
            );
        }
    }
}

#[test]
fn joined_mid_connection() {
    for name in FIXTURES.iter().filter(|n| **n != "hypercorn_upgrade") {
        let rec = fixture(name);
        for side in [Side::Server, Side::Client] {
            let want = expected(name, side);
            for skip in 1..rec.len() {
                let pieces = rec
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .map(|(i, (c, b))| whole(i, *c, b));
                let (got, _) = run_h2_pieces(side, Http2Limits::default(), pieces);
                assert_never_wrong(
                    &got,
                    &want,
                    &format!("{name} from segment {skip} as {side:?}"),
                );
            }
        }
    }
    // gRPC joined after the first call: later calls refer to the dynamic table for :path and
    // content-type, which the parser never saw. They are reported, degraded, never wrong.
    let rec = fixture("grpc_calls");
    let pieces = rec
        .iter()
        .enumerate()
        .skip(7)
        .map(|(i, (c, b))| whole(i, *c, b));
    let (got, stats) = run_h2_pieces(Side::Server, Http2Limits::default(), pieces);
    let got = by_stream(got);
    assert_eq!(
        got.iter().map(|x| x.stream_id).collect::<Vec<_>>(),
        [3, 5, 7, 9, 11],
        "{stats:?}"
    );
    for x in &got {
        // content-type (and :authority) refer to entries of stream 1's block.
        assert!(x.request_head_truncated);
        assert_eq!(x.content_type, None);
        assert!(x.status.is_some());
    }
    // Stream 3 repeats stream 1's :path (a dynamic reference, unknown); the later calls send
    // their new paths as literals, known again.
    let targets: Vec<_> = got.iter().map(|x| x.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "",
            "/demo.v1.Echo/Count",
            "/demo.v1.Echo/Total",
            "/demo.v1.Echo/Missing",
            "/demo.v1.Echo/Slow"
        ]
    );
    // Stream 3's trailers refer to the `grpc-status: 0` entry stream 1 inserted.
    assert_eq!(got[0].grpc_status, None);
    assert!(got[0].response_head_truncated);
    assert_never_wrong(
        &got,
        &expected("grpc_calls", Side::Server),
        "grpc joined at 7",
    );
    assert!(stats.unknown_fields > 0);
    assert_eq!(
        stats.count(ParseError::HpackInvalidIndex),
        0,
        "unknown, not invalid"
    );
}

/// A client connection with a HEADERS block whose middle was not captured, then requests that
/// refer to dynamic entries: an index that meant an entry the lost part inserted is unknown
/// (the table before the loss would give a wrong, older entry), new ones are known again.
#[test]
fn gap_inside_a_header_block_then_dynamic_references() {
    // Stream 1, captured: inserts :path /svc.A/Get (62).
    let f1 = frame(
        1,
        0x5,
        1,
        &[vec![0x83], lit_named(4, "/svc.A/Get")].concat(),
    );
    // Stream 3, its middle lost: inserts :path /svc.Z/Zap, then :authority host-z.
    let block3 = [
        vec![0x83],
        lit_named(4, "/svc.Z/Zap"),
        lit_named(1, "host-z"),
    ]
    .concat();
    let f3 = frame(1, 0x5, 3, &block3);
    // Stream 5 refers to 63 (the encoder's /svc.Z/Zap; /svc.A/Get before the loss) and 62.
    let f5 = frame(1, 0x5, 5, &[0x83, 0xbf, 0xbe]);
    // Stream 7 inserts a new :path (62) and refers to it on stream 9; 63 stays unknown.
    let f7 = frame(
        1,
        0x5,
        7,
        &[vec![0x83], lit_named(4, "/svc.B/Put")].concat(),
    );
    let f9 = frame(1, 0x5, 9, &[0x83, 0xbe, 0xbf]);
    let ok: Vec<Vec<u8>> = [1, 3, 5, 7, 9]
        .iter()
        .map(|&s| frame(1, 0x5, s, &[0x88]))
        .collect();
    let pre = preface();
    let cut = 9 + 4; // frame header, :method, 3 bytes of the :path literal
    let pieces = vec![
        whole(0, true, &pre),
        whole(1, true, &f1),
        whole(2, false, &ok[0]),
        Piece {
            index: 3,
            c2s: true,
            head: &f3[..cut],
            gap: (f3.len() - cut - 2) as u64,
            tail: &f3[f3.len() - 2..],
        },
        whole(4, false, &ok[1]),
        whole(5, true, &f5),
        whole(6, false, &ok[2]),
        whole(7, true, &f7),
        whole(8, false, &ok[3]),
        whole(9, true, &f9),
        whole(10, false, &ok[4]),
    ];
    let (got, stats) = run_pieces(Side::Server, Http2Limits::default(), pieces);
    let got = by_stream(got);
    let view: Vec<_> = got
        .iter()
        .map(|x| {
            (
                x.stream_id,
                x.method.as_str(),
                x.target.as_str(),
                x.host.as_deref(),
                x.request_head_truncated,
                x.status,
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            (1, "POST", "/svc.A/Get", None, false, Some(200)),
            (3, "POST", "", None, true, Some(200)),
            (5, "POST", "", None, true, Some(200)),
            (7, "POST", "/svc.B/Put", None, false, Some(200)),
            (9, "POST", "/svc.B/Put", None, true, Some(200)),
        ]
    );
    assert_eq!(stats.count(ParseError::HeaderBlockLost), 1);
    assert_eq!(stats.count(ParseError::LostSync), 0);
}
