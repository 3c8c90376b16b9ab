//! Trace context in a TCP option (`ebpf.context_propagation: tcp`) between two "nodes": two
//! network namespaces joined by veth, each with its own agent. Nothing in the applications
//! sends a trace header and neither agent sees the other end of a connection, so a span joins
//! its caller's trace only through the option.

use std::process::Stdio;

use super::{SPAN_WAIT, assert_count};
use crate::{
    agent::Agent,
    peers::netns::{NetnsPair, NsServer, spawn_ready},
    span::{self, Span},
    util,
};

/// Requests in the test: each is one chain of four spans.
const REQUESTS: usize = 3;
/// Where the frontend listens (in namespace b).
const FRONTEND_PORT: u16 = 18_080;
/// Where the backend listens (in namespace a).
const BACKEND_PORT: u16 = 18_081;

fn config(selectors: &str) -> String {
    format!(
        "trace_printer: json\n\
         routes:\n  unmatched: unset\n\
         ebpf:\n  context_propagation: tcp\n\
         discovery:\n  instrument:\n{selectors}"
    )
}

/// A `relay_server.py` in `ns` on `addr:port`, calling `upstream` for each request if given.
fn relay(ns: &str, addr: &str, port: u16, upstream: Option<&str>) -> NsServer {
    let mut cmd = NetnsPair::command(ns, "python3");
    cmd.arg("-u")
        .arg(util::peers_dir().join("relay_server.py"))
        .args([addr, &port.to_string()]);
    if let Some(up) = upstream {
        cmd.arg(up);
    }
    spawn_ready(cmd)
}

/// The one span of `spans` whose parent is `parent`, asserting there is exactly one.
fn child_of<'a>(spans: &'a [Span], parent: &Span, what: &str) -> &'a Span {
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect();
    assert_eq!(
        children.len(),
        1,
        "expected one {what} under {parent}, got:\n{}",
        span::show(spans)
    );
    assert_eq!(
        children[0].trace_id, parent.trace_id,
        "{what} left the trace: {}",
        children[0]
    );
    children[0]
}

/// curl (node a) -> threaded Python frontend (node b) -> Python backend (node a): agent a
/// sees curl and the backend, agent b the frontend. Every request makes one trace of four
/// spans: curl's client span, the frontend's server span under it (through the option on
/// a -> b), the frontend's call under its server span (the thread it serves on), and the
/// backend's server span under that call (through the option on b -> a).
#[test]
fn trace_context_crosses_nodes_in_a_tcp_option() {
    let _serial = util::serial();
    let net = NetnsPair::new();
    let (addr_a, addr_b) = (net.addr_a.to_string(), net.addr_b.to_string());
    let backend = relay(&net.a, &addr_a, BACKEND_PORT, None);
    let frontend = relay(
        &net.b,
        &addr_b,
        FRONTEND_PORT,
        Some(&format!("http://{addr_a}:{BACKEND_PORT}")),
    );
    let agent_a = Agent::start(
        &config(&format!(
            "    - open_ports: \"{BACKEND_PORT}\"\n    - exe_path: \"*/curl\"\n"
        )),
        &[],
    );
    let agent_b = Agent::start(
        &config(&format!("    - open_ports: \"{FRONTEND_PORT}\"\n")),
        &[],
    );

    let url = format!("http://{addr_b}:{FRONTEND_PORT}/chain");
    let mut cmd = NetnsPair::command(&net.a, "curl");
    cmd.args(["-sS", "--max-time", "30", "-o", "/dev/null"])
        .args(["-w", "%{http_code}\\n"]);
    for i in 0..REQUESTS {
        if i > 0 {
            cmd.arg("--next")
                .args(["-o", "/dev/null", "-w", "%{http_code}\\n"]);
        }
        cmd.arg(&url);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running curl in namespace a");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["200"; REQUESTS],
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let wanted_a = |s: &[Span]| {
        s.iter()
            .filter(|s| s.pid == backend.pid() || s.str_attr("url.full") == url)
            .count()
            >= 2 * REQUESTS
    };
    agent_a.wait_for_spans(SPAN_WAIT, wanted_a);
    agent_b.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| s.pid == frontend.pid()).count() >= 2 * REQUESTS
    });
    let spans_a = agent_a.stop();
    let spans_b = agent_b.stop();
    let curl_spans: Vec<Span> = spans_a
        .iter()
        .filter(|s| s.kind == "client" && s.str_attr("url.full") == url)
        .cloned()
        .collect();
    let backend_spans: Vec<Span> = spans_a
        .iter()
        .filter(|s| s.pid == backend.pid())
        .cloned()
        .collect();
    let (front_servers, front_clients): (Vec<Span>, Vec<Span>) = spans_b
        .iter()
        .filter(|s| s.pid == frontend.pid())
        .cloned()
        .partition(|s| s.kind == "server");
    assert_count(&curl_spans, REQUESTS, "curl's requests (agent a)");
    assert_count(&backend_spans, REQUESTS, "the backend's requests (agent a)");
    assert_count(
        &front_servers,
        REQUESTS,
        "the frontend's requests (agent b)",
    );
    assert_count(&front_clients, REQUESTS, "the frontend's calls (agent b)");

    let mut traces = Vec::new();
    for root in &curl_spans {
        assert_eq!(root.parent_span_id, "", "curl sent no context: {root}");
        let served = child_of(&front_servers, root, "frontend server span");
        let call = child_of(&front_clients, served, "frontend client span");
        let backend_span = child_of(&backend_spans, call, "backend server span");
        assert_eq!(backend_span.kind, "server", "{backend_span}");
        traces.push(root.trace_id.clone());
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), REQUESTS, "each request is its own trace");
}
