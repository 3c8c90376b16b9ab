//! What the kernel's capture window does to the same streams: heads of 256 bytes (or more),
//! uncaptured gaps, 16-byte tails, sendfile segments with nothing captured.

use mop_protocol::http1::{Http1Connection, Http1Limits, ParseError};
use mop_protocol::{Direction, HttpExchange, Segment};

use crate::fixtures::{ALL, expected};
use crate::support::{
    Piece, Side, exchange, fixture, run_pieces, run_window, seg, timed, times, whole,
};

/// Fixtures whose heads fit in 256 bytes: the window changes nothing.
const EXACT_AT_256: [&str; 9] = [
    "nginx_keepalive",
    "nginx_head",
    "nginx_304",
    "nginx_big",
    "stock_http10",
    "py_chunked_response",
    "py_close_delimited",
    "py_expect_continue",
    "py_chunked_request",
];

#[test]
fn window_256_keeps_exact_results_when_heads_fit() {
    for name in EXACT_AT_256 {
        let (got, conn) = run_window(Side::Server, &fixture(name), 256);
        assert_eq!(got, expected(name), "{name}");
        assert_eq!(conn.stats().errors_total(), 0, "{name}");
    }
}

#[test]
fn window_4096_keeps_exact_results() {
    for name in ALL.into_iter().filter(|&n| n != "py_chunked_big") {
        let (got, conn) = run_window(Side::Server, &fixture(name), 4096);
        assert_eq!(got, expected(name), "{name}");
        assert_eq!(conn.stats().errors_total(), 0, "{name}");
    }
}

