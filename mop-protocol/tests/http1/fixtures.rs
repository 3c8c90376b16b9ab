//! Exact exchanges from connections recorded between real programs.

use mop_protocol::http1::{Http1Limits, ParseError};
use mop_protocol::{HttpExchange, HttpVersion, Role};

use crate::support::{Side, TRACEPARENT, exchange, fixture, run, run_pieces, timed, whole};

/// What each recorded connection must give, seen from the server.
#[expect(clippy::too_many_lines, reason = "one table of expectations")]
pub(crate) fn expected(name: &str) -> Vec<HttpExchange> {
    let s = Role::Server;
    let with = |mut x: HttpExchange, f: &dyn Fn(&mut HttpExchange)| {
        f(&mut x);
        x
    };
    match name {
        "nginx_keepalive" => vec![
            with(
                timed(
                    exchange(s, "GET", "/index.html", Some("127.0.0.1:18490")),
                    (0, 0),
                    (1, 2),
                ),
                &|x| {
                    x.status = Some(200);
                    x.response_body_size = 38;
                    x.trace_headers.traceparent = Some(TRACEPARENT.into());
                },
            ),
            with(
                timed(
                    exchange(s, "GET", "/missing?x=1", Some("127.0.0.1:18490")),
                    (3, 3),
                    (4, 4),
                ),
                &|x| {
                    x.status = Some(404);
                    x.response_body_size = 153;
                    x.trace_headers.traceparent = Some(TRACEPARENT.into());
                },
            ),
        ],
        "nginx_head" => vec![with(
            timed(
                exchange(s, "HEAD", "/index.html", Some("127.0.0.1:18491")),
                (0, 0),
                (1, 1),
            ),
            &|x| {
                x.status = Some(200);
            },
        )],
        "nginx_304" => vec![with(
            timed(
                exchange(s, "GET", "/index.html", Some("127.0.0.1:18492")),
                (0, 0),
                (1, 1),
            ),
            &|x| {
                x.status = Some(304);
            },
        )],
        "nginx_big" => vec![with(
            timed(
                exchange(s, "GET", "/big.bin", Some("127.0.0.1:18493")),
                (0, 0),
                (1, 5),
            ),
            &|x| {
                x.status = Some(200);
                x.response_body_size = 262_144;
            },
        )],
        "nginx_pipelined" => vec![
            with(
                timed(
                    exchange(s, "GET", "/index.html", Some("pipe")),
                    (0, 0),
                    (1, 2),
                ),
                &|x| {
                    x.status = Some(200);
                    x.response_body_size = 38;
                },
            ),
            with(
                timed(
                    exchange(s, "HEAD", "/index.html", Some("pipe")),
                    (0, 0),
                    (2, 2),
                ),
                &|x| {
                    x.status = Some(200);
                    x.trace_headers.b3 =
                        Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".into());
                },
            ),
            with(
                timed(exchange(s, "GET", "/nope", Some("pipe")), (0, 0), (2, 2)),
                &|x| {
                    x.status = Some(404);
                    x.response_body_size = 153;
                },
            ),
        ],
        "stock_http10" => vec![with(
            timed(
                exchange(s, "GET", "/index.html", Some("127.0.0.1:18495")),
                (0, 0),
                (1, 2),
            ),
            &|x| {
                x.version = HttpVersion::Http10;
                x.status = Some(200);
                x.response_body_size = 38;
            },
        )],
        "py_chunked_response" => vec![with(
            timed(
                exchange(s, "GET", "/chunked", Some("127.0.0.1:18496")),
                (0, 0),
                (1, 2),
            ),
            &|x| {
                x.status = Some(200);
                x.response_body_size = 6 + 320 + 6;
            },
        )],
        "py_chunked_big" => vec![with(
            timed(
                exchange(s, "GET", "/chunked-big", Some("127.0.0.1:18497")),
                (0, 0),
                (1, 3),
            ),
            &|x| {
                x.status = Some(200);
                x.response_body_size = 15_000;
            },
        )],
        "nginx_big_headers" => {
            let target = format!(
                "/index.html?{}",
                (0..30)
                    .map(|i| format!("k{i}=v{i}"))
                    .collect::<Vec<_>>()
                    .join("&")
            );
            vec![with(
                timed(
                    exchange(s, "GET", &target, Some("127.0.0.1:18498")),
                    (0, 0),
                    (1, 1),
                ),
                &|x| {
                    x.status = Some(200);
                    x.response_body_size = 38;
                    x.trace_headers.traceparent = Some(TRACEPARENT.into());
                },
            )]
        }
        "py_close_delimited" => vec![with(
            timed(
                exchange(s, "GET", "/close", Some("127.0.0.1:18499")),
                (0, 0),
                (1, 2),
            ),
            &|x| {
                x.status = Some(200);
                x.response_body_size = 3 * 33;
            },
        )],
        "py_expect_continue" => vec![with(
            timed(
                exchange(s, "POST", "/echo", Some("127.0.0.1:18500")),
                (0, 2),
                (3, 4),
            ),
            &|x| {
                x.status = Some(201);
                x.content_type = Some("application/json".into());
                x.request_body_size = 38;
                x.response_body_size = 13;
            },
        )],
        "py_chunked_request" => vec![with(
            timed(
                exchange(s, "PUT", "/upload", Some("127.0.0.1:18501")),
                (0, 0),
                (1, 1),
            ),
            &|x| {
                x.status = Some(201);
                x.content_type = Some("application/x-www-form-urlencoded".into());
                x.request_body_size = 38;
                x.response_body_size = 13;
            },
        )],
        other => panic!("no expectation for {other}"),
    }
}

