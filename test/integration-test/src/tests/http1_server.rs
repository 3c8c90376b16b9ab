//! HTTP/1 server spans: processes selected by `open_ports`, driven by curl and a raw client.

use std::time::Duration;

use super::{
    MEASURED, Peer, Req, assert_count, assert_independent_roots, body_file, check_curl,
    check_server_span, check_timing, collect, curl_reqs, ports_config, ports_config_with_routes,
    raw_get,
};
use crate::{
    agent::Agent,
    peers::{
        curl::{Transfer, curl},
        nginx::{
            BIG_PATH, BIG_SIZE, MISSING_PATH, Nginx, NginxOptions, OK_LEN, OK_PATH, SMALL_PATH,
            SMALL_SIZE, UPLOAD_LEN, UPLOAD_PATH,
        },
        python::{FILE_PATH, FILE_SIZE, PythonServer},
        raw::{self, RawResponse},
    },
    util::{self, TempDir},
};

/// The body of `/ok` on `http11_server.py`.
const PY_OK_LEN: i64 = 3;

/// nginx, one worker: five requests on one keep-alive connection give five server spans, in
/// order, each with its own method, path, query, status and sizes, inside curl's timings.
#[test]
fn nginx_one_worker_keepalive() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let base = nginx.url("");
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?x=1&y=two", 200, OK_LEN),
        Req::get(MISSING_PATH, 404, MEASURED),
        Req::get("/small.html?v=2", 200, SMALL_SIZE),
        Req::get(OK_PATH, 200, OK_LEN),
    ];
    let (run, reqs) = curl_reqs(&base, &reqs, &dir, |t| t);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "5 keep-alive requests");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
    // One connection is served by one worker, one request after the other.
    assert!(
        spans.iter().all(|s| s.pid == spans[0].pid),
        "one connection, several pids"
    );
    for pair in spans.windows(2) {
        assert!(
            pair[0].end_unix_nano <= pair[1].start_unix_nano,
            "keep-alive requests overlap: {} then {}",
            pair[0],
            pair[1]
        );
    }
    assert_independent_roots(&spans);
}

/// nginx, four workers with `reuseport`: sixteen connections spread over the workers, and every
/// request gives exactly one span from the worker that served it.
#[test]
fn nginx_four_workers() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start_with(NginxOptions {
        workers: 4,
        reuseport: true,
        ..NginxOptions::default()
    });
    assert_eq!(nginx.worker_pids().len(), 4);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let reqs = [Req::get(SMALL_PATH, 200, SMALL_SIZE); 16];
    let (run, reqs) = curl_reqs(&nginx.url(""), &reqs, &dir, |t| {
        t.header("Connection: close")
    });
    assert_eq!(
        run.connections(),
        16,
        "each request should open its own connection"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "16 requests");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
    let mut pids: Vec<u32> = spans.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert!(
        pids.len() >= 2,
        "16 connections over 4 reuseport workers all reported by one worker {pids:?}: are the \
         other workers instrumented?"
    );
    assert_independent_roots(&spans);
}

/// Python's `http.server` (HTTP/1.0 responses, one connection per request): three requests,
/// three spans with the interpreter's executable name as service.
#[test]
fn python_http_server() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let py = PythonServer::http_server();
    let agent = Agent::start(&ports_config(&py.port.to_string()), &[]);
    let reqs = [
        Req::get(FILE_PATH, 200, FILE_SIZE),
        Req::get("/nope", 404, MEASURED),
        Req::get("/file.txt?v=2", 200, FILE_SIZE),
    ];
    let (run, reqs) = curl_reqs(&py.url(""), &reqs, &dir, |t| t);
    assert_eq!(run.connections(), 3, "http.server closes every connection");
    let pids = [py.pid()];
    let spans = collect(agent, &pids, reqs.len());
    assert_count(&spans, reqs.len(), "3 requests");
    let service = py.service();
    assert!(
        service.starts_with("python"),
        "unexpected executable {service}"
    );
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
    assert_independent_roots(&spans);
}

/// Three requests in one write (HTTP pipelining): three spans, in request order.
#[test]
fn pipelined_requests() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let port = nginx.port;
    let pipeline = [
        raw_get("GET", SMALL_PATH, port),
        raw_get("GET", MISSING_PATH, port),
        raw_get("GET", "/ok?z=9", port),
    ];
    let written: Vec<&str> = pipeline.iter().map(String::as_str).collect();
    let exchange = raw::pipelined(port, &written);
    let statuses: Vec<u16> = exchange.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404, 200], "nginx's answers to the pipeline");
    let missing_len = i64::try_from(exchange.responses[1].body_len).expect("small");
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get(MISSING_PATH, 404, missing_len),
        Req::get("/ok?z=9", 200, OK_LEN),
    ];
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "3 pipelined requests");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port,
        version: "1.1",
    };
    for (span, req) in spans.iter().zip(&reqs) {
        check_server_span(span, req, &peer);
        check_timing(
            span,
            (exchange.start_unix_nano, exchange.end_unix_nano),
            None,
        );
    }
    assert_independent_roots(&spans);
}

