//! Exact exchanges of every recorded connection, from both ends.

use mop_protocol::{HttpExchange, Role};

use crate::support::{FIXTURES, Side, TRACEPARENT, by_stream, exchange, fixture, run, timed};

/// One expected exchange: stream, method, path, status, grpc-status, body sizes, request
/// segments (first, last), response segments (first, last), traceparent, content-type.
struct Row {
    stream: u32,
    method: &'static str,
    path: &'static str,
    status: Option<u16>,
    grpc: Option<u32>,
    bodies: (u64, u64),
    req: (usize, usize),
    resp: (usize, usize),
    traced: bool,
    content_type: Option<&'static str>,
}

#[expect(clippy::too_many_arguments, reason = "one table row")]
const fn row(
    stream: u32,
    method: &'static str,
    path: &'static str,
    status: Option<u16>,
    grpc: Option<u32>,
    bodies: (u64, u64),
    req: (usize, usize),
    resp: (usize, usize),
    traced: bool,
    content_type: Option<&'static str>,
) -> Row {
    Row {
        stream,
        method,
        path,
        status,
        grpc,
        bodies,
        req,
        resp,
        traced,
        content_type,
    }
}

const GRPC: Option<&str> = Some("application/grpc");
const SAY: &str = "/demo.v1.Echo/Say";

#[expect(clippy::too_many_lines, reason = "one table of expectations")]
fn rows(name: &str) -> (&'static str, Vec<Row>) {
    match name {
        "grpc_calls" => (
            "127.0.0.1:18590",
            vec![
                row(
                    1,
                    "POST",
                    SAY,
                    Some(200),
                    Some(0),
                    (10, 16),
                    (3, 3),
                    (6, 6),
                    true,
                    GRPC,
                ),
                row(
                    3,
                    "POST",
                    SAY,
                    Some(200),
                    Some(0),
                    (10, 16),
                    (8, 8),
                    (10, 10),
                    false,
                    GRPC,
                ),
                row(
                    5,
                    "POST",
                    "/demo.v1.Echo/Count",
                    Some(200),
                    Some(0),
                    (6, 315),
                    (11, 11),
                    (12, 15),
                    false,
                    GRPC,
                ),
                row(
                    7,
                    "POST",
                    "/demo.v1.Echo/Total",
                    Some(200),
                    Some(0),
                    (75, 7),
                    (16, 20),
                    (23, 23),
                    false,
                    GRPC,
                ),
                // NOT_FOUND, trailers-only.
                row(
                    9,
                    "POST",
                    "/demo.v1.Echo/Missing",
                    Some(200),
                    Some(5),
                    (6, 0),
                    (24, 24),
                    (27, 27),
                    false,
                    GRPC,
                ),
                // DEADLINE_EXCEEDED: the server's trailers-only answer (its RST_STREAM follows).
                row(
                    11,
                    "POST",
                    "/demo.v1.Echo/Slow",
                    Some(200),
                    Some(4),
                    (6, 0),
                    (28, 28),
                    (31, 31),
                    false,
                    GRPC,
                ),
            ],
        ),
        "grpc_concurrent" => {
            let say = |s, req, resp| {
                row(
                    s,
                    "POST",
                    SAY,
                    Some(200),
                    Some(0),
                    (105, 111),
                    req,
                    resp,
                    false,
                    GRPC,
                )
            };
            (
                "127.0.0.1:18591",
                vec![
                    say(1, (4, 4), (7, 7)),
                    say(3, (6, 6), (14, 14)),
                    say(5, (6, 6), (16, 16)),
                    say(7, (6, 6), (17, 17)),
                    say(9, (6, 6), (19, 19)),
                    say(11, (9, 9), (18, 18)),
                    say(13, (10, 10), (20, 20)),
                    say(15, (11, 11), (21, 21)),
                    row(
                        17,
                        "POST",
                        SAY,
                        Some(200),
                        Some(0),
                        (70005, 70011),
                        (12, 13),
                        (22, 23),
                        false,
                        GRPC,
                    ),
                ],
            )
        }
        "nginx_curl" => (
            "127.0.0.1:18592",
            vec![row(
                1,
                "GET",
                "/index.html",
                Some(200),
                None,
                (0, 38),
                (0, 0),
                (1, 1),
                true,
                None,
            )],
        ),
        "nginx_h2" => (
            "127.0.0.1:18593",
            vec![
                row(
                    1,
                    "GET",
                    "/index.html",
                    Some(200),
                    None,
                    (0, 38),
                    (0, 0),
                    (1, 2),
                    true,
                    None,
                ),
                row(
                    3,
                    "GET",
                    "/missing",
                    Some(404),
                    None,
                    (0, 153),
                    (0, 0),
                    (3, 4),
                    true,
                    None,
                ),
                row(
                    5,
                    "GET",
                    "/big.bin",
                    Some(200),
                    None,
                    (0, 40960),
                    (5, 5),
                    (6, 6),
                    true,
                    None,
                ),
                row(
                    7,
                    "HEAD",
                    "/index.html",
                    Some(200),
                    None,
                    (0, 0),
                    (7, 7),
                    (8, 8),
                    true,
                    None,
                ),
                row(
                    9,
                    "GET",
                    "/index.html?again=1",
                    Some(200),
                    None,
                    (0, 38),
                    (9, 9),
                    (10, 10),
                    true,
                    None,
                ),
            ],
        ),
        "hypercorn_prior_knowledge" => (
            "127.0.0.1:18594",
            vec![row(
                1,
                "POST",
                "/upload",
                Some(200),
                None,
                (38, 78),
                (0, 0),
                (4, 6),
                false,
                Some("application/x-www-form-urlencoded"),
            )],
        ),
        "hypercorn_h2" => (
            "127.0.0.1:18595",
            vec![
                row(
                    1,
                    "POST",
                    "/upload",
                    Some(200),
                    None,
                    (40000, 87),
                    (0, 0),
                    (4, 8),
                    true,
                    Some("application/octet-stream"),
                ),
                row(
                    3,
                    "GET",
                    "/missing",
                    Some(404),
                    None,
                    (0, 9),
                    (0, 0),
                    (5, 10),
                    true,
                    None,
                ),
                row(
                    5,
                    "GET",
                    "/x",
                    Some(200),
                    None,
                    (0, 60),
                    (0, 0),
                    (6, 12),
                    true,
                    None,
                ),
            ],
        ),
        "hypercorn_upgrade" => (
            "127.0.0.1:18596",
            vec![row(
                1,
                "GET",
                "/first",
                Some(200),
                None,
                (0, 72),
                (0, 0),
                (5, 7),
                true,
                None,
            )],
        ),
        other => panic!("no expectations for {other}"),
    }
}

