//! Choosing what to instrument (interface.md, "Choosing what to instrument") and the service
//! name each process gets.

use std::time::Duration;

use super::{
    Peer, Req, assert_count, check_server_span, collect, ports_config, wait_for_discovery,
};
use crate::{
    agent::Agent,
    peers::{
        curl::{Transfer, curl},
        nginx::{Nginx, NginxOptions, OK_LEN, OK_PATH},
        python::PythonServer,
    },
    span::{self, Span},
    util,
};

/// Asserts that `spans` are exactly one `GET /ok` served by `nginx`, with `service`.
fn assert_one_ok(spans: &[Span], nginx: &Nginx, service: &str) {
    assert_count(spans, 1, "one GET /ok");
    let peer = Peer {
        service,
        pids: nginx.worker_pids(),
        port: nginx.port,
        version: "1.1",
    };
    check_server_span(&spans[0], &Req::get(OK_PATH, 200, OK_LEN), &peer);
}

/// A server started after the agent on a selected port is instrumented (within 2 s).
#[test]
fn server_started_after_agent() {
    let _serial = util::serial();
    let port = util::free_port();
    let agent = Agent::start(&ports_config(&port.to_string()), &[]);
    let nginx = Nginx::start_with(NginxOptions {
        port: Some(port),
        ..NginxOptions::default()
    });
    wait_for_discovery();
    let run = curl(&[
        Transfer::get(nginx.url(OK_PATH)),
        Transfer::get(nginx.url(OK_PATH)),
        Transfer::get(nginx.url(OK_PATH)),
    ]);
    assert!(run.results.iter().all(|r| r.http_code == 200));
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 3);
    assert_count(&spans, 3, "3 requests to a server started after the agent");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port,
        version: "1.1",
    };
    for span in &spans {
        check_server_span(span, &Req::get(OK_PATH, 200, OK_LEN), &peer);
    }
}

/// `open_ports` as a range selects both servers; `exclude_instrument` removes one of them.
#[test]
fn exclude_instrument_removes_a_match() {
    let _serial = util::serial();
    let kept = Nginx::start(1);
    let excluded = Nginx::start(1);
    let (lo, hi) = (kept.port.min(excluded.port), kept.port.max(excluded.port));
    let config = format!(
        "trace_printer: json\n\
         routes:\n  \
           unmatched: unset\n\
         discovery:\n  \
           instrument:\n    \
             - open_ports: \"{lo}-{hi}\"\n  \
           exclude_instrument:\n    \
             - open_ports: \"{}\"\n",
        excluded.port
    );
    let agent = Agent::start(&config, &[]);
    curl(&[Transfer::get(kept.url(OK_PATH))]);
    curl(&[Transfer::get(excluded.url(OK_PATH))]);
    let kept_workers = kept.worker_pids().to_vec();
    agent.wait_for_spans(super::SPAN_WAIT, |s| {
        s.iter().any(|s| kept_workers.contains(&s.pid))
    });
    // Give a wrongly instrumented second server the same chance to show up.
    std::thread::sleep(Duration::from_millis(500));
    let spans = agent.stop();
    let from_excluded: Vec<Span> = spans
        .iter()
        .filter(|s| excluded.worker_pids().contains(&s.pid))
        .cloned()
        .collect();
    assert!(
        from_excluded.is_empty(),
        "excluded server instrumented:\n{}",
        span::show(&from_excluded)
    );
    let ours: Vec<Span> = spans
        .into_iter()
        .filter(|s| kept_workers.contains(&s.pid))
        .collect();
    assert_one_ok(&ours, &kept, &kept.service());
}

/// No selector at all: every process listening on a TCP port is instrumented, except the agent
/// itself (whose Prometheus port is scraped during the test).
#[test]
fn no_selector_instruments_listeners_but_not_itself() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let metrics_port = util::free_port();
    let config = format!(
        "trace_printer: json\nroutes:\n  unmatched: unset\nprometheus_export:\n  port: {metrics_port}\n"
    );
    let agent = Agent::start(&config, &[]);
    let agent_pid = agent.pid();
    util::wait_for_port(
        metrics_port,
        Duration::from_secs(5),
        "the agent's Prometheus endpoint",
    );
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let scrape = curl(&[Transfer::get(format!(
        "http://127.0.0.1:{metrics_port}/metrics"
    ))]);
    assert_eq!(
        scrape.results[0].http_code, 200,
        "GET /metrics on the agent"
    );
    let workers = nginx.worker_pids().to_vec();
    agent.wait_for_spans(super::SPAN_WAIT, |s| {
        s.iter().any(|s| workers.contains(&s.pid))
    });
    std::thread::sleep(Duration::from_millis(500));
    // Other listeners on this machine may legitimately show up; only ours are counted.
    let spans = agent.stop();
    let own: Vec<Span> = spans
        .iter()
        .filter(|s| s.pid == agent_pid)
        .cloned()
        .collect();
    assert!(
        own.is_empty(),
        "the agent instrumented itself:\n{}",
        span::show(&own)
    );
    let ours: Vec<Span> = spans
        .into_iter()
        .filter(|s| workers.contains(&s.pid))
        .collect();
    assert_one_ok(&ours, &nginx, &nginx.service());
}

/// Environment variables override the file: `OTEL_EBPF_OPEN_PORT` selects the server and
/// `OTEL_EBPF_TRACE_PRINTER=json` replaces the file's `text` printer.
#[test]
fn environment_overrides_file() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let unused = util::free_port();
    let config = format!(
        "trace_printer: text\n\
         routes:\n  \
           unmatched: unset\n\
         discovery:\n  \
           instrument:\n    \
             - open_ports: \"{unused}\"\n"
    );
    let port = nginx.port.to_string();
    let agent = Agent::start(
        &config,
        &[
            ("OTEL_EBPF_OPEN_PORT", &port),
            ("OTEL_EBPF_TRACE_PRINTER", "json"),
        ],
    );
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 1);
    assert_one_ok(&spans, &nginx, &nginx.service());
}

/// `OTEL_SERVICE_NAME` in the agent's environment names every instrumented process.
#[test]
fn agent_service_name_override() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let agent = Agent::start(
        &ports_config(&nginx.port.to_string()),
        &[("OTEL_SERVICE_NAME", "checkout")],
    );
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 1);
    assert_one_ok(&spans, &nginx, "checkout");
}

/// `OTEL_SERVICE_NAME` in the target process's environment names that process's spans.
#[test]
fn target_service_name_from_its_environment() {
    let _serial = util::serial();
    let py = PythonServer::http11(&[("OTEL_SERVICE_NAME", "inventory")]);
    let agent = Agent::start(&ports_config(&py.port.to_string()), &[]);
    curl(&[Transfer::get(py.url(OK_PATH))]);
    let pids = [py.pid()];
    let spans = collect(agent, &pids, 1);
    assert_count(&spans, 1, "one GET /ok");
    let peer = Peer {
        service: "inventory",
        pids: &pids,
        port: py.port,
        version: "1.1",
    };
    check_server_span(&spans[0], &Req::get(OK_PATH, 200, 3), &peer);
}
