//! The acceptance tests, one file per feature, and the checks they share.
//!
//! Every test takes [`util::serial`] first, starts its peers, then the agent, drives traffic,
//! stops the agent and asserts on the complete list of printed spans: exact counts and exact
//! values, so that each test fails when its feature is missing.

mod config;
mod discovery;
mod grpc;
mod harness;
mod http1_client;
mod http1_server;
mod http2;
mod lifecycle;
mod otlp;
mod tcp_context;
mod tls;
mod trace_chains;
mod trace_context;

use std::time::Duration;

use crate::{
    agent::Agent,
    peers::curl::{CurlRun, Transfer, TransferResult, curl},
    span::{self, Span},
    util::{self, TempDir},
};

/// Runs `reqs` as GETs/HEADs/POSTs in one curl invocation against `base`, checks curl saw what
/// the test expects, and returns the run.
pub(crate) fn curl_reqs<'a>(
    base: &str,
    reqs: &[Req<'a>],
    body_dir: &TempDir,
    tweak: impl Fn(Transfer) -> Transfer,
) -> (CurlRun, Vec<Req<'a>>) {
    let transfers: Vec<Transfer> = reqs
        .iter()
        .map(|r| {
            let url = format!("{base}{}", r.target);
            let t = match r.method {
                "GET" => Transfer::get(url),
                "HEAD" => Transfer::head(url),
                "POST" => Transfer::post(url, &body_file(body_dir, r.request_body)),
                other => panic!("no curl transfer for {other}"),
            };
            tweak(t)
        })
        .collect();
    let run = curl(&transfers);
    let reqs = check_curl(&run, reqs);
    (run, reqs)
}

/// Stops the agent once `n` spans of `pids` were printed (or [`SPAN_WAIT`] passed), asserts
/// that nothing else was instrumented and returns the spans in start order.
pub(crate) fn collect(agent: Agent, pids: &[u32], n: usize) -> Vec<Span> {
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= n
    });
    let spans = agent.stop();
    assert_only_from(&spans, pids);
    by_start(spans)
}

/// How long a test waits for its spans before stopping the agent (a bound, not a sleep).
pub(crate) const SPAN_WAIT: Duration = Duration::from_secs(10);

/// curl's `time_total` is printed in whole microseconds; this much slack absorbs the rounding.
const CURL_ROUNDING_NANOS: u64 = 1_000;

/// A config that instruments the processes listening on `ports` (`"8080"`, `"80,8000-8999"`)
/// and prints spans as JSON. No route is derived (`routes.unmatched: unset`), so span names are
/// `{method}` and `http.route` is absent; `route_patterns` and `default_heuristic_routes` test
/// routes. The selector list comes last, so a test can append entries to it.
pub(crate) fn ports_config(ports: &str) -> String {
    format!(
        "trace_printer: json\n\
         routes:\n  \
           unmatched: unset\n\
         discovery:\n  \
           instrument:\n    \
             - open_ports: \"{ports}\"\n"
    )
}

/// `config` with the Prometheus endpoint on a free port (the agent's self-metrics); returns
/// the config and the port.
pub(crate) fn with_metrics(config: &str) -> (String, u16) {
    let port = util::free_port();
    (
        format!("{config}prometheus_export:\n  port: {port}\n"),
        port,
    )
}

/// [`ports_config`] with `routes` as given (YAML lines under `routes:`, indented two spaces).
pub(crate) fn ports_config_with_routes(ports: &str, routes: &str) -> String {
    format!(
        "trace_printer: json\n\
         routes:\n{routes}\
         discovery:\n  \
           instrument:\n    \
             - open_ports: \"{ports}\"\n"
    )
}

/// A config that instruments every `curl` process and prints spans as JSON.
pub(crate) const CURL_CONFIG: &str = "trace_printer: json\n\
discovery:\n  \
  instrument:\n    \
    - exe_path: \"*/curl\"\n";

/// A `response_body` that the test takes from curl's measurement instead of a constant (error
/// pages whose size depends on the peer's version); it must still be non-zero.
pub(crate) const MEASURED: i64 = -1;

