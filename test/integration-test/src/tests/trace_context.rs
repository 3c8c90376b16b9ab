//! Trace context: an incoming `traceparent` (or B3) is honoured and roots the whole chain
//! behind it, a call between two instrumented processes on one node links the server span
//! under the client span without any header, and the sampler keeps or drops whole traces
//! while the metrics still count every request.

use super::{
    Peer, Req, SPAN_WAIT, assert_count, by_start, check_client_span, check_curl, check_server_span,
    collect, curl_spans, ports_config,
    trace_chains::{self, BACKEND, FRONTEND, Hop, Root},
};
use crate::{
    agent::Agent,
    metrics::Scrape,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH, SMALL_PATH, SMALL_SIZE},
        python::{CHAIN_FRONT_BODY, PythonServer},
    },
    span, util,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A request carrying `traceparent` gets a server span in that trace, child of the caller's
/// span; the next request on the same connection, without the header, starts a new trace.
#[test]
fn incoming_traceparent_is_honoured() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let run = curl(&[
        Transfer::get(nginx.url(OK_PATH))
            .header(&format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01")),
        Transfer::get(nginx.url(OK_PATH)),
    ]);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 2);
    assert_count(&spans, 2, "2 requests");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    let req = Req::get(OK_PATH, 200, nginx::OK_LEN);
    for span in &spans {
        check_server_span(span, &req, &peer);
    }
    let (joined, fresh) = (&spans[0], &spans[1]);
    assert_eq!(joined.trace_id, TRACE_ID, "trace_id of {joined}");
    assert_eq!(
        joined.parent_span_id, PARENT_ID,
        "parent_span_id of {joined}"
    );
    assert_ne!(
        joined.span_id, PARENT_ID,
        "the server span needs its own id: {joined}"
    );
    assert_ne!(
        fresh.trace_id, TRACE_ID,
        "context leaked into the next request: {fresh}"
    );
    assert_eq!(
        fresh.parent_span_id, "",
        "the second request has no parent: {fresh}"
    );
}

/// curl and nginx both instrumented, no header sent by the application: each server span is a
/// child of the matching client span (same trace, parent = client span id) and lies inside it.
#[test]
fn client_and_server_on_one_node_are_linked() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let config = format!(
        "{}    - exe_path: \"*/curl\"\n",
        ports_config(&nginx.port.to_string())
    );
    let agent = Agent::start(&config, &[]);
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?n=2", 200, nginx::OK_LEN),
        Req::get(OK_PATH, 200, nginx::OK_LEN),
    ];
    let urls: Vec<String> = reqs.iter().map(|r| nginx.url(r.target)).collect();
    let transfers: Vec<Transfer> = urls.iter().map(Transfer::get).collect();
    let run = curl(&transfers);
    let reqs = check_curl(&run, &reqs);
    assert_eq!(
        run.connections(),
        1,
        "curl did not keep the connection alive"
    );
    let workers = nginx.worker_pids().to_vec();
    let mut pids = workers.clone();
    pids.push(run.pid);
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= 2 * reqs.len()
    });
    let curl_service = util::which_name("curl");
    let spans = curl_spans(agent.stop(), &pids, &curl_service);
    assert_count(&spans, 2 * reqs.len(), "3 requests seen from both ends");
    let (clients, servers): (Vec<_>, Vec<_>) = by_start(spans)
        .into_iter()
        .partition(|s| s.kind == "client");
    assert_count(&clients, reqs.len(), "client spans");
    assert_count(&servers, reqs.len(), "server spans");
    let nginx_service = nginx.service();
    let server_peer = Peer {
        service: &nginx_service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    let client_pids = [run.pid];
    let client_peer = server_peer.client(&curl_service, &client_pids);
    for (((client, server), req), url) in clients.iter().zip(&servers).zip(&reqs).zip(&urls) {
        check_client_span(client, req, url, &client_peer);
        assert_eq!(client.parent_span_id, "", "curl's span is a root: {client}");
        assert_eq!(server.kind, "server");
        // The server span is linked: its parent is the client span, not empty.
        assert!(
            server.is_child_of(client),
            "server span is not a child of the client span:\nclient {client}\nserver {server}"
        );
        check_server_span(server, req, &server_peer);
        assert!(
            client.start_unix_nano <= server.start_unix_nano
                && server.end_unix_nano <= client.end_unix_nano,
            "server span not inside its client span:\nclient {client}\nserver {server}"
        );
    }
}

/// A header group of [`incoming_headers_root_the_chain`]: requests `queries` sent with
/// `headers`, whose frontend span must hang from `parent` in trace `trace`.
struct HeaderGroup {
    label: &'static str,
    headers: Vec<String>,
    trace: &'static str,
    parent: &'static str,
    queries: Vec<String>,
}

