//! Drivers shared by the fuzz targets (`fuzz/fuzz_targets/http1*.rs`) and the tests that replay
//! what they found, so both decode an input the same way. Not part of the API: they panic when
//! an invariant breaks.

use super::{Http1Connection, Http1Limits};
use crate::exchange::HttpExchange;
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

const fn direction(ctl: u8) -> Direction {
    if ctl & 1 == 0 {
        Direction::Ingress
    } else {
        Direction::Egress
    }
}

/// Invariants of every exchange, whatever the input.
pub fn check(out: &[HttpExchange]) {
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

/// The `http1` target. Input: a limits byte, a capture-window byte, then records whose control
/// byte picks the direction (bit 0) and what the kernel captured (bits 1-2: everything; a head
/// cut by the window, a gap and a 16-byte tail; only a gap, as sendfile gives; or a close of
/// the connection). Returns the exchanges, checked.
pub fn segments(data: &[u8]) -> Vec<HttpExchange> {
    let [limits, window, rest @ ..] = data else {
        return Vec::new();
    };
    let limits = Http1Limits {
        max_head_bytes: 16 + usize::from(*limits & 0x7f) * 8,
        max_pending: usize::from(*limits >> 4),
    };
    let window = 1 + usize::from(*window);
    let mut conn = Http1Connection::new(limits);
    let mut out = Vec::new();
    let mut t = 0u64;
    for (ctl, bytes) in records(rest) {
        t += 10;
        let dir = direction(ctl);
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
                &seg(&[], u64::from(ctl >> 3) << (bytes.len() % 40), &[]),
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

/// The `http1_split` target: the records (a limits byte first; capture bits ignored) fed as
/// they are and one byte per segment. With no gaps parsing is byte-driven, so when the first
/// run met no problem both must give the same exchanges.
pub fn split(data: &[u8]) {
    let [limits, rest @ ..] = data else {
        return;
    };
    let limits = Http1Limits {
        max_head_bytes: 64 + usize::from(*limits & 0x7f) * 64,
        max_pending: 1 + usize::from(*limits >> 4),
    };
    let records = records(rest);
    let run = |piece: usize| {
        let mut conn = Http1Connection::new(limits);
        let mut out = Vec::new();
        for (i, (ctl, bytes)) in records.iter().enumerate() {
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
                conn.feed(direction(*ctl), &seg, &mut out);
            }
        }
        conn.on_close(u64::MAX, &mut out);
        let clean = conn.stats().errors_total() == 0 && conn.stats().truncated_heads == 0;
        (out, clean)
    };
    let (whole, clean) = run(usize::MAX);
    if clean {
        assert_eq!(whole, run(1).0);
    }
}
