//! Byte-by-byte feeding and every 2-way split of every segment give the same exchanges.

use crate::fixtures::expected;
use crate::support::{FIXTURES, Piece, Side, by_stream, fixture, run_pieces, whole};
use mop_protocol::http2::Http2Limits;

/// The segment an upgrade's 101 response came in: fed whole (the tracker hands exactly that
/// segment to the HTTP/2 parser).
fn keep_whole(name: &str, i: usize) -> bool {
    name == "hypercorn_upgrade" && i <= 1
}

#[test]
fn byte_by_byte() {
    for name in FIXTURES {
        let rec = fixture(name);
        for side in [Side::Server, Side::Client] {
            let pieces = rec.iter().enumerate().flat_map(|(i, (c2s, b))| {
                if keep_whole(name, i) {
                    vec![whole(i, *c2s, b)]
                } else {
                    b.chunks(1).map(|c| whole(i, *c2s, c)).collect()
                }
            });
            let (got, stats) = run_pieces(side, Http2Limits::default(), pieces);
            assert_eq!(
                by_stream(got),
                expected(name, side),
                "{name} byte by byte as {side:?}"
            );
            assert_eq!(stats.errors_total(), 0, "{name}: {stats:?}");
        }
    }
}

/// The cut points tried in a segment of `len` bytes: all of them up to 2 KiB, else the first
/// and last 300 and 400 spread between.
fn cuts(len: usize) -> Vec<usize> {
    if len <= 2048 {
        return (1..len).collect();
    }
    let mut v: Vec<usize> = (1..300).chain(len - 300..len).collect();
    v.extend((0..400).map(|k| 300 + k * (len - 600) / 400));
    v
}

#[test]
fn every_two_way_split() {
    for name in FIXTURES {
        let rec = fixture(name);
        let side = if name.len() % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let want = expected(name, side);
        for (at, (c2s, b)) in rec.iter().enumerate() {
            if keep_whole(name, at) {
                continue;
            }
            for cut in cuts(b.len()) {
                let pieces = rec.iter().enumerate().flat_map(|(i, (c, bytes))| {
                    if i == at {
                        vec![
                            Piece {
                                index: i,
                                c2s: *c2s,
                                head: &b[..cut],
                                gap: 0,
                                tail: &[],
                            },
                            Piece {
                                index: i,
                                c2s: *c2s,
                                head: &b[cut..],
                                gap: 0,
                                tail: &[],
                            },
                        ]
                    } else {
                        vec![whole(i, *c, bytes)]
                    }
                });
                let (got, stats) = run_pieces(side, Http2Limits::default(), pieces);
                assert_eq!(by_stream(got), want, "{name}: segment {at} cut at {cut}");
                assert_eq!(stats.errors_total(), 0, "{name}: segment {at} cut at {cut}");
            }
        }
    }
}

#[test]
fn all_segments_of_a_direction_merged() {
    // Many frames in one segment: each direction's bytes as one segment, requests first.
    for name in ["grpc_calls", "nginx_h2", "hypercorn_h2"] {
        let rec = fixture(name);
        let c2s: Vec<u8> = rec
            .iter()
            .filter(|(c, _)| *c)
            .flat_map(|(_, b)| b.clone())
            .collect();
        let s2c: Vec<u8> = rec
            .iter()
            .filter(|(c, _)| !*c)
            .flat_map(|(_, b)| b.clone())
            .collect();
        let pieces = [whole(0, true, &c2s), whole(1, false, &s2c)];
        let (got, stats) = run_pieces(Side::Server, Http2Limits::default(), pieces);
        let want = expected(name, Side::Server);
        assert_eq!(got.len(), want.len(), "{name}");
        assert_eq!(stats.errors_total(), 0, "{name}");
        for (g, w) in by_stream(got).iter().zip(&want) {
            assert_eq!(
                (&g.method, &g.target, g.status, g.grpc_status),
                (&w.method, &w.target, w.status, w.grpc_status)
            );
            assert_eq!(
                (g.request_body_size, g.response_body_size),
                (w.request_body_size, w.response_body_size)
            );
        }
    }
}
