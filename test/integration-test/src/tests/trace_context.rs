//! Trace context: an incoming `traceparent` is honoured, and a call between two instrumented
//! processes on one node links the server span under the client span without any header.

use super::{
    Peer, Req, SPAN_WAIT, assert_count, by_start, check_client_span, check_curl, check_server_span,
    collect, curl_spans, ports_config,
};
use crate::{
    agent::Agent,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH, SMALL_PATH, SMALL_SIZE},
    },
    util,
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
    let client_peer = Peer {
        service: &curl_service,
        pids: &client_pids,
        port: nginx.port,
        version: "1.1",
    };
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
