//! Linking scenarios: headers, same-node peers in both arrival orders, in-process children,
//! timeouts, sampling.

use std::time::{Duration, Instant};

use mop_protocol::{RequestStart, Role, TraceHeaders};

use super::*;
use crate::config::sampler::SamplerConfig;

fn linker() -> Linker {
    Linker::new(
        IdGenerator::from_seed([9; 32]),
        Sampler::new(SamplerConfig::ParentBasedAlwaysOn),
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const CLIENT: &str = "127.0.0.1:50000";
const SERVER: &str = "127.0.0.1:8080";

/// A start of `role` in `pid` on connection `conn`, seen from that process's end.
fn start(pid: u32, conn: u64, seq: u64, role: Role, tid: u32, peer: bool) -> ConnStart {
    let (local, remote) = match role {
        Role::Client => (addr(CLIENT), addr(SERVER)),
        Role::Server => (addr(SERVER), addr(CLIENT)),
    };
    ConnStart {
        pid,
        conn_id: conn,
        local,
        remote,
        start: start_marker(role, seq, tid),
        peer_tracked: peer,
        kernel_ctx: None,
    }
}

/// A kernel context (TCP-option propagation) with distinctive bytes.
fn kctx(trace: u8, span: u8, parent: u8) -> mop_common::TraceCtx {
    mop_common::TraceCtx {
        trace_id: [trace; 16],
        span_id: [span; 8],
        parent_span_id: [parent; 8],
    }
}

fn key(pid: u32, conn: u64, seq: u64) -> CtxKey {
    CtxKey {
        pid,
        conn_id: conn,
        seq,
    }
}

#[test]
fn a_server_joins_the_trace_of_its_traceparent() {
    let mut l = linker();
    let mut s = start(1, 10, 0, Role::Server, 100, false);
    s.start.trace_headers = TraceHeaders {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: Some("a=b".into()),
        ..TraceHeaders::default()
    };
    l.on_start(&s, Instant::now());
    let r = l.ids(&key(1, 10, 0)).unwrap();
    assert_eq!(r.trace_id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(r.parent.unwrap().to_hex(), "b7ad6b7169203331");
    assert_eq!(r.trace_state.as_deref(), Some("a=b"));
    assert_eq!(r.flags, 1);
}

#[test]
fn a_server_is_the_child_of_its_instrumented_client_in_either_order() {
    for client_first in [true, false] {
        let mut l = linker();
        let now = Instant::now();
        let c = start(1, 10, 0, Role::Client, 100, true);
        let s = start(2, 20, 0, Role::Server, 200, true);
        if client_first {
            l.on_start(&c, now);
            l.on_start(&s, now);
        } else {
            l.on_start(&s, now);
            // The server waits for its client: not settled yet.
            assert!(l.ids(&key(2, 20, 0)).is_none());
            let settled = l.on_start(&c, now);
            assert!(settled.contains(&key(2, 20, 0)));
        }
        let client = l.ids(&key(1, 10, 0)).unwrap();
        let server = l.ids(&key(2, 20, 0)).unwrap();
        assert_eq!(server.trace_id, client.trace_id);
        assert_eq!(server.parent, Some(client.span_id));
        assert_eq!(client.parent, None);
    }
}

#[test]
fn requests_on_one_connection_pair_up_in_order() {
    let mut l = linker();
    let now = Instant::now();
    for seq in 0..3 {
        l.on_start(&start(1, 10, seq, Role::Client, 100, true), now);
    }
    for seq in 0..3 {
        l.on_start(&start(2, 20, seq, Role::Server, 200, true), now);
    }
    for seq in 0..3 {
        let c = l.ids(&key(1, 10, seq)).unwrap();
        let s = l.ids(&key(2, 20, seq)).unwrap();
        assert_eq!(s.parent, Some(c.span_id), "request {seq}");
    }
}

#[test]
fn a_call_made_while_serving_is_a_child_of_the_served_request() {
    let mut l = linker();
    let now = Instant::now();
    // Frontend (pid 1) serves on thread 100 and calls a backend from that thread.
    l.on_start(&start(1, 10, 0, Role::Server, 100, false), now);
    l.on_start(&start(1, 11, 0, Role::Client, 100, false), now);
    let served = l.ids(&key(1, 10, 0)).unwrap();
    let call = l.ids(&key(1, 11, 0)).unwrap();
    assert_eq!(call.trace_id, served.trace_id);
    assert_eq!(call.parent, Some(served.span_id));
    // Another thread's call is not.
    l.on_start(&start(1, 12, 0, Role::Client, 101, false), now);
    assert_ne!(l.ids(&key(1, 12, 0)).unwrap().trace_id, served.trace_id);
    // After the served request completes, a call on its thread starts a new trace.
    l.on_done(&key(1, 10, 0));
    l.on_start(&start(1, 13, 0, Role::Client, 100, false), now);
    assert_ne!(l.ids(&key(1, 13, 0)).unwrap().trace_id, served.trace_id);
}

#[test]
fn a_chain_settles_when_its_root_does() {
    // curl -> frontend (serves on 100, calls backend) -> backend; the frontend's server start
    // arrives before curl's client start, so its child call waits with it.
    let mut l = linker();
    let now = Instant::now();
    let mut front = start(2, 20, 0, Role::Server, 100, true);
    front.pid = 2;
    l.on_start(&front, now);
    let mut call = start(2, 21, 0, Role::Client, 100, false);
    call.local = addr("127.0.0.1:50001");
    call.remote = addr("127.0.0.1:9090");
    l.on_start(&call, now);
    assert!(l.ids(&key(2, 21, 0)).is_none(), "waits with its parent");
    let settled = l.on_start(&start(1, 10, 0, Role::Client, 7, true), now);
    assert!(settled.contains(&key(2, 20, 0)) && settled.contains(&key(2, 21, 0)));
    let curl = l.ids(&key(1, 10, 0)).unwrap();
    let server = l.ids(&key(2, 20, 0)).unwrap();
    let child = l.ids(&key(2, 21, 0)).unwrap();
    assert_eq!(server.parent, Some(curl.span_id));
    assert_eq!(child.parent, Some(server.span_id));
    assert_eq!(child.trace_id, curl.trace_id);
}

#[test]
fn a_server_whose_client_never_starts_becomes_a_root_after_the_wait() {
    let mut l = linker();
    let now = Instant::now();
    l.on_start(&start(2, 20, 0, Role::Server, 200, true), now);
    assert!(l.expire(now + Duration::from_millis(10)).is_empty());
    let settled = l.expire(now + PEER_WAIT + Duration::from_millis(1));
    assert_eq!(settled, vec![key(2, 20, 0)]);
    assert_eq!(l.ids(&key(2, 20, 0)).unwrap().parent, None);
}

#[test]
fn unannounced_requests_get_fresh_roots_and_memory_is_bounded() {
    let mut l = linker();
    let r = l.ids(&key(9, 9, 9)).unwrap();
    assert_eq!(r.parent, None);
    let now = Instant::now();
    for i in 0..(MAX_CONTEXTS as u64 + 100) {
        l.on_start(&start(1, i, 0, Role::Server, 1, false), now);
        l.on_done(&key(1, i, 0));
    }
    assert!(l.len() <= MAX_CONTEXTS);
    l.forget_pid(1);
    assert!(l.is_empty());
}

#[test]
fn sampling_is_decided_once_per_trace() {
    let mut l = Linker::new(
        IdGenerator::from_seed([9; 32]),
        Sampler::new(SamplerConfig::ParentBasedAlwaysOff),
    );
    let now = Instant::now();
    l.on_start(&start(1, 10, 0, Role::Server, 100, false), now);
    l.on_start(&start(1, 11, 0, Role::Client, 100, false), now);
    assert_eq!(l.ids(&key(1, 10, 0)).unwrap().flags, 0);
    assert_eq!(l.ids(&key(1, 11, 0)).unwrap().flags, 0, "children inherit");
    let mut s = start(1, 12, 0, Role::Server, 101, false);
    s.start.trace_headers.traceparent =
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    l.on_start(&s, now);
    assert_eq!(
        l.ids(&key(1, 12, 0)).unwrap().flags,
        1,
        "the caller decided"
    );
}

#[test]
fn start_marker_helper_is_a_plain_request() {
    let m: RequestStart = start_marker(Role::Client, 3, 4);
    assert_eq!((m.seq, m.tid, m.stream_id), (3, 4, 0));
}

#[test]
fn a_server_whose_caller_sent_a_tcp_option_is_its_child_with_the_kernel_ids() {
    let mut l = linker();
    let mut s = start(2, 20, 0, Role::Server, 200, false);
    s.kernel_ctx = Some(kctx(7, 8, 9));
    l.on_start(&s, Instant::now());
    let r = l.ids(&key(2, 20, 0)).unwrap();
    assert_eq!(r.trace_id, TraceId([7; 16]));
    assert_eq!(r.span_id, SpanId([8; 8]));
    assert_eq!(r.parent, Some(SpanId([9; 8])));
}

#[test]
fn a_header_wins_over_the_tcp_option() {
    let mut l = linker();
    let mut s = start(2, 20, 0, Role::Server, 200, false);
    s.kernel_ctx = Some(kctx(7, 8, 9));
    s.start.trace_headers = TraceHeaders {
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..TraceHeaders::default()
    };
    l.on_start(&s, Instant::now());
    let r = l.ids(&key(2, 20, 0)).unwrap();
    assert_eq!(r.trace_id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(r.parent.unwrap().to_hex(), "b7ad6b7169203331");
    // The span id is still the kernel's: it is what the request's option carried onwards.
    assert_eq!(r.span_id, SpanId([8; 8]));
}

#[test]
fn a_call_made_while_serving_follows_the_served_span_and_roots_keep_the_kernel_trace() {
    let mut l = linker();
    let now = Instant::now();
    // A root server request: the kernel started trace 7 for it.
    let mut s = start(2, 20, 0, Role::Server, 200, false);
    s.kernel_ctx = Some(kctx(7, 8, 0));
    l.on_start(&s, now);
    let server = l.ids(&key(2, 20, 0)).unwrap();
    assert_eq!(server.trace_id, TraceId([7; 16]));
    assert_eq!(server.parent, None);
    // Its downstream call: the kernel saw the thread serving span 8.
    let mut c = start(2, 30, 0, Role::Client, 200, false);
    c.kernel_ctx = Some(kctx(7, 11, 8));
    l.on_start(&c, now);
    let call = l.ids(&key(2, 30, 0)).unwrap();
    assert_eq!(call.trace_id, TraceId([7; 16]));
    assert_eq!(call.span_id, SpanId([11; 8]));
    assert_eq!(call.parent, Some(SpanId([8; 8])));
}

#[test]
fn a_same_node_pair_with_tcp_options_links_once_and_keeps_the_queues_in_step() {
    for client_first in [true, false] {
        let mut l = linker();
        let now = Instant::now();
        for seq in 0..3u8 {
            let mut c = start(1, 10, u64::from(seq), Role::Client, 100, true);
            c.kernel_ctx = Some(kctx(40 + seq, 50 + seq, 0));
            let mut s = start(2, 20, u64::from(seq), Role::Server, 200, true);
            s.kernel_ctx = Some(kctx(40 + seq, 60 + seq, 50 + seq));
            if client_first {
                l.on_start(&c, now);
                l.on_start(&s, now);
            } else {
                l.on_start(&s, now);
                l.on_start(&c, now);
            }
            let server = l.ids(&key(2, 20, u64::from(seq))).unwrap();
            assert_eq!(server.parent, Some(SpanId([50 + seq; 8])));
            assert_eq!(server.trace_id, TraceId([40 + seq; 16]));
        }
        assert!(l.clients_waiting.is_empty() && l.servers_waiting.is_empty());
    }
}
