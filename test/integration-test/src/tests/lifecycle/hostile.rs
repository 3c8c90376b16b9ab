//! Hostile traffic to an instrumented nginx: a huge header, invalid UTF-8, a request smuggling
//! shape (Content-Length with Transfer-Encoding), slowloris connections that never finish their
//! headers, binary garbage and an HTTP/2 CONTINUATION flood. The agent must stay up with bounded
//! memory, invent no request nginx did not serve, and trace the normal requests that follow
//! exactly.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use crate::tests::{SPAN_WAIT, assert_only_from, ports_config, with_metrics};
use crate::{
    agent::Agent,
    metrics,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH},
    },
    span::{self, Span},
    util,
};

/// Connections that send half a request and keep it open until the end of the test.
const SLOWLORIS: usize = 16;
/// Normal requests after the hostile ones, each of which must give exactly one span.
const AFTER: usize = 20;
/// The agent's resident memory must stay below this (KiB).
const RSS_CAP_KIB: u64 = 160 * 1024;
/// The path hidden in the body of the smuggling request: nginx refuses the request, so no
/// span may carry it.
const SMUGGLED: &str = "/smuggled";

/// Writes `bytes` on a new connection to `port` and reads whatever comes back (bounded), then
/// closes it.
fn send(port: u16, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// The hostile requests, each on its own connection.
fn hostile_requests() -> Vec<Vec<u8>> {
    let huge = format!(
        "GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let mut utf8 =
        b"GET /\xff\xfe\xc3 HTTP/1.1\r\nHost: \xe2\x28\xa1\r\nX: \xf0\x90\x28\xbc\r\n\r\n".to_vec();
    utf8.extend_from_slice(b"GET /\xc0\xaf HTTP/1.1\r\nHost: x\r\n\r\n");
    let smuggle = format!(
        "POST /carrier HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nGET {SMUGGLED} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .into_bytes();
    // Deterministic binary garbage (xorshift).
    let mut x: u32 = 0x9e37_79b9;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    // HTTP/2 preface, then a HEADERS frame without END_HEADERS followed by 2000 CONTINUATION
    // frames of 16 bytes each: a header block that never ends.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    h2.extend_from_slice(&[0, 0, 16, 1, 0, 0, 0, 0, 1]);
    h2.extend_from_slice(&[0x82; 16]);
    for _ in 0..2000 {
        h2.extend_from_slice(&[0, 0, 16, 9, 0, 0, 0, 0, 1]);
        h2.extend_from_slice(&[0x82; 16]);
    }
    vec![huge.into_bytes(), utf8, smuggle, garbage, h2]
}

#[test]
fn hostile_traffic_leaves_the_agent_up_bounded_and_exact() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let (config, metrics_port) = with_metrics(&ports_config(&nginx.port.to_string()));
    let agent = Agent::start(&config, &[]);
    let pid = agent.pid();

    // Slowloris: half a request line and one header each, kept open throughout.
    let slow: Vec<TcpStream> = (0..SLOWLORIS)
        .filter_map(|i| {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, nginx.port)).ok()?;
            s.write_all(format!("GET /slow{i} HTTP/1.1\r\nHost: x\r\nX-A: ").as_bytes())
                .ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(slow.len(), SLOWLORIS, "slowloris connections opened");
    for bytes in hostile_requests() {
        send(nginx.port, &bytes);
    }
    assert!(util::alive(pid), "the agent died on hostile traffic");

    let printed = agent.spans().len();
    let transfers: Vec<Transfer> = (0..AFTER)
        .map(|_| Transfer::get(nginx.url(OK_PATH)))
        .collect();
    curl(&transfers);
    let ok = |spans: &[Span]| {
        spans
            .iter()
            .filter(|s| s.attr("url.path").and_then(|v| v.as_str()) == Some(OK_PATH))
            .count()
    };
    agent.wait_for_spans(SPAN_WAIT, |s| ok(s) >= AFTER);
    // The smuggling shape (and the cut requests) are parse problems, counted once their
    // connections closed and the capture stage published (every second).
    let parse_errors = |s: &metrics::Scrape| {
        s.value("mop_parse_errors_total", &[("protocol", "http1")])
            .unwrap_or(0.0)
    };
    let mut scrape = metrics::scrape(metrics_port);
    let counted = util::wait_until(Duration::from_secs(5), || {
        scrape = metrics::scrape(metrics_port);
        parse_errors(&scrape) >= 1.0
    });
    assert!(
        counted,
        "no HTTP/1 parse problem counted after hostile requests:\n{}",
        scrape.text
    );
    let peak = metrics::rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    drop(slow);
    let spans = agent.stop();
    assert_only_from(&spans, nginx.worker_pids());
    assert_eq!(
        ok(&spans),
        AFTER,
        "{AFTER} GET {OK_PATH} after the hostile traffic ({printed} spans before them):\n{}",
        span::show(&spans)
    );
    for s in spans.iter().filter(|s| s.str_attr("url.path") == OK_PATH) {
        assert_eq!(s.int_attr("http.response.status_code"), 200, "{s}");
        assert_eq!(s.int_attr("http.response.body.size"), nginx::OK_LEN, "{s}");
    }
    let smuggled: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.attr("url.path")
                .and_then(|v| v.as_str())
                .is_some_and(|p| p.contains(SMUGGLED) || p.starts_with("/slow"))
        })
        .collect();
    assert!(
        smuggled.is_empty(),
        "spans for requests nginx never served (smuggled or unfinished): {smuggled:?}"
    );
    assert!(
        peak < RSS_CAP_KIB,
        "agent RSS over {RSS_CAP_KIB} KiB: {peak} KiB"
    );
    eprintln!(
        "hostile: {} spans before the normal requests, parse errors http1 {:?} http2 {:?}, \
         peak RSS {peak} KiB",
        printed,
        scrape.value("mop_parse_errors_total", &[("protocol", "http1")]),
        scrape.value("mop_parse_errors_total", &[("protocol", "http2")]),
    );
}
