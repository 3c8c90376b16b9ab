//! Trace context across chains of real services: curl calls a frontend, which calls a backend
//! while serving; every process is instrumented, none sends a trace header. For every request
//! of a known mix the test asserts the exact parent of each span:
//!
//! ```text
//! curl CLIENT ─same-node link─▶ frontend SERVER ─thread─▶ frontend CLIENT ─same-node link─▶ backend SERVER
//! ```
//!
//! all in one trace, and reports the share of complete chains. Each request carries a unique
//! query (`req=N`) that every hop passes on, so the test knows which spans belong together
//! without looking at the ids it checks.
//!
//! The thread link is exact for thread-per-request servers (Python's `ThreadingHTTPServer`);
//! for event loops (nginx, aiohttp) it is "the most recent request still being served on the
//! thread", exact when requests do not overlap and a heuristic when they do: there the tests
//! measure the share and assert that every wrong parent is at least a request that was being
//! served on that process when the call started, never anything else.

mod report;

use std::path::Path;

pub(crate) use self::report::{
    ChainReport, Hop, Root, analyse, assert_link_exact, assert_wrong_parents_were_in_flight,
    chains_by_order, chains_by_query, query_of,
};
use super::{SPAN_WAIT, assert_count, curl_spans};
use crate::{
    agent::Agent,
    peers::{
        curl::{CurlRun, Transfer, curl},
        nginx::{Nginx, NginxOptions, PROXY_PATH},
        python::{CHAIN_BACKEND_BODY, CHAIN_FRONT_BODY, GRPC_CHAIN_METHOD, PythonServer},
    },
    util::{self, TempDir},
};

/// Runs one curl invocation per entry of `batches`, all at once (each invocation's transfers
/// in order on one keep-alive connection); returns the runs in the order of `batches`.
pub(crate) fn curl_concurrently(batches: &[Vec<Transfer>]) -> Vec<CurlRun> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = batches
            .iter()
            .map(|batch| scope.spawn(|| curl(batch)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The query of request `n` of a scenario (`req=N`, plus the backend's delay when not 0).
pub(crate) fn query(n: usize, delay_ms: u32) -> String {
    if delay_ms == 0 {
        format!("req={n}")
    } else {
        format!("req={n}&delay_ms={delay_ms}")
    }
}

/// Asserts that every transfer of `runs` got 200 and `body`.
pub(crate) fn assert_answered(runs: &[CurlRun], body: &str) {
    for run in runs {
        for r in &run.results {
            assert_eq!(
                (r.http_code, r.size_download),
                (200, i64::try_from(body.len()).expect("short body")),
                "the chain did not answer as the test assumes: {r:?}"
            );
        }
    }
}

/// The config of a chain test: the servers on `ports` and every curl.
pub(crate) fn chain_config(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
    format!(
        "{}    - exe_path: \"*/curl\"\n",
        super::ports_config(&ports.join(","))
    )
}

/// The load of a scenario: `sequential` requests one after another on one connection, then
/// `clients` curls at once with `per_client` requests each, the backend holding each request
/// `delay_ms` so that concurrent ones overlap.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub sequential: usize,
    pub clients: usize,
    pub per_client: usize,
    pub delay_ms: u32,
}

impl Load {
    const fn sequential(n: usize) -> Self {
        Self {
            sequential: n,
            clients: 0,
            per_client: 0,
            delay_ms: 0,
        }
    }

    const fn concurrent(clients: usize, per_client: usize, delay_ms: u32) -> Self {
        Self {
            sequential: 0,
            clients,
            per_client,
            delay_ms,
        }
    }

    fn requests(&self) -> usize {
        self.sequential + self.clients * self.per_client
    }

    fn describe(&self) -> String {
        match (self.sequential, self.clients) {
            (s, 0) => format!("{s} sequential"),
            (0, c) => format!(
                "{c} concurrent clients x {} requests, backend {} ms",
                self.per_client, self.delay_ms
            ),
            (s, c) => format!(
                "{s} sequential + {c} concurrent clients x {} requests, backend {} ms",
                self.per_client, self.delay_ms
            ),
        }
    }

    /// Sends the load to `url_of(query)`; returns the curl runs and every query sent.
    fn send(&self, url_of: &dyn Fn(&str) -> String) -> (Vec<CurlRun>, Vec<String>) {
        let mut queries = Vec::new();
        let mut runs = Vec::new();
        if self.sequential > 0 {
            let transfers: Vec<Transfer> = (0..self.sequential)
                .map(|n| {
                    let q = query(n, 0);
                    let t = Transfer::get(url_of(&q));
                    queries.push(q);
                    t
                })
                .collect();
            runs.push(curl(&transfers));
        }
        let batches: Vec<Vec<Transfer>> = (0..self.clients)
            .map(|c| {
                (0..self.per_client)
                    .map(|i| {
                        let q = query(self.sequential + c * self.per_client + i, self.delay_ms);
                        let t = Transfer::get(url_of(&q));
                        queries.push(q);
                        t
                    })
                    .collect()
            })
            .collect();
        if !batches.is_empty() {
            runs.extend(curl_concurrently(&batches));
        }
        (runs, queries)
    }
}

/// `OTEL_SERVICE_NAME` of the frontend and backend services.
pub(crate) const FRONTEND: &str = "frontend";
pub(crate) const BACKEND: &str = "backend";

const CURL: &str = "curl client";
const FRONT_SERVER: &str = "frontend server";
const FRONT_CLIENT: &str = "frontend client";
const BACK_SERVER: &str = "backend server";

/// Runs `load` through `frontend` (whose `/work` reaches the backend `back_pid`) with the
/// agent on, and returns the report of the four-hop chains.
fn run_http_chain(
    label: &str,
    agent: Agent,
    front_pids: &[u32],
    back_pid: u32,
    front_url: &dyn Fn(&str) -> String,
    body: &str,
    load: Load,
) -> ChainReport {
    let (runs, queries) = load.send(front_url);
    assert_answered(&runs, body);
    let curl_pids: Vec<u32> = runs.iter().map(|r| r.pid).collect();
    let back_pids = [back_pid];
    let mut pids = curl_pids.clone();
    pids.extend_from_slice(front_pids);
    pids.push(back_pid);
    let expected = 4 * load.requests();
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= expected
    });
    let curl_service = util::which_name("curl");
    let spans = curl_spans(agent.stop(), &pids, &curl_service);
    assert_count(&spans, expected, "4 spans per request");
    let hops = [
        Hop {
            name: CURL,
            kind: "client",
            pids: &curl_pids,
        },
        Hop {
            name: FRONT_SERVER,
            kind: "server",
            pids: front_pids,
        },
        Hop {
            name: FRONT_CLIENT,
            kind: "client",
            pids: front_pids,
        },
        Hop {
            name: BACK_SERVER,
            kind: "server",
            pids: &back_pids,
        },
    ];
    let chains = chains_by_query(&spans, &hops, &queries);
    analyse(
        &format!("{label}, {}", load.describe()),
        chains,
        &hops,
        Root::New,
    )
}

