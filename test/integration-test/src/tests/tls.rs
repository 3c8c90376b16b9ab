//! TLS through OpenSSL's library (uprobes on `SSL_read`/`SSL_write` of each libssl file, or of an
//! executable that links OpenSSL statically with its symbols): nginx with `ssl` (its libssl),
//! Python's `ssl` `http.server`, curl over https, gRPC with TLS credentials, a process that loads
//! libssl after the agent started, and `mop_tls_libraries_attached`.
//!
//! Each test makes its own CA and server certificate. Exact counts prove that no span is ever
//! made from the ciphertext that the same connections carry on their sockets.

use std::{collections::HashSet, os::unix::fs::MetadataExt as _, process::Command, time::Duration};

use super::{
    MEASURED, Peer, Req, assert_count, body_file, check_server_and_curl, check_server_span,
    check_timing, collect_server_and_curl, curl_reqs, ports_config,
};
use crate::{
    agent::Agent,
    metrics,
    peers::{
        curl::Transfer,
        grpc::{GrpcClient, GrpcServer, code},
        nginx::{
            self, FAIL_PATH, MISSING_PATH, Nginx, NginxOptions, OK_PATH, SMALL_PATH, SMALL_SIZE,
            UPLOAD_PATH,
        },
        python::PythonServer,
        tls::Certs,
    },
    span::{self, Span},
    util::{self, TempDir},
};

/// curl options that make it trust the test CA.
fn trust(certs: &Certs) -> impl Fn(Transfer) -> Transfer + '_ {
    move |t: Transfer| t.args(["--cacert".to_owned(), certs.ca().display().to_string()])
}

/// The distinct TLS library files (by device and inode) that `pids` map: `libssl.so*`, and an
/// executable that exports `SSL_read` (OpenSSL linked statically with its symbols).
fn tls_files(pids: &[u32]) -> HashSet<(u64, u64)> {
    let mut files = HashSet::new();
    for &pid in pids {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            let name = path.rsplit('/').next().unwrap_or(path);
            let is_exe = exe.as_deref().is_some_and(|e| e.as_os_str() == path);
            if (name.starts_with("libssl.so") || (is_exe && exports_ssl_read(path)))
                && let Ok(meta) = std::fs::metadata(path)
            {
                files.insert((meta.dev(), meta.ino()));
            }
        }
    }
    files
}

/// True when the ELF file at `path` exports `SSL_read` in its dynamic symbol table (`nm -D`).
fn exports_ssl_read(path: &str) -> bool {
    let out = Command::new(util::which("nm"))
        .args(["-D", "--defined-only", path])
        .output()
        .unwrap_or_else(|e| panic!("running nm -D {path}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("SSL_read"))
}

/// The agent's `mop_tls_libraries_attached` now.
fn tls_libraries(metrics_port: u16) -> usize {
    let value = metrics::scrape(metrics_port).expect("mop_tls_libraries_attached", &[]);
    assert!(
        value >= 0.0 && value.fract() == 0.0,
        "mop_tls_libraries_attached is {value}"
    );
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a small non-negative integer, checked above"
    )]
    let n = value as usize;
    n
}

/// Waits (bounded) until the agent's `mop_tls_libraries_attached` is `want`; returns the last
/// value seen.
fn wait_tls_libraries(metrics_port: u16, want: usize, timeout: Duration) -> usize {
    let mut last = usize::MAX;
    util::wait_until(timeout, || {
        last = tls_libraries(metrics_port);
        last == want
    });
    last
}

/// A config selecting `ports` and every curl, with the Prometheus endpoint.
fn config_with_curl(ports: &str) -> (String, u16) {
    let (prometheus, port) = metrics::config_block();
    (
        format!(
            "{prometheus}{}    - exe_path: \"*/curl\"\n",
            ports_config(ports)
        ),
        port,
    )
}

