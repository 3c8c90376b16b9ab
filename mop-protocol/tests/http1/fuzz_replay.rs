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
