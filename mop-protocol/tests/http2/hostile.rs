//! Hostile and broken input: floods, huge blocks, stream exhaustion, bad encodings, random
//! bytes. No panic, bounded memory, every problem counted.

use mop_protocol::http2::{Http2Connection, Http2Limits, ParseError};
use mop_protocol::{Direction, HttpExchange, Segment};

use crate::support::{frame, lit, lit_named, preface};

fn seg(b: &[u8]) -> Segment<'_> {
    Segment {
        head: b,
        gap: 0,
        tail: &[],
        enter_ns: 1,
        exit_ns: 2,
        tid: 3,
    }
}

/// A server-side connection that has read the preface.
fn server() -> (Http2Connection, Vec<HttpExchange>) {
    let mut c = Http2Connection::default();
    let mut out = Vec::new();
    c.feed(Direction::Ingress, &seg(&preface()), &mut out);
    (c, out)
}

fn request(stream: u32, path: &str) -> Vec<u8> {
    frame(
        1,
        0x5,
        stream,
        &[vec![0x82, 0x86], lit_named(4, path)].concat(),
    )
}

/// The parser's heap stays under this whatever it is fed (two 64 KiB tables, a 64 KiB field
/// buffer, 1024 streams, slack).
const HEAP_BOUND: usize = 2 * 1024 * 1024;

#[test]
fn continuation_flood_is_bounded() {
    let (mut c, mut out) = server();
    // HEADERS without END_HEADERS, then 100000 CONTINUATIONs each carrying one byte of a
    // literal that announces 1 MiB.
    let mut head = vec![0x40, 0x01, b'x', 0x7f, 0x81, 0xff, 0x3f];
    head.truncate(7);
    c.feed(Direction::Ingress, &seg(&frame(1, 0x1, 1, &head)), &mut out);
    let cont = frame(9, 0, 1, b"a");
    let many: Vec<u8> = cont
        .iter()
        .copied()
        .cycle()
        .take(cont.len() * 1000)
        .collect();
    for _ in 0..100 {
        c.feed(Direction::Ingress, &seg(&many), &mut out);
        assert!(c.heap_bytes() < HEAP_BOUND, "{}", c.heap_bytes());
    }
    c.feed(Direction::Ingress, &seg(&frame(9, 0x4, 1, b"")), &mut out);
    c.feed(Direction::Ingress, &seg(&request(3, "/after")), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 3, &[0x88])),
        &mut out,
    );
    let s = c.take_stats();
    assert_eq!(s.count(ParseError::HeaderBlockTooLarge), 1, "{s:?}");
    assert_eq!(out.last().map(|x| x.target.as_str()), Some("/after"));
}

#[test]
fn huge_header_field_over_continuations() {
    let (mut c, mut out) = server();
    // A 100 KB value split over CONTINUATIONs: over the 64 KiB field limit.
    let mut block = vec![0x82, 0x86, 0x04, 0x7f];
    let mut n: usize = 100_000 - 127;
    while n >= 128 {
        block.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    block.push(n as u8);
    block.extend(std::iter::repeat_n(b'p', 100_000));
    let mut frames = frame(1, 0x1, 1, &block[..16_000]);
    for (k, chunk) in block[16_000..].chunks(16_000).enumerate() {
        let last = 16_000 + (k + 1) * 16_000 >= block.len();
        frames.extend(frame(9, if last { 0x4 } else { 0 }, 1, chunk));
    }
    c.feed(Direction::Ingress, &seg(&frames), &mut out);
    assert!(c.heap_bytes() < HEAP_BOUND);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 1, &[0x88])),
        &mut out,
    );
    let s = c.take_stats();
    assert_eq!(s.count(ParseError::HeaderBlockTooLarge), 1);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].method.as_str(), out[0].target.as_str()),
        ("GET", "")
    );
    assert!(out[0].request_head_truncated);
}

#[test]
fn thousands_of_streams() {
    let (mut c, mut out) = server();
    let mut all = Vec::new();
    for k in 0..5000u32 {
        all.extend(request(2 * k + 1, &format!("/s/{k}")));
    }
    c.feed(Direction::Ingress, &seg(&all), &mut out);
    assert_eq!(c.open_streams(), Http2Limits::DEFAULT_MAX_STREAMS);
    assert_eq!(out.len(), 5000 - Http2Limits::DEFAULT_MAX_STREAMS);
    assert_eq!(out[0].target, "/s/0");
    assert!(c.heap_bytes() < HEAP_BOUND, "{}", c.heap_bytes());
    c.on_close(9, &mut out);
    assert_eq!(out.len(), 5000);
    let s = c.take_stats();
    assert_eq!(s.count(ParseError::TooManyStreams), 5000 - 1024);
    assert_eq!(s.count(ParseError::IncompleteAtClose), 1024);
}