/// nginx `listen PORT ssl` (its libssl) and curl `--cacert` over one keep-alive TLS connection:
/// a static file, a query, a 404, a 500 and a POST of 1000 bytes. Exactly 5 server spans and 5
/// client spans (none from the ciphertext on the sockets), `url.scheme` https, `url.full`
/// `https://127.0.0.1:PORT/...`, exact statuses and sizes; `mop_tls_libraries_attached` is the
/// number of distinct libssl files the instrumented processes map (1: nginx and curl share
/// Debian's libssl.so.3).
#[test]
fn nginx_https_and_curl() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let certs = Certs::generate();
    let nginx = Nginx::start_with(NginxOptions {
        tls: Some(certs.clone()),
        ..NginxOptions::default()
    });
    let (config, metrics_port) = config_with_curl(&nginx.port.to_string());
    let agent = Agent::start(&config, &[]);
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?q=1", 200, nginx::OK_LEN),
        Req::get(MISSING_PATH, 404, MEASURED),
        Req::get(FAIL_PATH, 500, 5),
        Req::post(UPLOAD_PATH, 1000, 200, nginx::UPLOAD_LEN),
    ];
    let base = nginx.url("");
    assert!(base.starts_with("https://"), "{base}");
    let (run, reqs) = curl_reqs(&base, &reqs, &dir, trust(&certs));
    assert_eq!(run.connections(), 1, "curl did not keep the TLS connection");
    let mut instrumented = nginx.worker_pids().to_vec();
    instrumented.push(nginx.master_pid());
    let want_libraries = tls_files(&instrumented).len();
    assert_eq!(want_libraries, 1, "nginx maps one libssl");
    let libraries = wait_tls_libraries(metrics_port, want_libraries, Duration::from_secs(5));
    let workers = nginx.worker_pids().to_vec();
    let (server, client) = collect_server_and_curl(agent, &workers, &[run.pid], reqs.len());
    assert_eq!(
        libraries, want_libraries,
        "mop_tls_libraries_attached, while nginx maps {want_libraries} libssl file(s)"
    );
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &nginx.service(),
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    check_server_and_curl(
        (&server, &client),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &[run.pid]),
    );
    let window = (run.start_unix_nano, run.end_unix_nano);
    for (c, result) in client.iter().zip(&run.results) {
        check_timing(c, window, Some(result));
    }
}

/// 100 requests on ONE keep-alive TLS connection from curl to nginx: exactly 100 server and
/// 100 client spans, in order, every one https.
#[test]
fn curl_keepalive_many_requests_over_tls() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let certs = Certs::generate();
    let nginx = Nginx::start_with(NginxOptions {
        tls: Some(certs.clone()),
        ..NginxOptions::default()
    });
    let (config, _) = config_with_curl(&nginx.port.to_string());
    let agent = Agent::start(&config, &[]);
    let reqs: Vec<Req<'_>> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                Req::get(OK_PATH, 200, nginx::OK_LEN)
            } else {
                Req::get(SMALL_PATH, 200, SMALL_SIZE)
            }
        })
        .collect();
    let base = nginx.url("");
    let (run, reqs) = curl_reqs(&base, &reqs, &dir, trust(&certs));
    assert_eq!(run.connections(), 1, "curl did not keep the TLS connection");
    let workers = nginx.worker_pids().to_vec();
    let (server, client) = collect_server_and_curl(agent, &workers, &[run.pid], reqs.len());
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &nginx.service(),
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    check_server_and_curl(
        (&server, &client),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &[run.pid]),
    );
}

