//! The same bytes, cut into segments differently, give the same exchanges.
//!
//! Every piece of a recorded segment keeps that segment's timestamps, so even the timestamps
//! must not change.

use mop_protocol::http1::Http1Limits;

use crate::fixtures::{ALL, expected};
use crate::support::{Piece, Side, fixture, run_pieces, whole};

#[test]
fn byte_by_byte() {
    for name in ALL {
        let rec = fixture(name);
        let pieces = rec
            .iter()
            .enumerate()
            .flat_map(|(i, (c2s, b))| b.chunks(1).map(move |c| whole(i, *c2s, c)));
        let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
        assert_eq!(got, expected(name), "{name}");
        assert_eq!(conn.stats().errors_total(), 0, "{name}");
    }
}

#[test]
fn every_two_way_split() {
    for name in ALL {
        let rec = fixture(name);
        let want = expected(name);
        for (cut_seg, (_, bytes)) in rec.iter().enumerate() {
            for at in 1..bytes.len() {
                let pieces = rec.iter().enumerate().flat_map(|(i, (c2s, b))| {
                    let parts: Vec<Piece<'_>> = if i == cut_seg {
                        vec![whole(i, *c2s, &b[..at]), whole(i, *c2s, &b[at..])]
                    } else {
                        vec![whole(i, *c2s, b)]
                    };
                    parts
                });
                let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
                assert_eq!(got, want, "{name}: segment {cut_seg} split at {at}");
                assert_eq!(
                    conn.stats().errors_total(),
                    0,
                    "{name}: segment {cut_seg} split at {at}"
                );
            }
        }
    }
}

#[test]
fn all_segments_of_a_direction_merged() {
    // The other extreme: consecutive segments of one direction fed as one buffer (a process
    // that reads everything at once). Timestamps then come from the first merged segment.
    for name in ALL {
        let rec = fixture(name);
        let mut merged: Vec<(usize, bool, Vec<u8>)> = Vec::new();
        for (i, (c2s, b)) in rec.iter().enumerate() {
            match merged.last_mut() {
                Some((_, d, buf)) if d == c2s => buf.extend_from_slice(b),
                _ => merged.push((i, *c2s, b.clone())),
            }
        }
        let pieces = merged.iter().map(|(i, c2s, b)| whole(*i, *c2s, b));
        let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
        assert_eq!(got.len(), expected(name).len(), "{name}");
        for (g, w) in got.iter().zip(expected(name)) {
            assert_eq!(
                (
                    &g.method,
                    &g.target,
                    &g.host,
                    g.status,
                    g.request_body_size,
                    g.response_body_size
                ),
                (
                    &w.method,
                    &w.target,
                    &w.host,
                    w.status,
                    w.request_body_size,
                    w.response_body_size
                ),
                "{name}"
            );
        }
        assert_eq!(conn.stats().errors_total(), 0, "{name}");
    }
}

#[test]
fn every_prefix_then_close() {
    // The connection closes after any byte: nothing panics, exchanges keep their order and
    // their request lines, and only the parts actually seen are reported.
    for name in ALL.into_iter().filter(|&n| n != "nginx_big") {
        let rec = fixture(name);
        let want = expected(name);
        let total: usize = rec.iter().map(|(_, b)| b.len()).sum();
        for cut in 0..=total {
            let mut left = cut;
            let pieces = rec.iter().enumerate().map_while(|(i, (c2s, b))| {
                if left == 0 {
                    return None;
                }
                let n = left.min(b.len());
                left -= n;
                Some(whole(i, *c2s, &b[..n]))
            });
            let (got, _) = run_pieces(Side::Server, Http1Limits::default(), pieces);
            assert!(got.len() <= want.len(), "{name} cut at {cut}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (&g.method, g.request_start_ns),
                    (&w.method, w.request_start_ns),
                    "{name} cut at {cut}"
                );
                assert!(
                    g.status.is_none() || g.status == w.status,
                    "{name} cut at {cut}"
                );
                assert!(
                    g.response_body_size <= w.response_body_size,
                    "{name} cut at {cut}"
                );
            }
            if cut == total {
                assert_eq!(got, want, "{name}");
            }
        }
    }
}

#[test]
fn stats_drain() {
    let mut conn = mop_protocol::http1::Http1Connection::default();
    let mut out = Vec::new();
    conn.feed(
        mop_protocol::Direction::Egress,
        &crate::support::seg(0, b"HTTP/1.1 204 No Content\r\n\r\n"),
        &mut out,
    );
    let s = conn.take_stats();
    assert_eq!(
        s.count(mop_protocol::http1::ParseError::ResponseWithoutRequest),
        1
    );
    assert_eq!(conn.stats().errors_total(), 0);
    let mut sum = mop_protocol::http1::Http1Stats::default();
    sum.add(&s);
    sum.add(&s);
    assert_eq!(
        sum.errors()
            .find(|(k, _)| *k == mop_protocol::http1::ParseError::ResponseWithoutRequest),
        Some((mop_protocol::http1::ParseError::ResponseWithoutRequest, 2))
    );
}