pub(crate) const ALL: [&str; 12] = [
    "nginx_keepalive",
    "nginx_head",
    "nginx_304",
    "nginx_big",
    "nginx_pipelined",
    "stock_http10",
    "py_chunked_response",
    "py_chunked_big",
    "nginx_big_headers",
    "py_close_delimited",
    "py_expect_continue",
    "py_chunked_request",
];

pub(crate) fn as_client(mut v: Vec<HttpExchange>) -> Vec<HttpExchange> {
    for x in &mut v {
        x.role = Role::Client;
    }
    v
}

#[test]
fn every_fixture_gives_its_exchanges_on_the_server() {
    for name in ALL {
        let (got, conn) = run(Side::Server, &fixture(name));
        assert_eq!(got, expected(name), "{name}");
        assert_eq!(conn.stats().errors_total(), 0, "{name}: {:?}", conn.stats());
        assert_eq!(conn.stats().exchanges, got.len() as u64);
    }
}

#[test]
fn every_fixture_gives_its_exchanges_on_the_client() {
    for name in ALL {
        let (got, _) = run(Side::Client, &fixture(name));
        assert_eq!(got, as_client(expected(name)), "{name}");
    }
}

#[test]
fn exchanges_are_emitted_when_the_response_completes_not_at_close() {
    // Keep-alive: each exchange is out as soon as its response's last segment is fed.
    let rec = fixture("nginx_keepalive");
    let mut conn = mop_protocol::http1::Http1Connection::default();
    let mut out = Vec::new();
    let mut after = Vec::new();
    for (i, (c2s, b)) in rec.iter().enumerate() {
        conn.feed(Side::Server.dir(*c2s), &crate::support::seg(i, b), &mut out);
        after.push(out.len());
    }
    assert_eq!(after, [0, 0, 1, 1, 2]);
    assert_eq!(conn.pending(), 0);
}

#[test]
fn close_delimited_body_completes_only_at_close() {
    let rec = fixture("py_close_delimited");
    let mut conn = mop_protocol::http1::Http1Connection::default();
    let mut out = Vec::new();
    for (i, (c2s, b)) in rec.iter().enumerate() {
        conn.feed(Side::Server.dir(*c2s), &crate::support::seg(i, b), &mut out);
    }
    assert!(out.is_empty());
    conn.on_close(5, &mut out);
    assert_eq!(out, expected("py_close_delimited"));
}

#[test]
fn a_connection_without_responses_emits_its_requests_at_close() {
    let rec = fixture("nginx_pipelined");
    let (got, conn) = run_pieces(
        Side::Server,
        Http1Limits::default(),
        [whole(0, true, &rec[0].1)],
    );
    let mut want = expected("nginx_pipelined");
    for x in &mut want {
        x.status = None;
        x.response_body_size = 0;
        x.response_start_ns = 0;
        x.response_end_ns = crate::support::CLOSE_NS;
    }
    assert_eq!(got, want);
    assert_eq!(conn.stats().count(ParseError::IncompleteAtClose), 0);
}

#[test]
fn responses_without_requests_are_skipped_and_counted() {
    // The parser joined after the requests: only the response direction is seen.
    let rec = fixture("nginx_keepalive");
    let pieces = rec
        .iter()
        .enumerate()
        .filter(|(_, (c2s, _))| !c2s)
        .map(|(i, (c2s, b))| whole(i, *c2s, b));
    let (got, conn) = run_pieces(Side::Server, Http1Limits::default(), pieces);
    assert!(got.is_empty());
    assert_eq!(conn.stats().count(ParseError::ResponseWithoutRequest), 2);
    assert_eq!(conn.stats().errors_total(), 2);
}