/// One HTTP request as the test sent it, and what must be measured for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Req<'a> {
    /// Request method.
    pub method: &'a str,
    /// Request target as sent (path and query).
    pub target: &'a str,
    /// Final status code.
    pub status: i64,
    /// Request body bytes.
    pub request_body: i64,
    /// Response body bytes (decoded; 0 for HEAD).
    pub response_body: i64,
}

impl<'a> Req<'a> {
    /// `GET target` answered with `status` and `response_body` bytes.
    pub(crate) const fn get(target: &'a str, status: i64, response_body: i64) -> Self {
        Self {
            method: "GET",
            target,
            status,
            request_body: 0,
            response_body,
        }
    }

    /// `POST target` with `request_body` bytes, answered with `status` and `response_body`.
    pub(crate) const fn post(
        target: &'a str,
        request_body: i64,
        status: i64,
        response_body: i64,
    ) -> Self {
        Self {
            method: "POST",
            target,
            status,
            request_body,
            response_body,
        }
    }

    /// `HEAD target` answered with `status` (no body).
    pub(crate) const fn head(target: &'a str, status: i64) -> Self {
        Self {
            method: "HEAD",
            target,
            status,
            request_body: 0,
            response_body: 0,
        }
    }

    fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Who served or sent the requests: what every span of theirs must carry.
pub(crate) struct Peer<'a> {
    /// The `service` (executable base name unless overridden).
    pub service: &'a str,
    /// The pids the spans may come from.
    pub pids: &'a [u32],
    /// The server's port (`server.port`).
    pub port: u16,
    /// `network.protocol.version` of the requests (`1.0` or `1.1`).
    pub version: &'a str,
}

impl<'a> Peer<'a> {
    /// The client of this server whose spans the test checks (curl, as `service`, from `pids`):
    /// same port and protocol version.
    pub(crate) fn client(&self, service: &'a str, pids: &'a [u32]) -> Self {
        Self {
            service,
            pids,
            ..*self
        }
    }
}

/// Stops the agent once the server (`server_pids`) and the curls (`curl_pids`) printed `n`
/// spans each; returns (server spans, client spans) in start order. Other curl processes on the
/// machine may be instrumented too; their spans are set aside.
pub(crate) fn collect_server_and_curl(
    agent: Agent,
    server_pids: &[u32],
    curl_pids: &[u32],
    n: usize,
) -> (Vec<Span>, Vec<Span>) {
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| server_pids.contains(&s.pid)).count() >= n
            && s.iter().filter(|s| curl_pids.contains(&s.pid)).count() >= n
    });
    let spans = agent.stop();
    let mut all_pids = server_pids.to_vec();
    all_pids.extend_from_slice(curl_pids);
    let ours = curl_spans(spans, &all_pids, &util::which_name("curl"));
    let (server, client): (Vec<Span>, Vec<Span>) =
        ours.into_iter().partition(|s| server_pids.contains(&s.pid));
    (by_start(server), by_start(client))
}

/// Asserts `server` and `client` spans against `reqs` sent to `base` (one span each per request,
/// in order, both with the scheme of `base`), and each server span a child of its client span.
pub(crate) fn check_server_and_curl(
    (server, client): (&[Span], &[Span]),
    reqs: &[Req<'_>],
    base: &str,
    server_peer: &Peer<'_>,
    client_peer: &Peer<'_>,
) {
    let (scheme, _) = base
        .split_once("://")
        .unwrap_or_else(|| panic!("{base} has no scheme"));
    assert_count(server, reqs.len(), "server spans");
    assert_count(client, reqs.len(), "client spans");
    for ((s, c), req) in server.iter().zip(client).zip(reqs) {
        check_server_span(s, req, server_peer);
        check_client_span(c, req, &format!("{base}{}", req.target), client_peer);
        assert_eq!(s.str_attr("url.scheme"), scheme, "url.scheme of {s}");
        assert_eq!(c.str_attr("url.scheme"), scheme, "url.scheme of {c}");
    }
    assert_server_children_of_clients(server, client);
}

/// Asserts that curl measured what the test expects for each transfer, so that a peer that
/// misbehaves is reported as such and not as an agent bug, and fills in [`MEASURED`] sizes.
pub(crate) fn check_curl<'a>(run: &CurlRun, reqs: &[Req<'a>]) -> Vec<Req<'a>> {
    let mut reqs = reqs.to_vec();
    for (result, req) in run.results.iter().zip(&mut reqs) {
        if req.response_body == MEASURED {
            assert!(result.size_download > 0, "empty error page for {req:?}");
            req.response_body = result.size_download;
        }
        assert_eq!(
            (result.http_code, result.size_download, result.size_upload),
            (req.status, req.response_body, req.request_body),
            "curl measured {result:?} for {req:?}: the peer did not behave as the test assumes"
        );
    }
    reqs
}

