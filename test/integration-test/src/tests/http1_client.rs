//! HTTP/1 client spans: curl selected by `exe_path: "*/curl"`, started after the agent.
//!
//! The contract picks up processes started after the agent within 2 s; these tests also assume
//! the agent instruments a process whose executable matches `exe_path` from its first
//! syscalls (an exec-time fast path), so every request of a short-lived curl is seen.

use super::{
    CURL_CONFIG, MEASURED, Peer, Req, SPAN_WAIT, assert_count, assert_independent_roots, body_file,
    by_start, check_client_span, check_curl, check_timing, curl_spans,
};
use crate::{
    agent::Agent,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, MISSING_PATH, Nginx, OK_PATH, SMALL_PATH, SMALL_SIZE, UPLOAD_PATH},
        python::PythonServer,
    },
    util::{self, TempDir},
};

/// Five requests on one keep-alive connection (GET, GET with a query, a 404, a POST, a HEAD):
/// five client spans with the exact `url.full`, status, sizes, and ERROR only for the 404;
/// nginx itself is not selected, so no server span.
#[test]
fn curl_keepalive() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start(1);
    let agent = Agent::start(CURL_CONFIG, &[]);
    let upload = body_file(&dir, 1000);
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?q=1&r=%20", 200, nginx::OK_LEN),
        Req::get(MISSING_PATH, 404, MEASURED),
        Req::post(UPLOAD_PATH, 1000, 200, nginx::UPLOAD_LEN),
        Req::head(SMALL_PATH, 200),
    ];
    let urls: Vec<String> = reqs.iter().map(|r| nginx.url(r.target)).collect();
    let run = curl(&[
        Transfer::get(&urls[0]),
        Transfer::get(&urls[1]),
        Transfer::get(&urls[2]),
        Transfer::post(&urls[3], &upload),
        Transfer::head(&urls[4]),
    ]);
    let reqs = check_curl(&run, &reqs);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let pids = [run.pid];
    let service = util::which_name("curl");
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| s.pid == run.pid).count() >= reqs.len()
    });
    let spans = by_start(curl_spans(agent.stop(), &pids, &service));
    assert_count(&spans, reqs.len(), "5 requests sent by curl");
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: nginx.port,
        version: "1.1",
    };
    for (((span, req), url), result) in spans.iter().zip(&reqs).zip(&urls).zip(&run.results) {
        check_client_span(span, req, url, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
    assert_independent_roots(&spans);
}

/// A chunked response and a POST with `Expect: 100-continue` seen from the client: decoded
/// body size, one span with the final 200 for the POST.
///
/// curl reads the whole chunked response in one `read`, so the chunk sizes are only seen
/// with a capture window that holds it: this test sets the 4 KiB window.
#[test]
fn curl_chunked_and_expect_continue() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let py = PythonServer::http11(&[]);
    let config = format!("{CURL_CONFIG}ebpf:\n  buffer_sizes:\n    http: 4096\n");
    let agent = Agent::start(&config, &[]);
    let size: i64 = 1024 * 1024;
    let body = body_file(&dir, size);
    let reqs = [
        Req::get("/chunked?chunks=4&size=500", 200, 2000),
        Req::post(UPLOAD_PATH, size, 200, 3),
        Req::get(OK_PATH, 200, 3),
    ];
    let urls: Vec<String> = reqs.iter().map(|r| py.url(r.target)).collect();
    let run = curl(&[
        Transfer::get(&urls[0]),
        Transfer::post_expect_continue(&urls[1], &body),
        Transfer::get(&urls[2]),
    ]);
    let reqs = check_curl(&run, &reqs);
    assert_eq!(
        run.connections(),
        1,
        "the server did not keep the connection alive"
    );
    let pids = [run.pid];
    let service = util::which_name("curl");
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| s.pid == run.pid).count() >= reqs.len()
    });
    let spans = by_start(curl_spans(agent.stop(), &pids, &service));
    assert_count(&spans, reqs.len(), "3 requests sent by curl");
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    for (((span, req), url), result) in spans.iter().zip(&reqs).zip(&urls).zip(&run.results) {
        check_client_span(span, req, url, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}

/// `curl --http1.0`: client spans with `network.protocol.version` `1.0`.
#[test]
fn curl_http10() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let agent = Agent::start(CURL_CONFIG, &[]);
    let reqs = [
        Req::get(OK_PATH, 200, nginx::OK_LEN),
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
    ];
    let urls: Vec<String> = reqs.iter().map(|r| nginx.url(r.target)).collect();
    let run = curl(&[
        Transfer::get(&urls[0]).http10(),
        Transfer::get(&urls[1]).http10(),
    ]);
    let reqs = check_curl(&run, &reqs);
    let pids = [run.pid];
    let service = util::which_name("curl");
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| s.pid == run.pid).count() >= reqs.len()
    });
    let spans = by_start(curl_spans(agent.stop(), &pids, &service));
    assert_count(&spans, reqs.len(), "2 HTTP/1.0 requests sent by curl");
    let peer = Peer {
        service: &service,
        pids: &pids,
        port: nginx.port,
        version: "1.0",
    };
    for (((span, req), url), result) in spans.iter().zip(&reqs).zip(&urls).zip(&run.results) {
        check_client_span(span, req, url, &peer);
        check_timing(span, (run.start_unix_nano, run.end_unix_nano), Some(result));
    }
}