/// Python's `http.server` over `ssl` (libssl.so.3) with curl on one keep-alive connection:
/// 200, 404 and a POST of 2000 bytes. Exactly 3 server and 3 client spans, https.
#[test]
fn python_ssl_http_server() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let certs = Certs::generate();
    let py = PythonServer::https(&certs);
    let (config, _) = config_with_curl(&py.port.to_string());
    let agent = Agent::start(&config, &[]);
    body_file(&dir, 2000);
    let reqs = [
        Req::get(OK_PATH, 200, 3),
        Req::get(MISSING_PATH, 404, 10),
        Req::post(UPLOAD_PATH, 2000, 200, 3),
    ];
    let base = py.url("");
    let (run, reqs) = curl_reqs(&base, &reqs, &dir, trust(&certs));
    assert_eq!(
        run.connections(),
        1,
        "the server did not keep the connection"
    );
    let pids = [py.pid()];
    let (server, client) = collect_server_and_curl(agent, &pids, &[run.pid], reqs.len());
    let curl_service = util::which_name("curl");
    let server_peer = Peer {
        service: &py.service(),
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    check_server_and_curl(
        (&server, &client),
        &reqs,
        &base,
        &server_peer,
        &server_peer.client(&curl_service, &[run.pid]),
    );
}

/// A Python server that starts WITHOUT libssl (a plain listening socket; `ssl` not imported)
/// is instrumented with no TLS library; after the agent is ready it imports `ssl` (the loader
/// maps libssl.so.3 into the running process) and serves HTTPS on that socket. The agent's
/// re-check of instrumented processes' maps (every 2 discovery passes) attaches to it:
/// `mop_tls_libraries_attached` goes from 0 to 1 within a few seconds, and then 3 requests
/// give exactly 3 https server spans.
#[test]
fn libssl_loaded_after_the_agent_started() {
    let _serial = util::serial();
    let certs = Certs::generate();
    let mut py = PythonServer::https_late(&certs);
    let (prometheus, metrics_port) = metrics::config_block();
    let config = format!("{prometheus}{}", ports_config(&py.port.to_string()));
    let agent = Agent::start(&config, &[]);
    assert!(
        tls_files(&[py.pid()]).is_empty(),
        "the server mapped libssl before it was told to"
    );
    assert_eq!(
        tls_libraries(metrics_port),
        0,
        "no instrumented process maps libssl yet"
    );
    py.load_tls();
    assert_eq!(tls_files(&[py.pid()]).len(), 1, "libssl is mapped now");
    assert_eq!(
        wait_tls_libraries(metrics_port, 1, Duration::from_secs(10)),
        1,
        "mop_tls_libraries_attached 10 s after the process loaded libssl"
    );
    let dir = TempDir::new("bodies");
    let reqs = [
        Req::get(OK_PATH, 200, 3),
        Req::get(OK_PATH, 200, 3),
        Req::get(MISSING_PATH, 404, 10),
    ];
    let (_run, reqs) = curl_reqs(&py.url(""), &reqs, &dir, trust(&certs));
    let pids = [py.pid()];
    let spans = super::collect(agent, &pids, reqs.len());
    assert_count(
        &spans,
        reqs.len(),
        "https server spans after the late libssl",
    );
    let peer = Peer {
        service: &py.service(),
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    for (s, req) in spans.iter().zip(&reqs) {
        check_server_span(s, req, &peer);
        assert_eq!(s.str_attr("url.scheme"), "https", "{s}");
    }
}

/// `mop_tls_libraries_attached` counts distinct files, and drops when no instrumented process
/// uses one any more: nginx with ssl and Python's ssl server share Debian's libssl.so.3 (1);
/// a Node process (OpenSSL linked into /usr/bin/node with its symbols exported) adds its
/// executable (2); when Node exits, the count goes back to 1.
#[test]
fn tls_libraries_attached_counts_distinct_files() {
    let _serial = util::serial();
    let certs = Certs::generate();
    let nginx = Nginx::start_with(NginxOptions {
        tls: Some(certs.clone()),
        ..NginxOptions::default()
    });
    let py = PythonServer::https(&certs);
    let grpc = GrpcServer::start(None);
    let (prometheus, metrics_port) = metrics::config_block();
    let config = format!(
        "{prometheus}{}    - exe_path: \"*/node\"\n",
        ports_config(&format!("{},{}", nginx.port, py.port))
    );
    let agent = Agent::start(&config, &[]);
    let mut servers = nginx.worker_pids().to_vec();
    servers.extend([nginx.master_pid(), py.pid()]);
    assert_eq!(
        tls_files(&servers).len(),
        1,
        "nginx and Python share libssl.so.3"
    );
    assert_eq!(
        wait_tls_libraries(metrics_port, 1, Duration::from_secs(5)),
        1
    );
    let mut node = GrpcClient::node(grpc.port, None);
    node.expect("unary 1", 1, code::OK);
    let mut with_node = servers.clone();
    with_node.push(node.pid());
    assert_eq!(
        tls_files(&with_node).len(),
        2,
        "/usr/bin/node exports SSL_read (statically linked OpenSSL)"
    );
    assert_eq!(
        wait_tls_libraries(metrics_port, 2, Duration::from_secs(10)),
        2,
        "libssl.so.3 and /usr/bin/node"
    );
    node.quit();
    assert_eq!(
        wait_tls_libraries(metrics_port, 1, Duration::from_secs(10)),
        1,
        "node's probes are detached once it exits"
    );
    drop(agent);
}

/// gRPC with TLS credentials between grpcio peers: the calls succeed, but grpcio's TLS is
/// `BoringSSL` compiled into its extension module (`cygrpc*.so`) with no exported symbol, so
/// there is no `SSL_read` to probe, and the sockets carry only ciphertext. The honest outcome:
/// exactly zero spans from either process (none made from ciphertext), and the test checks the
/// reason (the module exports no `SSL_read`).
#[test]
fn grpcio_over_tls_is_not_seen() {
    let _serial = util::serial();
    let certs = Certs::generate();
    let server = GrpcServer::start(Some(&certs));
    let mut client = GrpcClient::python(server.port, Some(&certs));
    let client_port = client.select_port.expect("Python client");
    let agent = Agent::start(
        &ports_config(&format!("{},{client_port}", server.port)),
        &[],
    );
    client.expect("unary 3", 3, code::OK);
    client.expect("missing", 1, code::NOT_FOUND);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid())).expect("maps");
    let cygrpc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("cygrpc"))
        .expect("the server maps grpcio's cygrpc module");
    assert!(
        !exports_ssl_read(cygrpc),
        "{cygrpc} exports SSL_read now: mop could probe grpcio's BoringSSL, update this test"
    );
    std::thread::sleep(Duration::from_secs(1));
    let spans = agent.stop();
    let pids = [server.pid(), client.pid()];
    let ours: Vec<Span> = spans
        .into_iter()
        .filter(|s| pids.contains(&s.pid))
        .collect();
    assert!(
        ours.is_empty(),
        "spans from grpcio over TLS (ciphertext must never make spans):\n{}",
        span::show(&ours)
    );
}