/// Asserts every contract field of a server span for `req`. (The JSON printer carries no span
/// status; `otlp.rs` checks statuses on the OTLP export.)
pub(crate) fn check_server_span(span: &Span, req: &Req<'_>, peer: &Peer<'_>) {
    assert_eq!(span.kind, "server", "kind of {span}");
    check_common(span, req, peer);
    assert_eq!(span.str_attr("url.path"), req.path(), "url.path of {span}");
    match req.query() {
        Some(query) => assert_eq!(span.str_attr("url.query"), query, "url.query of {span}"),
        None => assert!(
            !span.has_attr("url.query"),
            "url.query present without a query string: {span}"
        ),
    }
    assert_eq!(
        span.str_attr("client.address"),
        "127.0.0.1",
        "client.address of {span}"
    );
}

/// Asserts every contract field of a client span for `req` sent to `url`.
pub(crate) fn check_client_span(span: &Span, req: &Req<'_>, url: &str, peer: &Peer<'_>) {
    assert_eq!(span.kind, "client", "kind of {span}");
    check_common(span, req, peer);
    assert_eq!(span.str_attr("url.full"), url, "url.full of {span}");
}

fn check_common(span: &Span, req: &Req<'_>, peer: &Peer<'_>) {
    assert_eq!(
        span.name, req.method,
        "name of {span} (no route configured)"
    );
    assert_eq!(span.service, peer.service, "service of {span}");
    assert!(
        peer.pids.contains(&span.pid),
        "pid of {span} is not one of {:?}",
        peer.pids
    );
    assert_eq!(
        span.str_attr("http.request.method"),
        req.method,
        "http.request.method of {span}"
    );
    assert_eq!(
        span.int_attr("http.response.status_code"),
        req.status,
        "http.response.status_code of {span}"
    );
    assert_eq!(
        span.str_attr("server.address"),
        "127.0.0.1",
        "server.address of {span}"
    );
    assert_eq!(
        span.int_attr("server.port"),
        i64::from(peer.port),
        "server.port of {span}"
    );
    assert_eq!(
        span.str_attr("network.protocol.version"),
        peer.version,
        "network.protocol.version of {span}"
    );
    assert_eq!(
        span.int_attr("http.request.body.size"),
        req.request_body,
        "http.request.body.size of {span}"
    );
    assert_eq!(
        span.int_attr("http.response.body.size"),
        req.response_body,
        "http.response.body.size of {span}"
    );
    assert!(
        !span.has_attr("http.route"),
        "http.route present though no route is configured: {span}"
    );
}

/// Asserts that `span` lies inside the client's wall-clock window and lasts no longer than the
/// client measured for its transfer.
pub(crate) fn check_timing(span: &Span, window: (u64, u64), transfer: Option<&TransferResult>) {
    let (start, end) = window;
    assert!(
        span.start_unix_nano >= start && span.end_unix_nano <= end,
        "span [{}, {}] is outside the client's window [{start}, {end}]: {span}",
        span.start_unix_nano,
        span.end_unix_nano
    );
    if let Some(t) = transfer {
        assert!(
            span.duration_nanos() <= t.time_total_nanos + CURL_ROUNDING_NANOS,
            "span lasts {} ns, longer than the {} ns curl measured: {span}",
            span.duration_nanos(),
            t.time_total_nanos
        );
    }
}

