//! Differential: the same byte stream fed in its own segments and one byte per segment must
//! give the same exchanges whenever the parser met no problem (with no gaps, parsing is purely
//! byte-driven: only problems make it resynchronise on segment boundaries).
//!
//! Input: as for the `http1` target, minus the window byte; capture kinds are ignored.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mop_protocol::http1::{Http1Connection, Http1Limits};
use mop_protocol::{Direction, HttpExchange, Segment};

fn run(records: &[(Direction, &[u8])], limits: Http1Limits, piece: usize) -> (Vec<HttpExchange>, bool) {
    let mut conn = Http1Connection::new(limits);
    let mut out = Vec::new();
    for (i, (dir, bytes)) in records.iter().enumerate() {
        let t = 10 * i as u64;
        for p in bytes.chunks(piece) {
            let seg = Segment { head: p, gap: 0, tail: &[], enter_ns: t, exit_ns: t + 5, tid: i as u32 };
            conn.feed(*dir, &seg, &mut out);
        }
    }
    conn.on_close(u64::MAX, &mut out);
    let clean = conn.stats().errors_total() == 0 && conn.stats().truncated_heads == 0;
    (out, clean)
}

fuzz_target!(|data: &[u8]| {
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
        let dir = if ctl & 1 == 0 { Direction::Ingress } else { Direction::Egress };
        records.push((dir, bytes));
    }
    let (whole, clean) = run(&records, limits, usize::MAX);
    if clean {
        let (split, _) = run(&records, limits, 1);
        assert_eq!(whole, split);
    }
});