#[test]
fn bad_huffman_and_padding() {
    let (mut c, mut out) = server();
    // :path with a Huffman value that is all ones (padding over 7 bits).
    let f = frame(1, 0x5, 1, &[0x82, 0x86, 0x04, 0x82, 0xff, 0xff]);
    c.feed(Direction::Ingress, &seg(&f), &mut out);
    // A PADDED HEADERS whose pad length is longer than its payload.
    let f = frame(1, 0x5 | 0x8, 3, &[200, 0x82]);
    c.feed(Direction::Ingress, &seg(&f), &mut out);
    // A PADDED DATA likewise.
    let f = frame(0, 0x8, 1, &[9, 1, 2]);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x4, 1, &[0x88])),
        &mut out,
    );
    c.feed(Direction::Egress, &seg(&f), &mut out);
    // A good request after all that.
    c.feed(Direction::Ingress, &seg(&request(5, "/ok")), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 5, &[0x88])),
        &mut out,
    );
    c.feed(Direction::Egress, &seg(&frame(0, 0x1, 1, b"")), &mut out);
    let s = c.take_stats();
    assert_eq!(s.count(ParseError::HpackInvalidHuffman), 1, "{s:?}");
    assert_eq!(s.count(ParseError::InvalidFrame), 2, "{s:?}");
    let x5 = out.iter().find(|x| x.stream_id == 5).unwrap();
    assert_eq!((x5.target.as_str(), x5.status), ("/ok", Some(200)));
    let x1 = out.iter().find(|x| x.stream_id == 1).unwrap();
    assert_eq!((x1.target.as_str(), x1.request_head_truncated), ("", true));
    assert!(x1.response_body_size_unknown);
}

#[test]
fn absurd_table_size() {
    let (mut c, mut out) = server();
    // The server announces a 2 GiB table; the client takes it and fills it.
    let settings = frame(4, 0, 0, &[0, 1, 0x80, 0, 0, 0]);
    c.feed(Direction::Egress, &seg(&settings), &mut out);
    c.feed(Direction::Ingress, &seg(&frame(4, 0x1, 0, &[])), &mut out);
    // Size update to 2^31 - 1, then 2000 distinct 100-byte entries.
    let mut block = vec![0x3f, 0xe0, 0xff, 0xff, 0xff, 0x07, 0x82, 0x86, 0x84];
    for k in 0..2000 {
        block.extend(lit(&format!("k{k:04}"), &"v".repeat(95)));
    }
    for chunk in block.chunks(16_000).enumerate().map(|(k, ch)| {
        let first = k == 0;
        let last = (k + 1) * 16_000 >= block.len();
        frame(
            if first { 1 } else { 9 },
            (u8::from(last) * 0x4) | u8::from(first),
            1,
            ch,
        )
    }) {
        c.feed(Direction::Ingress, &seg(&chunk), &mut out);
    }
    assert!(c.heap_bytes() < HEAP_BOUND, "{}", c.heap_bytes());
    // The oldest entries are past the cap: unknown. The newest is known.
    let probe = frame(1, 0x5, 3, &[0x82, 0x86, 0x84, 0xbe, 0xff, 0x80, 0x0f]);
    c.feed(Direction::Ingress, &seg(&probe), &mut out);
    c.on_close(5, &mut out);
    let s = c.take_stats();
    assert_eq!(s.count(ParseError::HpackTableOverCap), 1, "{s:?}");
    assert_eq!(s.count(ParseError::HpackInvalidIndex), 0, "{s:?}");
    assert!(out[1].request_head_truncated);
}

#[test]
fn garbage_and_random_bytes() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let mut conn = Http2Connection::default();
        let mut out = Vec::new();
        if round % 2 == 0 {
            conn.feed(Direction::Ingress, &seg(&preface()), &mut out);
        }
        for _ in 0..50 {
            let n = (next() % 300) as usize;
            // Mostly frame-shaped noise: small lengths, known types.
            let mut b: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if n >= 9 && next() % 2 == 0 {
                b[0] = 0;
                b[1] = 0;
                b[2] = (n - 9) as u8;
                b[3] %= 10;
            }
            let dir = if next() % 2 == 0 {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            let s = Segment {
                head: &b,
                gap: next() % 4 * (next() % 100),
                tail: &[],
                enter_ns: 0,
                exit_ns: 0,
                tid: 0,
            };
            conn.feed(dir, &s, &mut out);
            assert!(conn.heap_bytes() < HEAP_BOUND);
        }
        conn.on_close(1, &mut out);
        assert_eq!(conn.open_streams(), 0);
    }
}