/// Two requests on one connection, each written one byte per `write` with a pause: the same
/// two spans as if each had arrived whole.
#[test]
fn one_byte_writes() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let port = nginx.port;
    let first = raw_get("GET", "/ok?split=1", port);
    let second = raw_get("GET", SMALL_PATH, port);
    let exchange = raw::split_writes(
        port,
        &[first.as_bytes(), second.as_bytes()],
        1,
        Duration::from_millis(1),
    );
    assert_eq!(
        exchange.responses,
        [
            RawResponse {
                status: 200,
                body_len: 3
            },
            RawResponse {
                status: 200,
                body_len: 1234
            },
        ]
    );
    let reqs = [
        Req::get("/ok?split=1", 200, OK_LEN),
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
    ];
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "2 requests written byte by byte");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port,
        version: "1.1",
    };
    for (span, req) in spans.iter().zip(&reqs) {
        check_server_span(span, req, &peer);
        check_timing(
            span,
            (exchange.start_unix_nano, exchange.end_unix_nano),
            None,
        );
    }
}

/// A POST whose head and 100-byte body arrive one byte per `write`, then a GET on the same
/// connection: exact body size, and the body is not taken for a second request.
#[test]
fn post_one_byte_writes() {
    let _serial = util::serial();
    let py = PythonServer::http11(&[]);
    let agent = Agent::start(&ports_config(&py.port.to_string()), &[]);
    let port = py.port;
    let body = util::pattern(100);
    let mut upload = format!(
        "POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    upload.extend_from_slice(&body);
    let get = raw_get("GET", "/ok", port);
    let exchange = raw::split_writes(
        port,
        &[&upload, get.as_bytes()],
        1,
        Duration::from_millis(1),
    );
    assert_eq!(
        exchange.responses,
        [
            RawResponse {
                status: 200,
                body_len: 3
            },
            RawResponse {
                status: 200,
                body_len: 3
            },
        ]
    );
    let reqs = [
        Req::post(UPLOAD_PATH, 100, 200, PY_OK_LEN),
        Req::get("/ok", 200, PY_OK_LEN),
    ];
    let pids = [py.pid()];
    let spans = collect(agent, &pids, reqs.len());
    assert_count(&spans, reqs.len(), "a POST and a GET written byte by byte");
    let service = py.service();
    let peer = Peer {
        service: &service,
        pids: &pids,
        port,
        version: "1.1",
    };
    for (span, req) in spans.iter().zip(&reqs) {
        check_server_span(span, req, &peer);
        check_timing(
            span,
            (exchange.start_unix_nano, exchange.end_unix_nano),
            None,
        );
    }
}

/// POST bodies of 1, 1000 and 70000 bytes on one keep-alive connection: exact
/// `http.request.body.size` for each, and no span made of body bytes.
#[test]
fn post_bodies() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let reqs = [
        Req::post(UPLOAD_PATH, 1, 200, UPLOAD_LEN),
        Req::post(UPLOAD_PATH, 1000, 200, UPLOAD_LEN),
        Req::post(UPLOAD_PATH, 70_000, 200, UPLOAD_LEN),
        Req::get(OK_PATH, 200, OK_LEN),
    ];
    let (run, reqs) = curl_reqs(&nginx.url(""), &reqs, &dir, |t| t);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "3 POSTs and a GET");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// A 10 MiB file sent with `sendfile`: one span with `http.response.body.size` = 10485760,
/// then the next request on the connection is still seen.
#[test]
fn sendfile_10mb() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let reqs = [
        Req::get(BIG_PATH, 200, BIG_SIZE),
        Req::get(OK_PATH, 200, OK_LEN),
    ];
    let (run, reqs) = curl_reqs(&nginx.url(""), &reqs, &dir, |t| t);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "a 10 MiB download and a GET");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// Chunked responses (each chunk its own write): `http.response.body.size` is the decoded