/// A Node `@grpc/grpc-js` client over TLS against the grpcio TLS server. /usr/bin/node exports
/// `SSL_read`/`SSL_write` and the agent attaches to it, but Node drives OpenSSL through memory
/// BIOs: its `SSL_*` calls never touch a socket and it never calls `SSL_set_fd`, so the agent
/// cannot tie the plaintext to a connection and drops it. The honest outcome: the calls
/// succeed and exactly zero spans come from Node or the server.
#[test]
fn node_grpc_js_over_tls_is_not_seen() {
    let _serial = util::serial();
    let certs = Certs::generate();
    let server = GrpcServer::start(Some(&certs));
    let config = format!(
        "{}    - exe_path: \"*/node\"\n",
        ports_config(&server.port.to_string())
    );
    let agent = Agent::start(&config, &[]);
    let mut node = GrpcClient::node(server.port, Some(&certs));
    node.expect("unary 3", 3, code::OK);
    node.expect("broken", 1, code::INTERNAL);
    std::thread::sleep(Duration::from_secs(1));
    let spans = agent.stop();
    let pids = [server.pid(), node.pid()];
    let ours: Vec<Span> = spans
        .into_iter()
        .filter(|s| pids.contains(&s.pid))
        .collect();
    assert!(
        ours.is_empty(),
        "spans from gRPC over Node's TLS:\n{}",
        span::show(&ours)
    );
}
