//! Broken and hostile input: never a panic, always counted, and the connection recovers.

use mop_protocol::http1::{Http1Connection, Http1Limits, ParseError};
use mop_protocol::{Direction, HttpExchange, Segment};

use crate::support::{Piece, Side, captured, run_pieces, seg, whole};

const OK_REQ: &[u8] = b"GET /ok HTTP/1.1\r\nHost: ok\r\n\r\n";
const OK_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Feeds `segs` (client-to-server flag, bytes), then a well-formed exchange, as the server.
/// Checks that `err` was counted and that the exchanges are `want` then `/ok`.
fn case(
    label: &str,
    segs: &[(bool, &[u8])],
    err: ParseError,
    want: &[(&str, Option<u16>)],
) -> Vec<HttpExchange> {
    let n = segs.len();
    let pieces = segs
        .iter()
        .enumerate()
        .map(|(i, (c2s, b))| whole(i, *c2s, b))
        .chain([whole(n, true, OK_REQ), whole(n + 1, false, OK_RESP)]);
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert!(
        conn.stats().count(err) >= 1,
        "{label}: {err:?} not counted in {:?}",
        conn.stats()
    );
    let mut expect: Vec<(&str, Option<u16>)> = want.to_vec();
    expect.push(("/ok", Some(200)));
    let seen: Vec<(&str, Option<u16>)> =
        got.iter().map(|x| (x.target.as_str(), x.status)).collect();
    assert_eq!(seen, expect, "{label}");
    let ok = got.last().unwrap();
    assert_eq!(
        (ok.host.as_deref(), ok.response_body_size),
        (Some("ok"), 2),
        "{label}"
    );
    got
}