/// What each recorded connection must give, seen from `side`, by stream.
pub(crate) fn expected(name: &str, side: Side) -> Vec<HttpExchange> {
    let (host, rows) = rows(name);
    rows.into_iter()
        .map(|r| {
            let mut x = timed(
                exchange(side.role(), r.stream, r.method, r.path, host),
                r.req,
                r.resp,
            );
            x.status = r.status;
            x.grpc_status = r.grpc;
            x.request_body_size = r.bodies.0;
            x.response_body_size = r.bodies.1;
            x.content_type = r.content_type.map(Into::into);
            if r.traced {
                x.trace_headers.traceparent = Some(TRACEPARENT.into());
            }
            if name == "hypercorn_upgrade" {
                // Stream 1 is the HTTP/1.1 upgrade request: HTTP/1 keeps its `Host` and it has
                // no stream-level request end beyond its head. It keeps the sequence number of
                // its HTTP/1 start marker.
                x.stream_id = 1;
                x.seq = 0;
            }
            x
        })
        .collect()
}

#[test]
fn every_fixture_from_both_ends() {
    for name in FIXTURES {
        let rec = fixture(name);
        for side in [Side::Server, Side::Client] {
            let (got, stats) = run(side, &rec);
            let got = by_stream(got);
            assert_eq!(got, expected(name, side), "{name} as {side:?}");
            assert_eq!(stats.errors_total(), 0, "{name} as {side:?}: {stats:?}");
            assert_eq!(stats.degraded_exchanges, 0, "{name}");
            assert_eq!(stats.exchanges, got.len() as u64);
        }
    }
}

#[test]
fn grpc_names_and_roles() {
    let (got, _) = run(Side::Client, &fixture("grpc_calls"));
    for x in &got {
        assert!(x.is_grpc());
        assert_eq!(x.role, Role::Client);
        let (svc, method) = mop_protocol::http2::grpc::split_path(&x.target).unwrap();
        assert_eq!(svc, "demo.v1.Echo");
        assert!(["Say", "Count", "Total", "Missing", "Slow"].contains(&method));
    }
    let (got, _) = run(Side::Server, &fixture("nginx_h2"));
    assert!(got.iter().all(|x| !x.is_grpc()));
}

#[test]
fn grpc_message_only_when_asked() {
    use mop_protocol::http2::Http2Limits;

    use crate::support::{run_pieces, whole};
    let rec = fixture("grpc_calls");
    let limits = Http2Limits {
        keep_grpc_message: true,
        ..Http2Limits::default()
    };
    let pieces = rec.iter().enumerate().map(|(i, (c, b))| whole(i, *c, b));
    let (got, _) = run_pieces(Side::Server, limits, pieces);
    let got = by_stream(got);
    assert_eq!(got[4].grpc_message.as_deref(), Some("no such thing"));
    assert_eq!(got[0].grpc_message.as_deref(), Some(""));
    let (got, _) = run(Side::Server, &rec);
    assert!(got.iter().all(|x| x.grpc_message.is_none()));
}