/// curl (not instrumented) sends requests carrying a `traceparent` (with `tracestate`), a
/// single `b3` header, or the `X-B3-*` headers (with a 64-bit trace id) to a Python frontend
/// that calls a Python backend: in each group the frontend server span has exactly the
/// header's trace id and parent, and the rest of the chain follows in that trace (frontend
/// client under the frontend server, backend server under the frontend client).
#[test]
fn incoming_headers_root_the_chain() {
    let _serial = util::serial();
    let backend = PythonServer::chain_http(None, BACKEND);
    let frontend = PythonServer::chain_http(Some(&backend.url("")), FRONTEND);
    let ports = format!("{},{}", frontend.port, backend.port);
    let agent = Agent::start(&ports_config(&ports), &[]);
    let mut groups = [
        HeaderGroup {
            label: "traceparent",
            headers: vec![
                format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"),
                "tracestate: vendor=value".to_owned(),
            ],
            trace: TRACE_ID,
            parent: PARENT_ID,
            queries: Vec::new(),
        },
        HeaderGroup {
            label: "b3 single",
            headers: vec![
                "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
                    .to_owned(),
            ],
            trace: "80f198ee56343ba864fe8b2a57d3eff7",
            parent: "e457b5a2e4d86bd1",
            queries: Vec::new(),
        },
        HeaderGroup {
            label: "b3 multi, 64-bit trace id",
            headers: vec![
                "X-B3-TraceId: 64fe8b2a57d3eff7".to_owned(),
                "X-B3-SpanId: 8448eb211c80319c".to_owned(),
                "X-B3-Sampled: 1".to_owned(),
            ],
            trace: "000000000000000064fe8b2a57d3eff7",
            parent: "8448eb211c80319c",
            queries: Vec::new(),
        },
    ];
    // Interleaved on one connection: 5 requests per group.
    let mut transfers = Vec::new();
    for n in 0..15 {
        let group = &mut groups[n % 3];
        let q = trace_chains::query(n, 0);
        let mut t = Transfer::get(frontend.url(&format!("/work?{q}")));
        for h in &group.headers {
            t = t.header(h);
        }
        transfers.push(t);
        group.queries.push(q);
    }
    let run = curl(&transfers);
    trace_chains::assert_answered(std::slice::from_ref(&run), CHAIN_FRONT_BODY);
    let front_pids = [frontend.pid()];
    let back_pids = [backend.pid()];
    let pids = [frontend.pid(), backend.pid()];
    let spans = collect(agent, &pids, 3 * transfers.len());
    assert_count(&spans, 3 * transfers.len(), "3 spans per request");
    let hops = [
        Hop {
            name: "frontend server",
            kind: "server",
            pids: &front_pids,
        },
        Hop {
            name: "frontend client",
            kind: "client",
            pids: &front_pids,
        },
        Hop {
            name: "backend server",
            kind: "server",
            pids: &back_pids,
        },
    ];
    for g in &groups {
        let chains = trace_chains::chains_by_query(
            &spans
                .iter()
                .filter(|s| {
                    trace_chains::query_of(s).is_some_and(|q| g.queries.iter().any(|g| g == q))
                })
                .cloned()
                .collect::<Vec<_>>(),
            &hops,
            &g.queries,
        );
        trace_chains::analyse(
            g.label,
            chains,
            &hops,
            Root::Remote {
                trace_id: g.trace,
                parent_span_id: g.parent,
            },
        )
        .assert_all_complete();
    }
}

/// The sum of the `name` samples whose labels include `service_name="service"`.
fn metric_sum(scrape: &Scrape, name: &str, service: &str) -> u64 {
    scrape.count_with(name, &[("service_name", service)])
}

/// Request counts of the chain as the RED metrics see them: (frontend server, frontend client,
/// backend server, curl client).
fn red_counts(scrape: &Scrape, curl_service: &str) -> [u64; 4] {
    [
        metric_sum(
            scrape,
            "http_server_request_duration_seconds_count",
            FRONTEND,
        ),
        metric_sum(
            scrape,
            "http_client_request_duration_seconds_count",
            FRONTEND,
        ),
        metric_sum(
            scrape,
            "http_server_request_duration_seconds_count",
            BACKEND,
        ),
        metric_sum(
            scrape,
            "http_client_request_duration_seconds_count",
            curl_service,
        ),
    ]
}