#[test]
fn garbage_where_a_message_should_start() {
    case(
        "tls hello",
        &[(true, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")],
        ParseError::UnexpectedBytes,
        &[],
    );
    case(
        "nul bytes",
        &[(true, &[0u8; 300])],
        ParseError::UnexpectedBytes,
        &[],
    );
    case(
        "json",
        &[(true, b"{\"a\": 1}\r\n\r\n")],
        ParseError::UnexpectedBytes,
        &[],
    );
    case(
        "text",
        &[(true, b"hello world\r\n\r\n")],
        ParseError::InvalidStartLine,
        &[],
    );
    case(
        "lower-case response",
        &[(false, b"http/1.1 200 OK\r\n\r\n")],
        ParseError::UnexpectedBytes,
        &[],
    );
    case(
        "bad status",
        &[(false, b"HTTP/1.1 abc OK\r\n\r\n")],
        ParseError::InvalidStartLine,
        &[],
    );
    case(
        "h2 preface",
        &[(true, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")],
        ParseError::UnsupportedVersion,
        &[],
    );
    case(
        "version 2.0",
        &[(true, b"GET / HTTP/2.0\r\n\r\n")],
        ParseError::UnsupportedVersion,
        &[],
    );
    case(
        "version 1.2 in pieces",
        &[(true, b"GET / HT"), (true, b"TP/1.2\r\n\r\n")],
        ParseError::UnsupportedVersion,
        &[],
    );
    case(
        "binary inside a head",
        &[
            (true, b"GET /x HTTP/1.1\r\nHost: a\r\n\x00\x01\x02"),
            (true, b"\r\n\r\n"),
            (
                false,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ),
        ],
        ParseError::InvalidHeader,
        &[("/x", Some(400))],
    );
}

#[test]
fn every_byte_value_alone_and_in_runs() {
    let all: Vec<u8> = (0..=255).collect();
    let segs: Vec<(bool, &[u8])> = all
        .chunks(1)
        .map(|c| (true, c))
        .chain([(true, &all[..])])
        .collect();
    let pieces = segs
        .iter()
        .enumerate()
        .map(|(i, (c2s, b))| whole(i, *c2s, b));
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert!(got.is_empty());
    assert!(conn.stats().errors_total() > 0);
}

#[test]
fn a_100_kb_header_line_is_bounded_and_recovered_from() {
    // Fully captured in 4 KiB segments: buffering stops at 16 KiB, the request is kept from
    // what was parsed, the 431 answers it.
    let mut req = b"GET /big HTTP/1.1\r\nHost: big\r\nX-Long: ".to_vec();
    req.resize(req.len() + 100 * 1024, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    let mut segs: Vec<(bool, &[u8])> = req.chunks(4096).map(|c| (true, c)).collect();
    segs.push((
        false,
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
    ));
    let got = case(
        "100 KB line",
        &segs,
        ParseError::HeadTooLarge,
        &[("/big", Some(431))],
    );
    assert!(got[0].request_head_truncated);
    assert_eq!(got[0].host.as_deref(), Some("big"));

    // The same in one segment (a 100 KB read fully captured).
    let got = case(
        "100 KB line, one segment",
        &[(true, &req), (false, segs.last().unwrap().1)],
        ParseError::HeadTooLarge,
        &[("/big", Some(431))],
    );
    assert!(got[0].request_head_truncated);
}

#[test]
fn many_headers_are_not_stored() {
    let mut req = b"GET /many HTTP/1.1\r\n".to_vec();
    for i in 0..1500 {
        req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"Host: many\r\n\r\n");
    assert!(req.len() < 16 * 1024);
    let mut conn = Http1Connection::default();
    let mut out = Vec::new();
    conn.feed(Direction::Ingress, &seg(0, &req), &mut out);
    conn.feed(
        Direction::Egress,
        &seg(1, b"HTTP/1.1 204 No Content\r\n\r\n"),
        &mut out,
    );
    assert_eq!(
        (out[0].host.as_deref(), out[0].status),
        (Some("many"), Some(204))
    );
    assert_eq!(conn.stats().errors_total(), 0);

    // 10 000 of them: over the limit.
    let mut req = b"GET /more HTTP/1.1\r\n".to_vec();
    for i in 0..10_000 {
        req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    case(
        "10k headers",
        &[
            (true, &req),
            (
                false,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ),
        ],
        ParseError::HeadTooLarge,
        &[("/more", Some(400))],
    );
}

#[test]
fn invalid_utf8_is_replaced() {
    let pieces = [
        whole(
            0,
            true,
            b"GET /caf\xc3\xa9/\xff HTTP/1.1\r\nHost: h\xfe\r\ntraceparent: \xff\r\n\r\n",
        ),
        whole(
            1,
            false,
            b"HTTP/1.1 404 \xff\xfe\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert_eq!(conn.stats().errors_total(), 0);
    assert_eq!(
        (got[0].target.as_str(), got[0].status),
        ("/caf\u{e9}/\u{fffd}", Some(404))
    );
    assert_eq!(got[0].host.as_deref(), Some("h\u{fffd}"));
    assert_eq!(
        got[0].trace_headers.traceparent.as_deref(),
        Some("\u{fffd}")
    );
}

#[test]
fn content_length_problems() {
    for cl in ["99999999999999999999999", "-1", "12abc", "5, 6", " "] {
        let req = format!("POST /cl HTTP/1.1\r\nContent-Length: {cl}\r\n\r\nhello");
        let got = case(
            cl,
            &[
                (true, req.as_bytes()),
                (
                    false,
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
            ParseError::InvalidContentLength,
            &[("/cl", Some(400))],
        );
        assert!(got[0].request_body_size_unknown, "{cl}");
    }
    let got = case(
        "response cl",
        &[
            (true, b"GET /r HTTP/1.1\r\n\r\n"),
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nbody"),
        ],
        ParseError::InvalidContentLength,
        &[("/r", Some(200))],
    );
    assert!(got[0].response_body_size_unknown);
}

#[test]
fn content_length_with_transfer_encoding_ends_requests_on_the_connection() {
    // The classic smuggling shape: by Content-Length the body would be "5\r\n" and the rest a
    // second request. Servers refuse it, or answer it and must then close the connection (RFC
    // 9112 section 6.3), so nothing after it is a request: /te gets its response and the
    // request bytes that follow on the connection make no exchange of their own.
    let pieces = [
        whole(0, true, b"POST /te HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        whole(1, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        whole(2, true, OK_REQ),
    ];
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert!(
        conn.stats()
            .count(ParseError::ContentLengthWithTransferEncoding)
            >= 1
    );
    let seen: Vec<(&str, Option<u16>)> =
        got.iter().map(|x| (x.target.as_str(), x.status)).collect();
    assert_eq!(seen, [("/te", Some(200))]);
    let got = case(
        "te not chunked",
        &[
            (
                true,
                b"POST /gz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
            ),
            (
                false,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            ),
        ],
        ParseError::InvalidTransferEncoding,
        &[("/gz", Some(400))],
    );
    assert!(got[0].request_body_size_unknown);
}

#[test]
fn bad_chunks() {
    let head = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let resp: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    for (body, err) in [
        ("-1\r\n", ParseError::InvalidChunkSize),
        ("zz\r\n", ParseError::InvalidChunkSize),
        ("fffffffffffffffff\r\n", ParseError::InvalidChunkSize),
        ("0x10\r\n", ParseError::InvalidChunkSize),
        ("3\r\nabcX\r\n0\r\n\r\n", ParseError::InvalidChunkFraming),
    ] {
        let req = format!("{head}{body}");
        let got = case(
            body,
            &[(true, req.as_bytes()), (false, resp)],
            err,
            &[("/c", Some(400))],
        );
        assert!(got[0].request_body_size_unknown, "{body}");
    }
    let long = format!("{head}1;{}", "e".repeat(20_000));
    case(
        "long chunk line",
        &[(true, long.as_bytes()), (false, resp)],
        ParseError::ChunkLineTooLong,
        &[("/c", Some(400))],
    );
    // A bad chunk in a response: the body's end is found by its last chunk.
    let got = case(
        "response chunk",
        &[
            (true, b"GET /r HTTP/1.1\r\n\r\n"),
            (
                false,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n",
            ),
            (false, b"x\r\n0\r\n\r\n"),
        ],
        ParseError::InvalidChunkSize,
        &[("/r", Some(200))],
    );
    assert_eq!(got[0].response_end_ns, crate::support::times(2).1);
}

#[test]
fn bad_header_lines() {
    for line in ["Host : x", "NoColon", "Bad Name: v", "\u{1}: v"] {
        let req = format!("GET /h HTTP/1.1\r\n{line}\r\n\r\n");
        case(
            line,
            &[
                (true, req.as_bytes()),
                (
                    false,
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
            ParseError::InvalidHeader,
            &[("/h", Some(400))],
        );
    }
}

#[test]
fn responses_without_requests() {
    case(
        "orphan",
        &[(false, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")],
        ParseError::ResponseWithoutRequest,
        &[],
    );
    case(
        "orphan chunked",
        &[(
            false,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )],
        ParseError::ResponseWithoutRequest,
        &[],
    );
}

#[test]
fn truncated_start_line() {
    let pieces = [
        Piece {
            index: 0,
            c2s: true,
            head: b"GE",
            gap: 100,
            tail: b"0123456789abcdef",
        },
        whole(1, true, OK_REQ),
        whole(2, false, OK_RESP),
    ];
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert_eq!(conn.stats().count(ParseError::TruncatedStartLine), 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/ok");
}

#[test]
fn message_starting_in_a_gap_is_lost_sync() {
    let pieces = [
        Piece {
            index: 0,
            c2s: true,
            head: b"",
            gap: 500,
            tail: b"\r\nHost: x\r\n\r\n",
        },
        whole(1, true, OK_REQ),
        whole(2, false, OK_RESP),
    ];
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert_eq!(conn.stats().count(ParseError::LostSync), 1);
    assert_eq!(
        got.iter().map(|x| x.target.as_str()).collect::<Vec<_>>(),
        ["/ok"]
    );
}

#[test]
fn too_many_pipelined_requests() {
    let limits = Http1Limits {
        max_pending: 8,
        ..Http1Limits::default()
    };
    let reqs: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("GET /{i} HTTP/1.1\r\n\r\n").into_bytes())
        .collect();
    let pieces = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| whole(i, true, r))
        .chain((20..28).map(|i| whole(i, false, b"HTTP/1.1 204 No Content\r\n\r\n")));
    let (got, conn) = run_pieces(Side::Server, limits, pieces);
    assert_eq!(conn.stats().count(ParseError::TooManyPending), 12);
    let seen: Vec<(String, Option<u16>)> =
        got.iter().map(|x| (x.target.clone(), x.status)).collect();
    let want: Vec<(String, Option<u16>)> = (0..12)
        .map(|i| (format!("/{i}"), None))
        .chain((12..20).map(|i| (format!("/{i}"), Some(204))))
        .collect();
    assert_eq!(seen, want);
    // Pushed out by the 13th request, at its segment's time.
    assert_eq!(got[0].response_end_ns, crate::support::times(8).1);
}

/// A request cut by the close: counted as incomplete, its body size is the declared length.
#[test]
fn close_inside_a_message() {
    let mut conn = Http1Connection::default();
    let mut out = Vec::new();
    conn.feed(
        Direction::Ingress,
        &seg(0, b"POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        &mut out,
    );
    conn.on_close(42, &mut out);
    assert_eq!(conn.stats().count(ParseError::IncompleteAtClose), 1);
    assert_eq!(
        (
            out[0].status,
            out[0].request_body_size,
            out[0].response_end_ns
        ),
        (None, 10, 42)
    );

    let mut conn = Http1Connection::default();
    let mut out = Vec::new();
    conn.feed(
        Direction::Ingress,
        &seg(0, b"GET /d HTTP/1.1\r\n\r\n"),
        &mut out,
    );
    conn.feed(
        Direction::Egress,
        &seg(1, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial"),
        &mut out,
    );
    conn.feed(
        Direction::Egress,
        &seg(2, b"HTTP/1.1 200 OK\r\nContent-Le"),
        &mut out,
    );
    conn.on_close(42, &mut out);
    assert_eq!(
        (
            out[0].status,
            out[0].response_body_size,
            out[0].response_end_ns
        ),
        // The declared length, though only 7 + 27 bytes came before the close.
        (Some(200), 1000, crate::support::times(2).1)
    );
    assert_eq!(conn.stats().count(ParseError::IncompleteAtClose), 1);
}

#[test]
fn upgrades_stop_parsing() {
    for (req, resp) in [
        (
            &b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"[..],
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"HTTP/1.1 200 Connection Established\r\n\r\n",
        ),
    ] {
        let mut conn = Http1Connection::default();
        let mut out = Vec::new();
        conn.feed(Direction::Ingress, &seg(0, req), &mut out);
        conn.feed(Direction::Egress, &seg(1, resp), &mut out);
        assert!(conn.is_tunnel());
        conn.feed(
            Direction::Ingress,
            &seg(2, b"\x16\x03\x01 not http"),
            &mut out,
        );
        conn.feed(Direction::Ingress, &seg(3, OK_REQ), &mut out);
        conn.on_close(9, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].status, Some(101 | 200)));
        assert_eq!(conn.stats().upgrades, 1);
        assert_eq!(conn.stats().errors_total(), 0);
    }
}

#[test]
fn connect_refused_is_not_a_tunnel() {
    let got = case(
        "407",
        &[
            (true, b"CONNECT a:443 HTTP/1.1\r\n\r\n"),
            (
                false,
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
            ),
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ],
        ParseError::ResponseWithoutRequest,
        &[("a:443", Some(407))],
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn expect_continue_then_rejection() {
    // 100 never completes an exchange; the final 417 does; the client then sends another.
    let got = case(
        "417",
        &[
            (
                true,
                b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                false,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
            ),
            (
                false,
                b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n",
            ),
            (false, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"),
        ],
        ParseError::ResponseWithoutRequest,
        &[("/x", Some(417))],
    );
    assert_eq!(got[0].response_start_ns, crate::support::times(2).0);
}

#[test]
fn tiny_head_limit() {
    let limits = Http1Limits {
        max_head_bytes: 8,
        max_pending: 0,
    };
    let pieces = [
        whole(0, true, OK_REQ),
        whole(1, false, OK_RESP),
        captured(2, true, OK_REQ, 4),
    ];
    let (got, conn) = run_pieces(Side::Server, limits, pieces);
    assert!(conn.stats().count(ParseError::HeadTooLarge) >= 1);
    assert!(got.len() <= 2);
    let _ = Segment {
        head: &[],
        gap: 0,
        tail: &[],
        enter_ns: 0,
        exit_ns: 0,
        tid: 0,
    };
}
