//! Plain HTTP/2 on cleartext (h2c) with real peers: nginx `listen ... http2`, a hypercorn ASGI
//! app, and curl as the client (`--http2-prior-knowledge`, and `--http2`, which upgrades with
//! `Upgrade: h2c`). Server and client spans are HTTP spans with `network.protocol.version` `2`,
//! exact paths, statuses and body sizes.
//!
//! curl 7.88 (Debian 12) fails every transfer after the first on a reused prior-knowledge
//! connection ("Error in the HTTP2 framing layer", with or without the agent), so prior
//! knowledge is one curl per request; the upgrade path reuses its connection.

use super::{
    MEASURED, Peer, Req, body_file, check_server_and_curl, check_timing, collect_server_and_curl,
    curl_reqs, ports_config,
};
use crate::{
    agent::Agent,
    peers::{
        curl::{CurlRun, Transfer},
        nginx::{
            self, FAIL_PATH, MISSING_PATH, Nginx, NginxOptions, OK_PATH, SMALL_PATH, SMALL_SIZE,
            UPLOAD_PATH,
        },
        python::PythonServer,
    },
    util::{self, TempDir},
};

/// Runs each request in its own curl invocation with `--http2-prior-knowledge`; checks curl
/// spoke HTTP/2 and saw what the test expects.
fn prior_knowledge<'a>(
    base: &str,
    reqs: &[Req<'a>],
    dir: &TempDir,
) -> (Vec<CurlRun>, Vec<Req<'a>>) {
    let mut runs = Vec::new();
    let mut measured = Vec::new();
    for req in reqs {
        let (run, r) = curl_reqs(base, std::slice::from_ref(req), dir, |t| {
            t.args(["--http2-prior-knowledge"])
        });
        assert_eq!(
            run.results[0].http_version, "2",
            "curl did not speak HTTP/2"
        );
        runs.push(run);
        measured.extend(r);
    }
    (runs, measured)
}

/// A config selecting the server on `port` and every curl.
fn config(port: u16) -> String {
    format!(
        "{}    - exe_path: \"*/curl\"\n",
        ports_config(&port.to_string())
    )
}

/// nginx 1.22 with `listen PORT http2` (cleartext, prior knowledge) and curl
/// `--http2-prior-knowledge`: a static file, a query string, a 404 and a 500. Exactly 4 server
/// spans (nginx's worker) and 4 client spans (each curl), version `2`, exact paths, statuses and
/// body sizes (from the DATA frames), each inside its curl's window. (No POST: nginx answers
/// `return 200` before reading the body and curl 7.88 then fails the transfer with "Stream
/// error in the HTTP/2 framing layer", agent or not; hypercorn covers request bodies.)
#[test]
fn nginx_h2c_prior_knowledge() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start_with(NginxOptions {
        http2: true,
        ..NginxOptions::default()
    });
    let agent = Agent::start(&config(nginx.port), &[]);
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?q=1&r=2", 200, nginx::OK_LEN),
        Req::get(MISSING_PATH, 404, MEASURED),
        Req::get(FAIL_PATH, 500, 5),
    ];
    let base = nginx.url("");
    let (runs, reqs) = prior_knowledge(&base, &reqs, &dir);
    let curl_pids: Vec<u32> = runs.iter().map(|r| r.pid).collect();
    let workers = nginx.worker_pids().to_vec();
    let (server, client) = collect_server_and_curl(agent, &workers, &curl_pids, reqs.len());
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &nginx.service(),
        pids: &workers,
        port: nginx.port,
        version: "2",
    };
    check_server_and_curl(
        (&server, &client),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &curl_pids),
    );
    for ((s, c), run) in server.iter().zip(&client).zip(&runs) {
        assert_eq!(c.pid, run.pid, "client span of the wrong curl: {c}");
        let window = (run.start_unix_nano, run.end_unix_nano);
        check_timing(s, window, Some(&run.results[0]));
        check_timing(c, window, Some(&run.results[0]));
    }
}

/// hypercorn (h11 + h2) with curl `--http2-prior-knowledge`: 200, 404, 500 and a POST of 1000
/// bytes, exactly 4 server and 4 client spans with version `2`.
#[test]
fn hypercorn_h2c_prior_knowledge() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let server = PythonServer::h2c();
    body_file(&dir, 1000);
    let agent = Agent::start(&config(server.port), &[]);
    let reqs = [
        Req::get(OK_PATH, 200, 3),
        Req::get(MISSING_PATH, 404, 8),
        Req::get(FAIL_PATH, 500, 5),
        Req::post(UPLOAD_PATH, 1000, 200, 7),
    ];
    let base = server.url("");
    let (runs, reqs) = prior_knowledge(&base, &reqs, &dir);
    let curl_pids: Vec<u32> = runs.iter().map(|r| r.pid).collect();
    let pids = [server.pid()];
    let (s, c) = collect_server_and_curl(agent, &pids, &curl_pids, reqs.len());
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &server.service(),
        pids: &pids,
        port: server.port,
        version: "2",
    };
    check_server_and_curl(
        (&s, &c),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &curl_pids),
    );
}

/// hypercorn with curl `--http2` on cleartext: the first request goes out as HTTP/1.1 with
/// `Upgrade: h2c`, its response comes on HTTP/2 stream 1 after `101 Switching Protocols`, and
/// the next two requests reuse the HTTP/2 connection. Exactly 3 server and 3 client spans,
/// all version `2` (the 101 makes no span of its own). (No timing check against curl: hypercorn
/// may end a stream with an empty DATA frame after curl already has every byte the
/// `content-length` announced and has closed, so the server's span rightly outlasts curl's
/// transfer.)
#[test]
fn hypercorn_h2c_upgrade() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let server = PythonServer::h2c();
    let agent = Agent::start(&config(server.port), &[]);
    let reqs = [
        Req::get(OK_PATH, 200, 3),
        Req::get(MISSING_PATH, 404, 8),
        Req::post(UPLOAD_PATH, 1000, 200, 7),
    ];
    let base = server.url("");
    let (run, reqs) = curl_reqs(&base, &reqs, &dir, |t: Transfer| t.args(["--http2"]));
    assert_eq!(run.connections(), 1, "curl did not reuse the connection");
    for r in &run.results {
        assert_eq!(r.http_version, "2", "curl did not upgrade to HTTP/2: {r:?}");
    }
    let pids = [server.pid()];
    let curl_pids = [run.pid];
    let (s, c) = collect_server_and_curl(agent, &pids, &curl_pids, reqs.len());
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &server.service(),
        pids: &pids,
        port: server.port,
        version: "2",
    };
    check_server_and_curl(
        (&s, &c),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &curl_pids),
    );
}