#[test]
fn window_256_request_head_cut() {
    // A 675-byte request: the request line (254 bytes) fits, the headers do not. Only the
    // tail's empty line is seen, so the request's end is known.
    let (got, conn) = run_window(Side::Server, &fixture("nginx_big_headers"), 256);
    let mut want = expected("nginx_big_headers");
    want[0].host = None;
    want[0].trace_headers = mop_protocol::TraceHeaders::default();
    want[0].request_head_truncated = true;
    assert_eq!(got, want);
    assert_eq!(conn.stats().truncated_heads, 1);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn window_128_request_line_cut() {
    let (got, conn) = run_window(Side::Server, &fixture("nginx_big_headers"), 128);
    let mut want = expected("nginx_big_headers");
    want[0].target.truncate(128 - "GET ".len());
    want[0].host = None;
    want[0].trace_headers = mop_protocol::TraceHeaders::default();
    want[0].request_head_truncated = true;
    want[0].request_target_truncated = true;
    // The response head is cut too, after its Content-Length: its body is still exact.
    want[0].response_head_truncated = true;
    assert_eq!(got, want);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn window_256_pipelined_response_starting_at_the_window_edge() {
    // The third response starts 3 bytes before the end of the window: known to be a response,
    // its status is not. Its end comes with the close.
    let (got, conn) = run_window(Side::Server, &fixture("nginx_pipelined"), 256);
    let mut want = expected("nginx_pipelined");
    want[2].status = None;
    want[2].response_body_size = 0;
    want[2].response_body_size_unknown = true;
    want[2].response_head_truncated = true;
    assert_eq!(got, want);
    assert_eq!(conn.stats().count(ParseError::TruncatedStartLine), 1);
}

#[test]
fn window_256_chunked_body_with_uncaptured_chunk_boundaries() {
    // Three 5000-byte chunks in one 15 KB write: the gap swallows chunk-size lines, so the size
    // is unknown; the tail of the next segment (`0`, a trailer, the empty line) ends the body.
    let (got, conn) = run_window(Side::Server, &fixture("py_chunked_big"), 256);
    let mut want = expected("py_chunked_big");
    want[0].response_body_size = 0;
    want[0].response_body_size_unknown = true;
    assert_eq!(got, want);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn small_windows_never_give_wrong_statuses_or_methods() {
    // Down to a window of 16 bytes nothing panics, and whatever is reported agrees with the
    // full parse.
    for name in ALL {
        let full = expected(name);
        for window in [16, 32, 64, 100, 128, 200] {
            let (got, _) = run_window(Side::Server, &fixture(name), window);
            assert!(got.len() <= full.len() + 1, "{name} at {window}: {got:#?}");
            let mut next = 0;
            for g in &got {
                // Exchanges come out in order; some may be missing (lost in gaps).
                let found = full[next..].iter().position(|w| {
                    w.request_start_ns == g.request_start_ns
                        && w.method == g.method
                        && w.target.starts_with(&g.target)
                });
                let i =
                    next + found.unwrap_or_else(|| panic!("{name} at {window}: unexpected {g:#?}"));
                next = i + 1;
                let w = &full[i];
                if let Some(status) = g.status {
                    assert_eq!(Some(status), w.status, "{name} at {window}");
                }
                if g.status.is_some() && !g.response_body_size_unknown && !g.response_head_truncated
                {
                    assert_eq!(
                        g.response_body_size, w.response_body_size,
                        "{name} at {window}"
                    );
                }
                assert!(
                    g.target == w.target || g.request_target_truncated,
                    "{name} at {window}"
                );
            }
        }
    }
}

fn response_head(cl: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {cl}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn sendfile_download_of_10_mb_is_skipped_by_count() {
    // nginx writes the head, then sendfile()s the body: segments with nothing captured.
    const SIZE: u64 = 10 * 1024 * 1024;
    let req = b"GET /big.iso HTTP/1.1\r\nHost: files\r\n\r\n";
    let head = response_head(SIZE);
    let mut conn = Http1Connection::default();
    let mut out = Vec::new();
    conn.feed(Direction::Ingress, &seg(0, req), &mut out);
    conn.feed(Direction::Egress, &seg(1, &head), &mut out);
    let chunk = 65_536u64;
    let n = SIZE / chunk;
    for i in 0..n {
        let (enter_ns, exit_ns, tid) = times(2 + i as usize);
        conn.feed(
            Direction::Egress,
            &Segment {
                head: &[],
                gap: chunk,
                tail: &[],
                enter_ns,
                exit_ns,
                tid,
            },
            &mut out,
        );
        assert_eq!(out.is_empty(), i + 1 < n);
    }
    // The connection stays usable.
    let last = 2 + n as usize;
    conn.feed(
        Direction::Ingress,
        &seg(last, b"GET /next HTTP/1.1\r\nHost: files\r\n\r\n"),
        &mut out,
    );
    conn.feed(
        Direction::Egress,
        &seg(last + 1, b"HTTP/1.1 204 No Content\r\n\r\n"),
        &mut out,
    );
    let mut first = timed(
        exchange(mop_protocol::Role::Server, "GET", "/big.iso", Some("files")),
        (0, 0),
        (1, last - 1),
    );
    first.status = Some(200);
    first.response_body_size = SIZE;
    let mut second = timed(
        exchange(mop_protocol::Role::Server, "GET", "/next", Some("files")),
        (last, last),
        (last + 1, last + 1),
    );
    second.status = Some(204);
    second.seq = 1;
    assert_eq!(out, [first, second]);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn uncaptured_gap_inside_a_request_body() {
    // A 1 MB upload read in one syscall: head, then a gap, then the tail; then the response.
    let mut body = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    let head_len = body.len();
    body.resize(head_len + 1_000_000, b'x');
    let rec = vec![
        (true, body),
        (
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    let (got, conn) = run_window(Side::Server, &rec, 256);
    let mut want = timed(
        exchange(mop_protocol::Role::Server, "POST", "/upload", Some("h")),
        (0, 0),
        (1, 1),
    );
    want.status = Some(200);
    want.request_body_size = 1_000_000;
    want.response_body_size = 2;
    assert_eq!(got, [want]);
    assert_eq!(conn.stats().errors_total(), 0);
}

fn chunked_stream(chunks: usize, size: usize, trailers: &str) -> Vec<u8> {
    let mut b = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..chunks {
        b.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, size));
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
    b
}

#[test]
fn chunked_response_with_uncaptured_middle_ends_at_its_tail() {
    for trailers in ["", "X-Sum: 1\r\n", "A: 1\r\nB: 2\r\n"] {
        let resp = chunked_stream(20, 1000, trailers);
        let rec = vec![
            (true, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
            (false, resp),
            (true, b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
            (false, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        ];
        let (got, conn) = run_window(Side::Server, &rec, 256);
        let mut first = timed(
            exchange(mop_protocol::Role::Server, "GET", "/c", Some("h")),
            (0, 0),
            (1, 1),
        );
        first.status = Some(200);
        first.response_body_size_unknown = true;
        let mut second = timed(
            exchange(mop_protocol::Role::Server, "GET", "/d", Some("h")),
            (2, 2),
            (3, 3),
        );
        second.status = Some(204);
        // The terminator is found in the tail when it fits in 16 bytes; otherwise the response
        // is ended by the next request (same exchange either way: it ends with segment 1).
        assert_eq!(got, [first, second], "{trailers:?}");
        assert_eq!(conn.stats().errors_total(), 0);
    }
}

#[test]
fn chunked_response_written_one_chunk_per_syscall_stays_exact() {
    // Each write carries one chunk larger than the window: gaps fall inside chunk data, which
    // is skipped by count, so the size stays known.
    let resp = chunked_stream(5, 3000, "");
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rec = vec![
        (true, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        (false, resp[..head_end].to_vec()),
    ];
    let per_chunk = "bb8\r\n".len() + 3000 + 2;
    for c in resp[head_end..resp.len() - 5].chunks(per_chunk) {
        rec.push((false, c.to_vec()));
    }
    rec.push((false, b"0\r\n\r\n".to_vec()));
    let (got, conn) = run_window(Side::Server, &rec, 256);
    let mut want = timed(
        exchange(mop_protocol::Role::Server, "GET", "/c", Some("h")),
        (0, 0),
        (1, rec.len() - 1),
    );
    want.status = Some(200);
    want.response_body_size = 15_000;
    assert_eq!(got, [want]);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn truncated_request_head_with_body_in_later_segments() {
    // A POST whose head is longer than the window, its body sent in a separate write: the
    // tail shows where the head ended, so the body is counted exactly.
    let cookie = "c".repeat(400);
    let head =
        format!("POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nCookie: {cookie}\r\n\r\n")
            .into_bytes();
    let rec = vec![
        (true, head),
        (true, b"hello".to_vec()),
        (
            false,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
    ];
    let (got, conn) = run_window(Side::Server, &rec, 256);
    let mut want = timed(
        exchange(mop_protocol::Role::Server, "POST", "/form", Some("h")),
        (0, 1),
        (2, 2),
    );
    want.status = Some(200);
    want.request_body_size = 5;
    want.request_head_truncated = true;
    assert_eq!(got, [want]);
    assert_eq!(conn.stats().truncated_heads, 1);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn truncated_response_head_with_body_in_one_write_is_ended_by_the_next_request() {
    // Response head (600 bytes) and body in one write, the head's end not in the tail: the
    // body's end cannot be located, so the response ends when the next request arrives.
    let big = "v".repeat(600);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Big: {big}\r\n\r\n{}",
        "b".repeat(1000)
    )
    .into_bytes();
    let rec = vec![
        (true, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        (false, resp),
        (true, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
        (
            false,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
    ];
    let (got, conn) = run_window(Side::Server, &rec, 256);
    let mut a = timed(
        exchange(mop_protocol::Role::Server, "GET", "/a", Some("h")),
        (0, 0),
        (1, 1),
    );
    a.status = Some(200);
    a.response_body_size = 1000;
    a.response_head_truncated = true;
    let mut b = timed(
        exchange(mop_protocol::Role::Server, "GET", "/b", Some("h")),
        (2, 2),
        (3, 3),
    );
    b.status = Some(404);
    assert_eq!(got, [a, b]);
    assert_eq!(conn.stats().errors_total(), 0);
}

#[test]
fn message_starting_inside_a_gap_resyncs_on_the_next_segment() {
    // Two pipelined requests in one read, the second starting in the uncaptured middle.
    let mut first = b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 300\r\n\r\n".to_vec();
    first.resize(first.len() + 300, b'p');
    first.extend_from_slice(b"GET /lost HTTP/1.1\r\nHost: h\r\n\r\n");
    let pieces = [
        crate::support::captured(0, true, &first, 256),
        whole(1, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        whole(2, true, b"GET /three HTTP/1.1\r\nHost: h\r\n\r\n"),
        whole(3, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ];
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    let methods: Vec<(&str, Option<u16>)> =
        got.iter().map(|x| (x.target.as_str(), x.status)).collect();
    // /lost is never seen; its response is (wrongly but unavoidably) not attributable, so the
    // second response goes to /three, which is what the bytes say in order.
    assert_eq!(methods, [("/one", Some(200)), ("/three", Some(200))]);
    assert_eq!(got[0].request_body_size, 300);
    assert_eq!(conn.stats().count(ParseError::LostSync), 1);
}

#[allow(
    dead_code,
    reason = "keeps the helper imports used in every configuration"
)]
fn _unused(_: Piece<'_>, _: HttpExchange) {}