/// payload (RFC 9112 section 7.1: the chunk framing is not body), and the request after each
/// chunked response on the same connection is still seen.
#[test]
fn chunked_responses() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let py = PythonServer::http11(&[]);
    let agent = Agent::start(&ports_config(&py.port.to_string()), &[]);
    let reqs = [
        Req::get("/chunked?chunks=5&size=1000", 200, 5000),
        Req::get("/chunked?chunks=1&size=1", 200, 1),
        Req::get("/chunked?chunks=40&size=4096&delay_ms=0", 200, 40 * 4096),
        Req::get("/ok", 200, PY_OK_LEN),
    ];
    let (run, reqs) = curl_reqs(&py.url(""), &reqs, &dir, |t| t);
    assert_eq!(
        run.connections(),
        1,
        "the server did not keep the connection alive"
    );
    let pids = [py.pid()];
    let spans = collect(agent, &pids, reqs.len());
    assert_count(&spans, reqs.len(), "3 chunked responses and a GET");
    let service = py.service();
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// `Expect: 100-continue` with a 1 MiB body: one span with the final status (200, not the
/// interim 100) and the exact body size, then the next request on the connection.
#[test]
fn expect_100_continue() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let py = PythonServer::http11(&[]);
    let agent = Agent::start(&ports_config(&py.port.to_string()), &[]);
    let size: i64 = 1024 * 1024;
    let body = body_file(&dir, size);
    let reqs = [
        Req::post(UPLOAD_PATH, size, 200, PY_OK_LEN),
        Req::get("/ok", 200, PY_OK_LEN),
    ];
    let run = curl(&[
        Transfer::post_expect_continue(py.url(UPLOAD_PATH), &body),
        Transfer::get(py.url("/ok")),
    ]);
    let reqs = check_curl(&run, &reqs);
    assert_eq!(
        run.connections(),
        1,
        "the server did not keep the connection alive"
    );
    let pids = [py.pid()];
    let spans = collect(agent, &pids, reqs.len());
    assert_count(
        &spans,
        reqs.len(),
        "a POST with Expect: 100-continue and a GET",
    );
    let service = py.service();
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// HEAD then GET of the same file on one connection: the HEAD span has no response body even
/// though its `Content-Length` says 1234, and the GET after it is seen whole.
#[test]
fn head_then_get() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let reqs = [
        Req::head(SMALL_PATH, 200),
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
    ];
    let (run, reqs) = curl_reqs(&nginx.url(""), &reqs, &dir, |t| t);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "HEAD and GET");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// HTTP/1.0 requests: `network.protocol.version` is `1.0` (the request's version, though nginx
/// answers with an HTTP/1.1 status line), one connection each.
#[test]
fn http10_requests() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let reqs = [
        Req::get(OK_PATH, 200, OK_LEN),
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
    ];
    let (run, reqs) = curl_reqs(&nginx.url(""), &reqs, &dir, Transfer::http10);
    assert_eq!(
        run.connections(),
        2,
        "HTTP/1.0 without keep-alive: one connection each"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, reqs.len());
    assert_count(&spans, reqs.len(), "2 HTTP/1.0 requests");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.0",
    };
    for ((span, req), result) in spans.iter().zip(&reqs).zip(&run.results) {
        check_server_span(span, req, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// `routes.patterns`: a matching path gets `http.route` and the name `{method} {route}`;
/// `routes.unmatched: path` uses the path itself for the rest.
#[test]
fn route_patterns() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let config = ports_config_with_routes(
        &nginx.port.to_string(),
        "  patterns:\n    - /users/{id}\n  unmatched: path\n",
    );
    let agent = Agent::start(&config, &[]);
    let run = curl(&[
        Transfer::get(nginx.url("/users/42?x=1")),
        Transfer::get(nginx.url(OK_PATH)),
    ]);
    assert_eq!(run.results[0].http_code, 200);
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 2);
    assert_count(&spans, 2, "2 requests");
    let user = &spans[0];
    assert_eq!(user.name, "GET /users/{id}", "name of {user}");
    assert_eq!(
        user.str_attr("http.route"),
        "/users/{id}",
        "http.route of {user}"
    );
    assert_eq!(user.str_attr("url.path"), "/users/42", "url.path of {user}");
    assert_eq!(user.str_attr("url.query"), "x=1", "url.query of {user}");
    let ok = &spans[1];
    assert_eq!(ok.name, "GET /ok", "name of {ok}");
    assert_eq!(ok.str_attr("http.route"), "/ok", "http.route of {ok}");
}

/// With no `routes` section, unmatched paths get OBI's default `heuristic` route: id-like
/// segments become `*`, words stay.
#[test]
fn default_heuristic_routes() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let config = format!(
        "trace_printer: json\n\
         discovery:\n  \
           instrument:\n    \
             - open_ports: \"{}\"\n",
        nginx.port
    );
    let agent = Agent::start(&config, &[]);
    let run = curl(&[
        Transfer::get(nginx.url("/users/123/orders?page=2")),
        Transfer::get(nginx.url("/users/550e8400-e29b-41d4-a716-446655440000")),
        Transfer::get(nginx.url(OK_PATH)),
    ]);
    assert!(run.results.iter().all(|r| r.http_code == 200));
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 3);
    assert_count(&spans, 3, "3 requests");
    for (span, route) in spans.iter().zip(["/users/*/orders", "/users/*", "/ok"]) {
        assert_eq!(span.str_attr("http.route"), route, "http.route of {span}");
        assert_eq!(span.name, format!("GET {route}"), "name of {span}");
    }
}