/// Python frontend (`ThreadingHTTPServer`) calling a Python backend from the serving thread.
fn python_threaded(load: Load) -> ChainReport {
    let backend = PythonServer::chain_http(None, BACKEND);
    let frontend = PythonServer::chain_http(Some(&backend.url("")), FRONTEND);
    let agent = Agent::start(&chain_config(&[frontend.port, backend.port]), &[]);
    run_http_chain(
        "python threaded -> python",
        agent,
        &[frontend.pid()],
        backend.pid(),
        &|q| frontend.url(&format!("/work?{q}")),
        CHAIN_FRONT_BODY,
        load,
    )
}

/// nginx (one worker, `proxy_pass`) in front of a Python backend.
fn nginx_proxy(load: Load) -> ChainReport {
    let backend = PythonServer::chain_http(None, BACKEND);
    let nginx = Nginx::start_with(NginxOptions {
        proxy_to: Some(backend.port),
        ..NginxOptions::default()
    });
    let agent = Agent::start(&chain_config(&[nginx.port, backend.port]), &[]);
    let workers = nginx.worker_pids().to_vec();
    run_http_chain(
        "nginx proxy_pass -> python",
        agent,
        &workers,
        backend.pid(),
        &|q| nginx.url(&format!("{PROXY_PATH}?{q}")),
        CHAIN_BACKEND_BODY,
        load,
    )
}

/// aiohttp server whose handler calls the Python backend with aiohttp's client.
fn aiohttp(load: Load) -> ChainReport {
    let backend = PythonServer::chain_http(None, BACKEND);
    let frontend = PythonServer::chain_aiohttp(&backend.url(""), FRONTEND);
    let agent = Agent::start(&chain_config(&[frontend.port, backend.port]), &[]);
    run_http_chain(
        "aiohttp -> python",
        agent,
        &[frontend.pid()],
        backend.pid(),
        &|q| frontend.url(&format!("/work?{q}")),
        CHAIN_FRONT_BODY,
        load,
    )
}

/// Thread-per-request Python: 10 requests one after another on one connection, then 5 curls
/// at once with 2 requests each against a backend that takes 50 ms, so that the frontend
/// serves several requests at the same time on different threads. Every chain is complete.
#[test]
fn python_threaded_chain_is_complete() {
    let _serial = util::serial();
    let report = python_threaded(Load {
        sequential: 10,
        clients: 5,
        per_client: 2,
        delay_ms: 50,
    });
    report.assert_all_complete();
}

/// nginx `proxy_pass` with requests one after another: the upstream call is a child of the
/// request nginx is serving, every chain complete.
#[test]
fn nginx_proxy_pass_sequential_chain_is_complete() {
    let _serial = util::serial();
    nginx_proxy(Load::sequential(20)).assert_all_complete();
}