/// Spans ordered by start, then end (stable: equal times keep the printed order).
pub(crate) fn by_start(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start_unix_nano, s.end_unix_nano));
    spans
}

/// Asserts that every span comes from one of `pids`: the config selects nothing else, so any
/// other span means the agent instrumented a process it should not have.
pub(crate) fn assert_only_from(spans: &[Span], pids: &[u32]) {
    let strays: Vec<Span> = spans
        .iter()
        .filter(|s| !pids.contains(&s.pid))
        .cloned()
        .collect();
    assert!(
        strays.is_empty(),
        "spans from processes the test did not select (expected pids {pids:?}):\n{}",
        span::show(&strays)
    );
}

/// The spans of `pids`; with an `exe_path: */curl` selector other curl processes on the machine
/// are legitimately instrumented too, so their spans are set aside, but any span from a
/// non-curl process fails the test.
pub(crate) fn curl_spans(spans: Vec<Span>, pids: &[u32], curl_service: &str) -> Vec<Span> {
    let (ours, others): (Vec<Span>, Vec<Span>) =
        spans.into_iter().partition(|s| pids.contains(&s.pid));
    let strays: Vec<Span> = others
        .into_iter()
        .filter(|s| s.service != curl_service || s.kind != "client")
        .collect();
    assert!(
        strays.is_empty(),
        "spans from processes the test did not select:\n{}",
        span::show(&strays)
    );
    ours
}

/// Asserts exactly `n` spans, showing them all when not.
pub(crate) fn assert_count(spans: &[Span], n: usize, what: &str) {
    assert_eq!(
        spans.len(),
        n,
        "expected {n} spans for {what}, got:\n{}",
        span::show(spans)
    );
}

/// Asserts that span ids are unique and every span is a root of its own trace (nothing in the
/// test sends trace context).
pub(crate) fn assert_independent_roots(spans: &[Span]) {
    let mut span_ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut trace_ids: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    span_ids.sort_unstable();
    span_ids.dedup();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    assert_eq!(
        span_ids.len(),
        spans.len(),
        "duplicate span ids:\n{}",
        span::show(spans)
    );
    assert_eq!(
        trace_ids.len(),
        spans.len(),
        "spans share a trace:\n{}",
        span::show(spans)
    );
    for s in spans {
        assert_eq!(s.parent_span_id, "", "unexpected parent: {s}");
    }
}

/// Both ends of each call instrumented on this node (`servers[i]` answered `clients[i]`): the
/// clients are unrelated roots (they sent no trace context), and each server span is either a
/// child of its client's span, in its trace, or the root of a trace of its own: same-node
/// pairing is not always made (README, "What mop cannot see"), but a server span never gets a
/// wrong parent or another call's trace.
pub(crate) fn assert_server_children_of_clients(servers: &[Span], clients: &[Span]) {
    assert_count(servers, clients.len(), "server spans, one per client span");
    assert_independent_roots(clients);
    for (server, client) in servers.iter().zip(clients) {
        let root = server.parent_span_id.is_empty()
            && clients.iter().all(|c| c.trace_id != server.trace_id);
        assert!(
            root || server.is_child_of(client),
            "server span is neither a root nor a child of its client span:\nclient {client}\nserver {server}"
        );
    }
    let mut traces: Vec<&str> = servers.iter().map(|s| s.trace_id.as_str()).collect();
    traces.sort_unstable();
    traces.dedup();
    assert_eq!(
        traces.len(),
        servers.len(),
        "server spans share a trace:\n{}",
        span::show(servers)
    );
}

/// The request line and headers of a raw HTTP/1.1 request with no body.
pub(crate) fn raw_get(method: &str, target: &str, port: u16) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mop-itest\r\n\r\n")
}

/// Pauses until a process started after the agent has been discovered (the contract: within
/// 2 s), with margin.
pub(crate) fn wait_for_discovery() {
    std::thread::sleep(Duration::from_millis(2500));
}

/// Body files of exact sizes in `dir`, named `body-<size>`.
pub(crate) fn body_file(dir: &TempDir, size: i64) -> std::path::PathBuf {
    dir.write(&format!("body-{size}"), util::pattern(size))
}
