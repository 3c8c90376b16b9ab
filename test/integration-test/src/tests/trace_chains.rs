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

use std::{collections::HashMap, fmt::Write as _, path::Path};

use super::{SPAN_WAIT, assert_count, curl_spans};
use crate::{
    agent::Agent,
    peers::{
        curl::{CurlRun, Transfer, curl},
        nginx::{Nginx, NginxOptions, PROXY_PATH},
        python::{CHAIN_BACKEND_BODY, CHAIN_FRONT_BODY, GRPC_CHAIN_METHOD, PythonServer},
    },
    span::{self, Span},
    util::{self, TempDir},
};

/// One hop of a chain: the spans of `kind` printed for `pids`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop<'a> {
    /// For messages: `curl client`, `frontend server`, ...
    pub name: &'a str,
    /// `client` or `server`.
    pub kind: &'a str,
    /// The processes whose spans these are.
    pub pids: &'a [u32],
}

impl Hop<'_> {
    fn holds(&self, s: &Span) -> bool {
        s.kind == self.kind && self.pids.contains(&s.pid)
    }
}

/// What the first span of every chain hangs from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Root<'a> {
    /// Nothing: it is the root of a new trace, one trace per request.
    New,
    /// The caller's span named by an incoming header.
    Remote {
        /// The header's trace id.
        trace_id: &'a str,
        /// The header's span id.
        parent_span_id: &'a str,
    },
}

/// The spans of one request, one per hop, in hop order.
pub(crate) type Chain = Vec<Span>;

/// The query string of a span: `url.query` of a server span, the part of `url.full` after `?`
/// of a client span.
pub(crate) fn query_of(s: &Span) -> Option<&str> {
    if s.kind == "server" {
        s.attr("url.query").and_then(|v| v.as_str())
    } else {
        s.attr("url.full")
            .and_then(|v| v.as_str())
            .and_then(|u| u.split_once('?'))
            .map(|(_, q)| q)
    }
}