/// nginx `proxy_pass` with 8 clients at once (one worker, so up to 8 requests in flight on its
/// one thread): the same-node links stay exact; the upstream call's parent is a heuristic
/// (the most recent request being served on the thread), so some calls may hang under another
/// request in flight, never under anything else. The share of complete chains is reported.
#[test]
fn nginx_proxy_pass_concurrent_chain_links_honestly() {
    let _serial = util::serial();
    let report = nginx_proxy(Load::concurrent(8, 4, 30));
    assert_eq!(report.roots_ok, report.requests, "{}", report.summary());
    assert_link_exact(&report, 0);
    assert_link_exact(&report, 2);
    assert_wrong_parents_were_in_flight(&report, 1);
}

/// aiohttp with requests one after another: every chain complete.
#[test]
fn aiohttp_sequential_chain_is_complete() {
    let _serial = util::serial();
    aiohttp(Load::sequential(20)).assert_all_complete();
}

/// aiohttp with 8 clients at once on its one event loop: as for nginx, exact same-node links,
/// honest heuristic parents, share reported.
#[test]
fn aiohttp_concurrent_chain_links_honestly() {
    let _serial = util::serial();
    let report = aiohttp(Load::concurrent(8, 4, 30));
    assert_eq!(report.roots_ok, report.requests, "{}", report.summary());
    assert_link_exact(&report, 0);
    assert_link_exact(&report, 2);
    assert_wrong_parents_were_in_flight(&report, 1);
}

/// The gRPC message curl sends: the 5-byte gRPC prefix (not compressed, length) and `payload`.
fn grpc_message(dir: &TempDir, payload: &[u8]) -> std::path::PathBuf {
    let mut msg = vec![0_u8];
    msg.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    msg.extend_from_slice(payload);
    dir.write("grpc-message", msg)
}

/// grpcio calling grpcio: curl sends unary calls (HTTP/2, one after another) to a grpcio
/// frontend whose handler calls a grpcio backend. The same-node links (curl to frontend,
/// frontend's call to backend) are exact per HTTP/2 stream. The frontend's call to the
/// backend is written by another thread than the one that read the served call (grpcio reads
/// on its polling thread and runs handlers on a thread pool), so the thread link is not made:
/// the call usually starts a trace of its own (a known gap: the chain breaks in two traces,
/// curl -> frontend server and frontend client -> backend server). Which thread grpcio's core
/// uses varies, so now and then the call is made on the reading thread and links exactly (0
/// or 1 of 10 in our runs); the test asserts that this link is never wrong (exact or absent)
/// and reports the share.
#[test]
fn grpcio_chain_links_same_node_hops() {
    let _serial = util::serial();
    let backend = PythonServer::chain_grpc(None, BACKEND);
    let frontend = PythonServer::chain_grpc(Some(&format!("127.0.0.1:{}", backend.port)), FRONTEND);
    let agent = Agent::start(&chain_config(&[frontend.port, backend.port]), &[]);
    let dir = TempDir::new("grpc-chain");
    let message = grpc_message(&dir, b"hello");
    let n = 10;
    let url = frontend.url(GRPC_CHAIN_METHOD);
    let runs: Vec<CurlRun> = (0..n)
        .map(|_| curl(&[Transfer::grpc(url.clone(), Path::new(&message))]))
        .collect();
    for run in &runs {
        // 5-byte prefix + "front+backend:hello".
        assert_eq!(
            (run.results[0].http_code, run.results[0].size_download),
            (200, 24),
            "the gRPC chain did not answer as the test assumes"
        );
    }
    let curl_pids: Vec<u32> = runs.iter().map(|r| r.pid).collect();
    let front_pids = [frontend.pid()];
    let back_pids = [backend.pid()];
    let mut pids = curl_pids.clone();
    pids.extend([frontend.pid(), backend.pid()]);
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= 4 * n
    });
    let curl_service = util::which_name("curl");
    let spans = curl_spans(agent.stop(), &pids, &curl_service);
    assert_count(&spans, 4 * n, "4 spans per call");
    for s in &spans {
        assert_eq!(
            s.name, "mop.test.Chain/Call",
            "a gRPC span is named Service/Method: {s}"
        );
    }
    let hops = [
        Hop {
            name: CURL,
            kind: "client",
            pids: &curl_pids,
        },
        Hop {
            name: FRONT_SERVER,
            kind: "server",
            pids: &front_pids,
        },
        Hop {
            name: FRONT_CLIENT,
            kind: "client",
            pids: &front_pids,
        },
        Hop {
            name: BACK_SERVER,
            kind: "server",
            pids: &back_pids,
        },
    ];
    let chains = chains_by_order(&spans, &hops, n);
    let report = analyse(
        &format!("grpcio -> grpcio, {n} sequential"),
        chains,
        &hops,
        Root::New,
    );
    assert_eq!(report.roots_ok, n, "{}", report.summary());
    assert_link_exact(&report, 0);
    assert_link_exact(&report, 2);
    // The gap: usually no thread link from the served call to the handler's outgoing call;
    // when there is one, it is the right one.
    assert!(report.links[1].wrong.is_empty(), "{}", report.summary());
}