/// `traceidratio` with ratio 0 (from `OTEL_TRACES_SAMPLER[_ARG]`): no trace is kept, so no
/// span is printed, not even for a caller's sampled `traceparent` (the ratio sampler ignores
/// the parent), yet the RED metrics count every request of every hop and the self-metrics
/// count every span as sampled out.
#[test]
fn ratio_zero_prints_nothing_but_metrics_count_every_request() {
    let _serial = util::serial();
    let backend = PythonServer::chain_http(None, BACKEND);
    let frontend = PythonServer::chain_http(Some(&backend.url("")), FRONTEND);
    let metrics_port = util::free_port();
    let config = format!(
        "prometheus_export:\n  port: {metrics_port}\n{}",
        trace_chains::chain_config(&[frontend.port, backend.port])
    );
    let agent = Agent::start(
        &config,
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );
    let n = 10;
    let transfers: Vec<Transfer> = (0..n)
        .map(|i| {
            let t = Transfer::get(frontend.url(&format!("/work?{}", trace_chains::query(i, 0))));
            if i == 0 {
                t.header(&format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"))
            } else {
                t
            }
        })
        .collect();
    let run = curl(&transfers);
    trace_chains::assert_answered(std::slice::from_ref(&run), CHAIN_FRONT_BODY);
    let curl_service = util::which_name("curl");
    let want = [n as u64; 4];
    let mut scrape = Scrape::parse("");
    let counted = util::wait_until(SPAN_WAIT, || {
        scrape = crate::metrics::scrape(metrics_port);
        red_counts(&scrape, &curl_service) == want
    });
    assert!(
        counted,
        "RED request counts (frontend server, frontend client, backend server, curl) are {:?}, \
         expected {want:?}:\n{}",
        red_counts(&scrape, &curl_service),
        scrape.text
    );
    assert_eq!(
        scrape.counter("mop_spans_dropped_total{reason=\"sampled_out\"}"),
        4 * n as u64,
        "every span is counted as sampled out:\n{}",
        scrape.text
    );
    let spans = agent.stop();
    let pids = [run.pid, frontend.pid(), backend.pid()];
    let ours: Vec<_> = spans.iter().filter(|s| pids.contains(&s.pid)).collect();
    assert!(
        ours.is_empty(),
        "unsampled spans were printed:\n{}",
        span::show(&ours.into_iter().cloned().collect::<Vec<_>>())
    );
}

/// `parentbased_always_off` (YAML `otel_traces_export.sampler`): requests without a header
/// start unsampled traces and a caller's `traceparent` with flags 00 stays unsampled, so
/// neither is printed; a `traceparent` with flags 01 is followed, and its whole chain (three
/// spans, exact parents) is printed. The metrics count all requests.
#[test]
fn parent_based_always_off_prints_only_sampled_callers() {
    let _serial = util::serial();
    let backend = PythonServer::chain_http(None, BACKEND);
    let frontend = PythonServer::chain_http(Some(&backend.url("")), FRONTEND);
    let metrics_port = util::free_port();
    let ports = format!("{},{}", frontend.port, backend.port);
    let config = format!(
        "prometheus_export:\n  port: {metrics_port}\n\
         otel_traces_export:\n  sampler:\n    name: parentbased_always_off\n{}",
        ports_config(&ports)
    );
    let agent = Agent::start(&config, &[]);
    // Requests 0..3 unsampled by the caller, 3..6 without header, 6..9 sampled by the caller.
    let unsampled = "00f067aa0ba902b8";
    let mut sampled_queries = Vec::new();
    let transfers: Vec<Transfer> = (0..9)
        .map(|i| {
            let q = trace_chains::query(i, 0);
            let t = Transfer::get(frontend.url(&format!("/work?{q}")));
            match i / 3 {
                0 => t.header(&format!("traceparent: 00-{TRACE_ID}-{unsampled}-00")),
                1 => t,
                _ => {
                    sampled_queries.push(q);
                    t.header(&format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"))
                }
            }
        })
        .collect();
    let run = curl(&transfers);
    trace_chains::assert_answered(std::slice::from_ref(&run), CHAIN_FRONT_BODY);
    let mut scrape = Scrape::parse("");
    let counted = util::wait_until(SPAN_WAIT, || {
        scrape = crate::metrics::scrape(metrics_port);
        red_counts(&scrape, "none")[..3] == [9, 9, 9]
    });
    assert!(
        counted,
        "RED counts never reached 9 per hop:\n{}",
        scrape.text
    );
    let pids = [frontend.pid(), backend.pid()];
    let spans = collect(agent, &pids, 3 * sampled_queries.len());
    assert_count(&spans, 3 * sampled_queries.len(), "the sampled chains only");
    let front_pids = [frontend.pid()];
    let back_pids = [backend.pid()];
    let hops = [
        Hop {
            name: "frontend server",
            kind: "server",
            pids: &front_pids,
        },
        Hop {
            name: "frontend client",
            kind: "client",
            pids: &front_pids,
        },
        Hop {
            name: "backend server",
            kind: "server",
            pids: &back_pids,
        },
    ];
    let chains = trace_chains::chains_by_query(&spans, &hops, &sampled_queries);
    trace_chains::analyse(
        "parentbased_always_off, sampled traceparent",
        chains,
        &hops,
        Root::Remote {
            trace_id: TRACE_ID,
            parent_span_id: PARENT_ID,
        },
    )
    .assert_all_complete();
}