/// Sorts `spans` into one chain per query of `queries` (each request's unique query string,
/// passed on unchanged by every hop), asserting that every hop printed exactly one span per
/// query and that no other span of these hops was printed.
pub(crate) fn chains_by_query(spans: &[Span], hops: &[Hop<'_>], queries: &[String]) -> Vec<Chain> {
    let mut unplaced: Vec<&Span> = spans
        .iter()
        .filter(|s| hops.iter().any(|h| h.holds(s)))
        .collect();
    let chains = queries
        .iter()
        .map(|q| {
            hops.iter()
                .map(|hop| {
                    let found: Vec<&Span> = spans
                        .iter()
                        .filter(|s| hop.holds(s) && query_of(s) == Some(q.as_str()))
                        .collect();
                    assert_eq!(
                        found.len(),
                        1,
                        "expected one {} span for query {q:?}, got {}:\nall spans:\n{}",
                        hop.name,
                        found.len(),
                        span::show(spans)
                    );
                    unplaced.retain(|s| s.span_id != found[0].span_id);
                    found[0].clone()
                })
                .collect()
        })
        .collect();
    assert!(
        unplaced.is_empty(),
        "spans that belong to no request of the test:\n{}",
        span::show(&unplaced.into_iter().cloned().collect::<Vec<_>>())
    );
    chains
}

/// Sorts `spans` into `n` chains by start order, for requests sent strictly one after another
/// whose spans carry nothing unique (gRPC: one method, no query). Asserts each hop printed
/// exactly `n` spans.
pub(crate) fn chains_by_order(spans: &[Span], hops: &[Hop<'_>], n: usize) -> Vec<Chain> {
    let per_hop: Vec<Vec<Span>> = hops
        .iter()
        .map(|hop| {
            let mut of_hop: Vec<Span> = spans.iter().filter(|s| hop.holds(s)).cloned().collect();
            of_hop.sort_by_key(|s| s.start_unix_nano);
            assert_count(&of_hop, n, hop.name);
            of_hop
        })
        .collect();
    (0..n)
        .map(|i| per_hop.iter().map(|spans| spans[i].clone()).collect())
        .collect()
}

/// How the links into one hop turned out over all chains.
#[derive(Debug, Default)]
pub(crate) struct LinkTally {
    /// Parent is exactly the previous hop's span, same trace.
    pub exact: usize,
    /// No parent: the span started a trace of its own.
    pub missing: usize,
    /// Another parent (or the right parent id in another trace): `(child, parent id)`.
    pub wrong: Vec<(Span, String)>,
}

/// The outcome of a scenario: per-link tallies and complete chains.
#[derive(Debug)]
pub(crate) struct ChainReport {
    /// Scenario name.
    pub label: String,
    /// Requests sent.
    pub requests: usize,
    /// Chains whose every link is exact and whose root is as expected.
    pub complete: usize,
    /// First span parented as [`Root`] says.
    pub roots_ok: usize,
    /// `links[i]` tallies the link from hop `i` to hop `i + 1`.
    pub links: Vec<LinkTally>,
    /// Every chain, for messages.
    pub chains: Vec<Chain>,
    hop_names: Vec<String>,
    root: RootSpec,
}

impl ChainReport {
    /// Complete chains in percent.
    #[expect(clippy::cast_precision_loss, reason = "request counts are tiny")]
    pub(crate) fn percent_complete(&self) -> f64 {
        100.0 * self.complete as f64 / self.requests.max(1) as f64
    }

    /// One line: complete chains and each link's tally.
    pub(crate) fn summary(&self) -> String {
        let mut line = format!(
            "trace chains [{}]: {}/{} complete ({:.1}%); roots as expected {}/{}",
            self.label,
            self.complete,
            self.requests,
            self.percent_complete(),
            self.roots_ok,
            self.requests
        );
        for (i, l) in self.links.iter().enumerate() {
            let _ = write!(
                line,
                "; {} -> {}: {} exact, {} missing, {} wrong",
                self.hop_names[i],
                self.hop_names[i + 1],
                l.exact,
                l.missing,
                l.wrong.len()
            );
        }
        line
    }

    /// Panics, showing the broken chains, unless every chain is complete.
    pub(crate) fn assert_all_complete(&self) {
        if self.complete == self.requests {
            return;
        }
        panic!("{}\nbroken chains:\n{}", self.summary(), self.show_broken());
    }

    fn show_broken(&self) -> String {
        self.chains
            .iter()
            .filter(|c| !chain_complete(c, &self.root))
            .map(|c| span::show(c))
            .collect::<Vec<_>>()
            .join("\n--\n")
    }
}

/// How the first span must hang: kept on the report for [`ChainReport::show_broken`].
type RootSpec = Option<(String, String)>;

fn root_ok(first: &Span, root: &RootSpec) -> bool {
    match root {
        None => first.parent_span_id.is_empty(),
        Some((trace, parent)) => first.trace_id == *trace && first.parent_span_id == *parent,
    }
}

fn chain_complete(chain: &Chain, root: &RootSpec) -> bool {
    root_ok(&chain[0], root) && chain.windows(2).all(|w| w[1].is_child_of(&w[0]))
}

/// Checks every link of every chain; prints the summary on stderr (shown with
/// `--nocapture` and in failure output).
pub(crate) fn analyse(
    label: &str,
    chains: Vec<Chain>,
    hops: &[Hop<'_>],
    root: Root<'_>,
) -> ChainReport {
    let root: RootSpec = match root {
        Root::New => None,
        Root::Remote {
            trace_id,
            parent_span_id,
        } => Some((trace_id.to_owned(), parent_span_id.to_owned())),
    };
    let mut links: Vec<LinkTally> = (1..hops.len()).map(|_| LinkTally::default()).collect();
    let mut complete = 0;
    let mut roots_ok = 0;
    for chain in &chains {
        roots_ok += usize::from(root_ok(&chain[0], &root));
        complete += usize::from(chain_complete(chain, &root));
        for (i, w) in chain.windows(2).enumerate() {
            let (parent, child) = (&w[0], &w[1]);
            if child.is_child_of(parent) {
                links[i].exact += 1;
            } else if child.parent_span_id.is_empty() {
                links[i].missing += 1;
            } else {
                links[i]
                    .wrong
                    .push((child.clone(), child.parent_span_id.clone()));
            }
        }
    }
    if root.is_none() {
        // One trace per request: no two chains share a trace.
        let mut traces: Vec<&str> = chains.iter().map(|c| c[0].trace_id.as_str()).collect();
        traces.sort_unstable();
        traces.dedup();
        assert_eq!(
            traces.len(),
            chains.len(),
            "[{label}] requests share a trace:\n{}",
            chains
                .iter()
                .map(|c| span::show(c))
                .collect::<Vec<_>>()
                .join("\n--\n")
        );
    }
    let report = ChainReport {
        label: label.to_owned(),
        requests: chains.len(),
        complete,
        roots_ok,
        links,
        chains,
        hop_names: hops.iter().map(|h| h.name.to_owned()).collect(),
        root,
    };
    eprintln!("{}", report.summary());
    report
}

/// Asserts that every wrong parent of link `link` (into hop `link + 1`) is a span of hop
/// `link` that was being served when the child started (the event-loop heuristic picked
/// another request in flight on that thread), and that no link is missing.
pub(crate) fn assert_wrong_parents_were_in_flight(report: &ChainReport, link: usize) {
    let tally = &report.links[link];
    assert_eq!(
        tally.missing,
        0,
        "{}\ncalls made while serving got no parent at all",
        report.summary()
    );
    let parents: HashMap<&str, &Span> = report
        .chains
        .iter()
        .map(|c| (c[link].span_id.as_str(), &c[link]))
        .collect();
    for (child, parent_id) in &tally.wrong {
        let Some(parent) = parents.get(parent_id.as_str()) else {
            panic!(
                "{}\nparent {parent_id} of this span is no {} span of the test:\n{child}",
                report.summary(),
                report.hop_names[link]
            );
        };
        assert!(
            parent.start_unix_nano <= child.start_unix_nano
                && child.start_unix_nano <= parent.end_unix_nano,
            "{}\nthe wrong parent was not in flight when the call started:\nparent {parent}\nchild {child}",
            report.summary()
        );
        assert_eq!(
            parent.trace_id,
            child.trace_id,
            "{}\na child outside its parent's trace:\nparent {parent}\nchild {child}",
            report.summary()
        );
    }
}

/// Asserts that link `link` is exact in every chain (a same-node link does not depend on
/// timing: it is matched on the connection).
pub(crate) fn assert_link_exact(report: &ChainReport, link: usize) {
    let tally = &report.links[link];
    assert_eq!(
        tally.exact,
        report.requests,
        "{}\nnot exact into {}:\n{}",
        report.summary(),
        report.hop_names[link + 1],
        tally
            .wrong
            .iter()
            .map(|(s, _)| s.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

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
/// the call starts a trace of its own. The test asserts that, so that a change in either
/// direction is noticed.
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
    assert_link_exact(&report, 0);
    assert_link_exact(&report, 2);
}
