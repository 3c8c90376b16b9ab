//! Feeds arbitrary bytes to one HTTP/1 connection, cut into segments the input chooses.
//!
//! Input: one byte of limits, one byte of capture window, then records of a control byte
//! (bit 0: direction; bits 1-2: whole, cut by the window with a gap and tail, only a gap
//! as sendfile gives, or a close of the connection), a length byte and that many bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mop_protocol::http1::{Http1Connection, Http1Limits};
use mop_protocol::{Direction, HttpExchange, Segment};

fn check(out: &[HttpExchange]) {
    for x in out {
        assert!(x.request_start_ns <= x.request_end_ns, "{x:?}");
        if x.response_start_ns != 0 {
            assert!(x.response_start_ns <= x.response_end_ns, "{x:?}");
        }
        if x.status.is_none() && x.response_start_ns != 0 {
            assert!(x.response_head_truncated, "a response without a status must be cut: {x:?}");
        }
        if x.request_body_size_unknown {
            assert_eq!(x.request_body_size, 0, "{x:?}");
        }
        if x.response_body_size_unknown {
            assert_eq!(x.response_body_size, 0, "{x:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limits, window, rest @ ..] = data else {
        return;
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
        let dir = if ctl & 1 == 0 { Direction::Ingress } else { Direction::Egress };
        let seg = |head, gap, tail| Segment { head, gap, tail, enter_ns: t, exit_ns: t + 5, tid: 7 };
        match (ctl >> 1) & 3 {
            1 if bytes.len() > window => {
                let tail = (bytes.len() - window).min(16);
                let extra = u64::from(ctl >> 3) * 1000;
                let gap = (bytes.len() - window - tail) as u64 + extra;
                conn.feed(dir, &seg(&bytes[..window], gap, &bytes[bytes.len() - tail..]), &mut out);
            }
            0 | 1 => conn.feed(dir, &seg(bytes, 0, &[]), &mut out),
            2 => conn.feed(dir, &seg(&[], u64::from(ctl >> 3) << (len % 40), &[]), &mut out),
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
});