#[test]
fn goaway_abandons_streams_above_last() {
    let (mut c, mut out) = server();
    let mut reqs = Vec::new();
    for s in [1, 3, 5, 7] {
        reqs.extend(request(s, &format!("/{s}")));
    }
    c.feed(Direction::Ingress, &seg(&reqs), &mut out);
    // The server processed up to stream 3.
    let goaway = frame(7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
    c.feed(Direction::Egress, &seg(&goaway), &mut out);
    assert_eq!(out.iter().map(|x| x.stream_id).collect::<Vec<_>>(), [5, 7]);
    assert!(out.iter().all(|x| x.status.is_none()));
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 1, &[0x88])),
        &mut out,
    );
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 3, &[0x8d])),
        &mut out,
    );
    assert_eq!(out[2].status, Some(200));
    assert_eq!(out[3].status, Some(404));
    assert_eq!(c.take_stats().count(ParseError::StreamAbandoned), 2);
}

#[test]
fn resets() {
    let (mut c, mut out) = server();
    let grpc = |s: u32| {
        frame(
            1,
            0x4,
            s,
            &[
                vec![0x83, 0x86],
                lit_named(4, "/p.S/M"),
                lit_named(31, "application/grpc"),
            ]
            .concat(),
        )
    };
    // The client cancels stream 1 (a deadline): status unknown, the reset code kept.
    c.feed(Direction::Ingress, &seg(&grpc(1)), &mut out);
    c.feed(
        Direction::Ingress,
        &seg(&frame(3, 0, 1, &[0, 0, 0, 8])),
        &mut out,
    );
    // The server refuses stream 3: gRPC maps REFUSED_STREAM to UNAVAILABLE.
    c.feed(Direction::Ingress, &seg(&grpc(3)), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(3, 0, 3, &[0, 0, 0, 7])),
        &mut out,
    );
    // A reset of a stream already done is not counted against anything.
    c.feed(
        Direction::Egress,
        &seg(&frame(3, 0, 3, &[0, 0, 0, 0])),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].reset_code, out[0].grpc_status, out[0].status),
        (Some(8), None, None)
    );
    assert_eq!((out[1].reset_code, out[1].grpc_status), (Some(7), Some(14)));
    assert!(out.iter().all(|x| x.is_grpc() && x.target == "/p.S/M"));
    let s = c.take_stats();
    assert_eq!((s.resets, s.untracked_frames), (2, 1));
}

#[test]
fn long_values_are_cut_or_dropped_and_streams_stay_small() {
    let (mut c, mut out) = server();
    let long_path = format!("/{}", "p".repeat(20_000));
    let long_trace = "t".repeat(300);
    // One request with a 20 KB path and an over-long traceparent.
    let mut block = vec![0x83, 0x86];
    block.extend([0x04, 0x7f]);
    let mut n = long_path.len() - 127;
    while n >= 128 {
        block.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    block.push(n as u8);
    block.extend(long_path.as_bytes());
    block.extend([0x00, 11]);
    block.extend(b"traceparent");
    block.extend([0x7f, (long_trace.len() - 127) as u8, 0x01]);
    block.extend(long_trace.as_bytes());
    let mut frames = frame(1, 0x1, 1, &block[..16_000]);
    frames.extend(frame(9, 0x4, 1, &block[16_000..]));
    c.feed(Direction::Ingress, &seg(&frames), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 1, &[0x88])),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.target.len(), 8 * 1024);
    assert!(long_path.starts_with(&x.target));
    assert!(x.request_target_truncated && x.request_head_truncated);
    assert_eq!(x.trace_headers.traceparent, None);
    // 1024 open streams with 8 KiB paths stay within the bound.
    let mut all = Vec::new();
    for k in 0..1024u32 {
        let path = format!("/{k:05}{}", "q".repeat(8_000));
        let mut b = vec![0x83, 0x86, 0x04, 0x7f];
        let mut n = path.len() - 127;
        while n >= 128 {
            b.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        b.push(n as u8);
        b.extend(path.as_bytes());
        all.extend(frame(1, 0x5, 2 * k + 3, &b));
    }
    c.feed(Direction::Ingress, &seg(&all), &mut out);
    assert_eq!(c.open_streams(), 1024);
    assert!(c.heap_bytes() < 16 * 1024 * 1024, "{}", c.heap_bytes());
}

