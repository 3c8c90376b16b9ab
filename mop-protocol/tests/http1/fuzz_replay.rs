//! Inputs the fuzzer (`fuzz/fuzz_targets/http1.rs`) found, replayed with the same decoding and
//! the same invariants, from `tests/fixtures/fuzz/http1/`.

use mop_protocol::http1::{Http1Connection, Http1Limits};
use mop_protocol::{Direction, HttpExchange, Segment};

/// The fuzz target's invariants on what comes out.
pub(crate) fn check(out: &[HttpExchange]) {
    for x in out {
        assert!(x.request_start_ns <= x.request_end_ns, "{x:?}");
        if x.response_start_ns != 0 {
            assert!(x.response_start_ns <= x.response_end_ns, "{x:?}");
        }
        if x.status.is_none() && x.response_start_ns != 0 {
            assert!(
                x.response_head_truncated,
                "a response without a status must be cut: {x:?}"
            );
        }
        if x.request_body_size_unknown {
            assert_eq!(x.request_body_size, 0, "{x:?}");
        }
        if x.response_body_size_unknown {
            assert_eq!(x.response_body_size, 0, "{x:?}");
        }
    }
}

/// Decodes a fuzz input exactly as the fuzz target does, feeds it, checks the invariants.
pub(crate) fn replay(data: &[u8]) -> Vec<HttpExchange> {
    let [limits, window, rest @ ..] = data else {
        return Vec::new();
    };
    let mut rest: &[u8] = rest;
    let limits = Http1Limits {
        max_head_bytes: 16 + usize::from(*limits & 0x7f) * 8,
        max_pending: usize::from(*limits >> 4),
    };
    let window = 1 + usize::from(*window);
    let mut conn = Http1Connection::new(limits);
    let mut out = Vec::new();
    let mut t = 0u64;
    while let [ctl, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        t += 10;
        let dir = if ctl & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let seg = |head, gap, tail| Segment {
            head,
            gap,
            tail,
            enter_ns: t,
            exit_ns: t + 5,
            tid: 7,
        };
        match (ctl >> 1) & 3 {
            1 if bytes.len() > window => {
                let tail = (bytes.len() - window).min(16);
                let extra = u64::from(ctl >> 3) * 1000;
                let gap = (bytes.len() - window - tail) as u64 + extra;
                conn.feed(
                    dir,
                    &seg(&bytes[..window], gap, &bytes[bytes.len() - tail..]),
                    &mut out,
                );
            }
            0 | 1 => conn.feed(dir, &seg(bytes, 0, &[]), &mut out),
            2 => conn.feed(
                dir,
                &seg(&[], u64::from(ctl >> 3) << (len % 40), &[]),
                &mut out,
            ),
            _ => {
                conn.on_close(t, &mut out);
                assert_eq!(conn.pending(), 0);
            }
        }
        assert!(conn.pending() <= limits.max_pending.max(1));
    }
    conn.on_close(t + 1, &mut out);
    assert_eq!(conn.pending(), 0);
    check(&out);
    out
}

fn dir() -> std::path::PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "fuzz",
        "http1",
    ]
    .iter()
    .collect()
}

#[test]
fn every_saved_fuzz_input_replays_cleanly() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let _ = replay(&data);
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn cut_status_line_keeps_the_response_time_and_says_so() {
    // First fuzz find: with an 8-byte window the status line of the response was cut; the
    // exchange keeps when the response came and flags the cut instead of inventing a status.
    let out = replay(&std::fs::read(dir().join("cut-status-line")).unwrap());
    let x = out.iter().find(|x| x.method == "HEAD").unwrap();
    assert_eq!(
        (x.status, x.response_start_ns, x.response_head_truncated),
        (None, 20, true)
    );
}

/// The `http1_split` target: one run as recorded, one byte per segment; when the first met no
/// problem, both must agree, and the first problem counted must be the same either way.
pub(crate) fn replay_split(data: &[u8]) {
    let [limits, rest @ ..] = data else {
        return;
    };
    let limits = Http1Limits {
        max_head_bytes: 64 + usize::from(*limits & 0x7f) * 64,
        max_pending: 1 + usize::from(*limits >> 4),
    };
    let mut rest: &[u8] = rest;
    let mut records = Vec::new();
    while let [ctl, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let dir = if ctl & 1 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        records.push((dir, bytes));
    }
    let run = |piece: usize| {
        let mut conn = Http1Connection::new(limits);
        let mut out = Vec::new();
        for (i, (dir, bytes)) in records.iter().enumerate() {
            let t = 10 * i as u64;
            for p in bytes.chunks(piece) {
                let seg = Segment {
                    head: p,
                    gap: 0,
                    tail: &[],
                    enter_ns: t,
                    exit_ns: t + 5,
                    tid: i as u32,
                };
                conn.feed(*dir, &seg, &mut out);
            }
        }
        conn.on_close(u64::MAX, &mut out);
        (out, *conn.stats())
    };
    let (whole, stats) = run(usize::MAX);
    let (split, _) = run(1);
    if stats.errors_total() == 0 && stats.truncated_heads == 0 {
        assert_eq!(whole, split);
    }
}

#[test]
fn every_saved_split_fuzz_input_replays_cleanly() {
    let dir = dir().with_file_name("http1_split");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        replay_split(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn control_bytes_in_a_reason_phrase_are_rejected_however_the_head_arrives() {
    // Found by `http1_split`: "HTTP/1.1 200 O\0\0..." was accepted in one piece and rejected
    // byte by byte.
    for piece in [usize::MAX, 1] {
        let mut conn = Http1Connection::default();
        let mut out = Vec::new();
        let seg = |b| Segment {
            head: b,
            gap: 0,
            tail: &[],
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        conn.feed(
            Direction::Ingress,
            &seg(b"GET / HTTP/1.1\r\n\r\n"),
            &mut out,
        );
        for p in b"HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n".chunks(piece) {
            conn.feed(Direction::Egress, &seg(p), &mut out);
        }
        assert_eq!(
            conn.stats()
                .count(mop_protocol::http1::ParseError::InvalidStartLine),
            1,
            "{piece}"
        );
        assert!(out.is_empty(), "{piece}");
    }
}

#[test]
fn an_over_long_method_is_rejected_however_it_arrives() {
    // Found by `http1_split`: a 56-byte method split after 27 bytes was accepted, because the
    // method check only ran on short buffers; in one piece or byte by byte it was rejected.
    let req = format!("HEA{}D /x HTTP/1.1\r\n\r\n", "t".repeat(51));
    for cut in [1, 27, 33, 40, req.len()] {
        let mut conn = Http1Connection::default();
        let mut out = Vec::new();
        let seg = |b| Segment {
            head: b,
            gap: 0,
            tail: &[],
            enter_ns: 1,
            exit_ns: 2,
            tid: 3,
        };
        for p in req.as_bytes().chunks(cut) {
            conn.feed(Direction::Ingress, &seg(p), &mut out);
        }
        conn.on_close(5, &mut out);
        assert!(out.is_empty(), "{cut}");
        assert_eq!(
            conn.stats()
                .count(mop_protocol::http1::ParseError::UnexpectedBytes),
            1,
            "{cut}"
        );
    }
}