#[test]
fn padding_priority_and_push_promise() {
    let (mut c, mut out) = server();
    // HEADERS with PADDED and PRIORITY: pad length, 5 priority bytes, the block, the padding.
    let block = [vec![0x83, 0x86], lit_named(4, "/padded")].concat();
    let mut payload = vec![3, 0x80, 0, 0, 0, 16];
    payload.extend(&block);
    payload.extend([0, 0, 0]);
    c.feed(
        Direction::Ingress,
        &seg(&frame(1, 0x4 | 0x8 | 0x20, 1, &payload)),
        &mut out,
    );
    // A PADDED DATA: 10 bytes of body, 2 of padding; END_STREAM.
    let mut data = vec![2];
    data.extend([7; 10]);
    data.extend([0, 0]);
    c.feed(
        Direction::Ingress,
        &seg(&frame(0, 0x1 | 0x8, 1, &data)),
        &mut out,
    );
    // The server pushes: the PUSH_PROMISE block (promised stream 2) inserts `grpc-status: 7`
    // into the server's table, which its trailers then refer to.
    let mut push = vec![0, 0, 0, 2];
    push.extend(
        [
            vec![0x82, 0x86],
            lit_named(4, "/pushed"),
            lit("grpc-status", "7"),
        ]
        .concat(),
    );
    c.feed(Direction::Egress, &seg(&frame(5, 0x4, 1, &push)), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x4, 1, &[0x88])),
        &mut out,
    );
    // The pushed stream's response: not reported.
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 2, &[0x88])),
        &mut out,
    );
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 1, &[0xbe])),
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:#?}");
    let x = &out[0];
    assert_eq!((x.method.as_str(), x.target.as_str()), ("POST", "/padded"));
    assert_eq!(
        (x.request_body_size, x.status, x.grpc_status),
        (10, Some(200), Some(7))
    );
    assert!(!x.request_head_truncated && !x.response_head_truncated);
    let s = c.take_stats();
    assert_eq!(
        (s.errors_total(), s.push_promises, s.untracked_frames),
        (0, 1, 1),
        "{s:?}"
    );
}

#[test]
fn acknowledged_table_size_evicts() {
    let (mut c, mut out) = server();
    // The client inserts a 200-byte entry.
    let big = "/".to_string() + &"b".repeat(150);
    c.feed(Direction::Ingress, &seg(&request(1, &big)), &mut out);
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 1, &[0x88])),
        &mut out,
    );
    // The server lowers its decoder's table to 64 bytes; the client acknowledges.
    c.feed(
        Direction::Egress,
        &seg(&frame(4, 0, 0, &[0, 1, 0, 0, 0, 64])),
        &mut out,
    );
    c.feed(Direction::Ingress, &seg(&frame(4, 0x1, 0, &[])), &mut out);
    // A client that (wrongly) still refers to the entry: it is gone.
    c.feed(
        Direction::Ingress,
        &seg(&frame(1, 0x5, 3, &[0x82, 0x86, 0xbe])),
        &mut out,
    );
    c.feed(
        Direction::Egress,
        &seg(&frame(1, 0x5, 3, &[0x88])),
        &mut out,
    );
    assert_eq!(out[0].target, big);
    assert_eq!(
        (out[1].target.as_str(), out[1].request_head_truncated),
        ("", true)
    );
    assert_eq!(c.take_stats().count(ParseError::HpackInvalidIndex), 1);
}

#[test]
fn upgrade_to_something_else_gives_the_101_back() {
    use mop_protocol::http1::Http1Connection;
    let mut h1 = Http1Connection::default();
    let mut out = Vec::new();
    let req =
        b"GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";
    h1.feed(Direction::Ingress, &seg(req), &mut out);
    h1.feed(Direction::Egress, &seg(resp), &mut out);
    assert!(h1.is_tunnel());
    let upgrade = out.pop().unwrap();
    assert_eq!(upgrade.status, Some(101));
    let mut c = Http2Connection::from_h2c_upgrade(Http2Limits::default(), upgrade.clone());
    c.feed(Direction::Egress, &seg(resp), &mut out);
    c.feed(Direction::Ingress, &seg(b"\x81\x85abcdefghi"), &mut out);
    c.feed(Direction::Egress, &seg(b"\x81\x02hi"), &mut out);
    c.on_close(9, &mut out);
    assert_eq!(out, [upgrade]);
    let s = c.take_stats();
    assert_eq!((s.count(ParseError::InvalidPreface), s.exchanges), (1, 1));
}
