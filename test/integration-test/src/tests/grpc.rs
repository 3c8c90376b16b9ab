//! gRPC over cleartext HTTP/2 (h2c) with real peers: a Python grpcio server, grpcio and Node
//! `@grpc/grpc-js` clients. N calls give exactly N server spans and N client spans named
//! `mop.test.Echo/{Method}` with the `rpc.*` attributes and the status each side saw; the span
//! status (which the JSON printer does not carry) is checked on the OTLP export.

use std::time::Duration;

use super::{SPAN_WAIT, assert_count, by_start, ports_config};
use crate::{
    agent::Agent,
    metrics,
    peers::{
        grpc::{GrpcClient, GrpcServer, SERVICE, code},
        otlp::{OtlpReceiver, OtlpSpan},
    },
    span::{self, Span},
    util,
};

/// One call as the test made it: the method and the status code the span must carry (`None`:
/// the attribute must be absent, the status being unknown on that side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    method: &'static str,
    status: Option<i64>,
}

const fn call(method: &'static str, status: i64) -> Call {
    Call {
        method,
        status: Some(status),
    }
}

/// The sequence `unary 3, server_stream 5, client_stream 7, missing, broken`.
const MIXED: [Call; 7] = [
    call("Unary", code::OK),
    call("Unary", code::OK),
    call("Unary", code::OK),
    call("ServerStream", code::OK),
    call("ClientStream", code::OK),
    call("Missing", code::NOT_FOUND),
    call("Broken", code::INTERNAL),
];

/// Runs the [`MIXED`] commands on `client`, checking what the client measured.
fn run_mixed(client: &mut GrpcClient) {
    client.expect("unary 3", 3, code::OK);
    let stream = client.expect("server_stream 5", 1, code::OK);
    assert_eq!(stream.json["messages"], 5, "server stream: {}", stream.json);
    let upload = client.expect("client_stream 7", 1, code::OK);
    assert_eq!(upload.json["reply"], "7", "client stream: {}", upload.json);
    client.expect("missing", 1, code::NOT_FOUND);
    client.expect("broken", 1, code::INTERNAL);
}

/// Asserts every contract field of a gRPC span of `kind` for `call` to the server on `port`.
fn check_grpc_span(span: &Span, kind: &str, call: Call, port: u16) {
    assert_eq!(span.kind, kind, "kind of {span}");
    assert_eq!(
        span.name,
        format!("{SERVICE}/{}", call.method),
        "name of {span}"
    );
    assert_eq!(span.str_attr("rpc.system"), "grpc", "rpc.system of {span}");
    assert_eq!(
        span.str_attr("rpc.service"),
        SERVICE,
        "rpc.service of {span}"
    );
    assert_eq!(
        span.str_attr("rpc.method"),
        call.method,
        "rpc.method of {span}"
    );
    match call.status {
        Some(status) => assert_eq!(
            span.int_attr("rpc.grpc.status_code"),
            status,
            "rpc.grpc.status_code of {span}"
        ),
        None => assert!(
            !span.has_attr("rpc.grpc.status_code"),
            "rpc.grpc.status_code present though the status is unknown on this side: {span}"
        ),
    }
    assert_eq!(
        span.str_attr("server.address"),
        "127.0.0.1",
        "server.address of {span}"
    );
    assert_eq!(
        span.int_attr("server.port"),
        i64::from(port),
        "server.port of {span}"
    );
    assert_eq!(
        span.str_attr("network.protocol.version"),
        "2",
        "network.protocol.version of {span}"
    );
    if kind == "server" {
        assert_eq!(
            span.str_attr("client.address"),
            "127.0.0.1",
            "client.address of {span}"
        );
    } else {
        assert!(!span.has_attr("client.address"), "client.address: {span}");
    }
    for http in [
        "http.request.method",
        "http.response.status_code",
        "url.path",
        "url.full",
        "http.route",
    ] {
        assert!(
            !span.has_attr(http),
            "gRPC span carries the HTTP attribute {http}: {span}"
        );
    }
}

/// The spans of `pid`, in start order.
fn of_pid(spans: &[Span], pid: u32) -> Vec<Span> {
    by_start(spans.iter().filter(|s| s.pid == pid).cloned().collect())
}

/// Asserts that `spans` (all from one process, of `kind`, with `service`) are exactly the
/// calls `want`, in that order when `ordered`, else as a multiset.
/// The `rpc.grpc.status_code` of the one `Slow` span in `spans`, a call whose deadline passed.
///
/// Its client and its server both time the deadline: the client resets the stream
/// (`RST_STREAM CANCEL`, no status) and grpcio's server sends `DEADLINE_EXCEEDED` (4) in
/// trailers unless the client's reset reached it first, in which case it sends nothing more
/// on the stream. Both timers have the same length, so either order happens (both seen here):
/// each span carries 4 when that status was on the wire before the reset, none otherwise
/// (unknown is left out, never guessed). Panics on any other value.
fn deadline_status(spans: &[Span]) -> Option<i64> {
    let slow: Vec<&Span> = spans.iter().filter(|s| s.name.ends_with("/Slow")).collect();
    assert_eq!(slow.len(), 1, "one Slow span:\n{}", span::show(spans));
    let status = slow[0]
        .attr("rpc.grpc.status_code")
        .map(|c| c.as_i64().expect("integer status"));
    assert!(
        matches!(status, None | Some(code::DEADLINE_EXCEEDED)),
        "a Slow span must carry 4 or no status:\n{}",
        span::show(spans)
    );
    status
}

fn check_calls(spans: &[Span], kind: &str, service: &str, want: &[Call], port: u16, ordered: bool) {
    assert_count(spans, want.len(), &format!("{} {kind} calls", want.len()));
    let got: Vec<Call> = spans
        .iter()
        .map(|s| Call {
            method: want
                .iter()
                .map(|c| c.method)
                .find(|m| s.name.ends_with(&format!("/{m}")))
                .unwrap_or_else(|| panic!("unexpected span name: {s}")),
            status: s
                .attr("rpc.grpc.status_code")
                .and_then(serde_json::Value::as_i64),
        })
        .collect();
    let (mut got_sorted, mut want_sorted) = (got.clone(), want.to_vec());
    if !ordered {
        got_sorted.sort();
        want_sorted.sort();
    }
    assert_eq!(
        got_sorted,
        want_sorted,
        "{kind} spans do not match the calls made:\n{}",
        span::show(spans)
    );
    for (span, call) in spans.iter().zip(&got) {
        check_grpc_span(span, kind, *call, port);
        assert_eq!(span.service, service, "service of {span}");
    }
}

/// The config for a server and a grpcio client, both selected by port.
fn config(server: &GrpcServer, client: &GrpcClient) -> String {
    let client_port = client.select_port.expect("a Python client listens");
    ports_config(&format!("{},{client_port}", server.port))
}

/// Waits until `pids` printed `n` spans in all, stops the agent, and checks nothing else was
/// instrumented.
fn stop_after(agent: Agent, pids: &[u32], n: usize) -> Vec<Span> {
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= n
    });
    let spans = agent.stop();
    super::assert_only_from(&spans, pids);
    spans
}

/// grpcio on both sides: three unary calls, a server stream of 5 messages, a client stream of
/// 7, a `NOT_FOUND` and an `INTERNAL`. Exactly 7 server and 7 client spans, in call order, each
/// with the method, `rpc.*`, the status code, `server.port`, its process and service.
#[test]
fn grpcio_unary_streaming_and_errors() {
    let _serial = util::serial();
    let server = GrpcServer::start(None);
    let mut client = GrpcClient::python(server.port, None);
    let agent = Agent::start(&config(&server, &client), &[]);
    run_mixed(&mut client);
    let spans = stop_after(agent, &[server.pid(), client.pid()], 2 * MIXED.len());
    let service = server.service();
    check_calls(
        &of_pid(&spans, server.pid()),
        "server",
        &service,
        &MIXED,
        server.port,
        true,
    );
    check_calls(
        &of_pid(&spans, client.pid()),
        "client",
        &client.service(),
        &MIXED,
        server.port,
        true,
    );
}

/// `n` unary calls in flight at once on one grpcio channel (one connection, interleaved
/// streams): exactly `n` server and `n` client spans, all `Unary` and OK.
fn concurrent_calls(n: usize) {
    let server = GrpcServer::start(None);
    let mut client = GrpcClient::python(server.port, None);
    let agent = Agent::start(&config(&server, &client), &[]);
    client.expect(&format!("concurrent {n}"), n, code::OK);
    let spans = stop_after(agent, &[server.pid(), client.pid()], 2 * n);
    let want = vec![call("Unary", code::OK); n];
    check_calls(
        &of_pid(&spans, server.pid()),
        "server",
        &server.service(),
        &want,
        server.port,
        false,
    );
    check_calls(
        &of_pid(&spans, client.pid()),
        "client",
        &client.service(),
        &want,
        server.port,
        false,
    );
}

/// 10 concurrent unary calls on one grpcio channel: 10 exact server and client spans.
#[test]
fn grpcio_concurrent_calls_on_one_channel() {
    let _serial = util::serial();
    concurrent_calls(10);
}

/// A call whose 200 ms deadline passes while the server sleeps 1 s: exactly 3 server and 3
/// client spans in call order, the `Slow` ones with `DEADLINE_EXCEEDED` (4) or no status as
/// the race between the two deadline timers went (see [`deadline_status`]); when the client's
/// span has 4, the server sent it, so the server's has 4 too. A unary call before and after
/// shows the channel and the spans around it are intact.
#[test]
fn grpcio_deadline_exceeded() {
    let _serial = util::serial();
    let server = GrpcServer::start(None);
    let mut client = GrpcClient::python(server.port, None);
    let agent = Agent::start(&config(&server, &client), &[]);
    client.expect("unary 1", 1, code::OK);
    client.expect("slow 1000 200", 1, code::DEADLINE_EXCEEDED);
    // The server's handler ends its sleep; then one more call on the same channel.
    std::thread::sleep(Duration::from_millis(900));
    client.expect("unary 1", 1, code::OK);
    let spans = stop_after(agent, &[server.pid(), client.pid()], 6);
    let ok = call("Unary", code::OK);
    let (server_spans, client_spans) = (of_pid(&spans, server.pid()), of_pid(&spans, client.pid()));
    let (server_slow, client_slow) = (
        deadline_status(&server_spans),
        deadline_status(&client_spans),
    );
    assert!(
        client_slow.is_none() || server_slow == client_slow,
        "the client saw the server's status, so the server's span has it:\n{}",
        span::show(&spans)
    );
    for (spans, kind, service, slow) in [
        (&server_spans, "server", server.service(), server_slow),
        (&client_spans, "client", client.service(), client_slow),
    ] {
        let want = [
            ok,
            Call {
                method: "Slow",
                status: slow,
            },
            ok,
        ];
        check_calls(spans, kind, &service, &want, server.port, true);
    }
}

/// A Node `@grpc/grpc-js` client (selected by `exe_path: "*/node"`, started after the agent)
/// against the grpcio server: 3 unary calls, 10 concurrent ones, a server stream, a client
/// stream, `NOT_FOUND`, `INTERNAL`, and a deadline. Exactly 18 spans on each side with the same
/// methods and codes; the deadline's spans carry 4 or no status as in [`deadline_status`].
#[test]
fn node_grpc_js_client() {
    let _serial = util::serial();
    let server = GrpcServer::start(None);
    let config = format!(
        "{}    - exe_path: \"*/node\"\n",
        ports_config(&server.port.to_string())
    );
    let agent = Agent::start(&config, &[]);
    let mut client = GrpcClient::node(server.port, None);
    client.expect("unary 3", 3, code::OK);
    client.expect("concurrent 10", 10, code::OK);
    let stream = client.expect("server_stream 4", 1, code::OK);
    assert_eq!(stream.json["messages"], 4, "{}", stream.json);
    let upload = client.expect("client_stream 6", 1, code::OK);
    assert_eq!(upload.json["reply"], "6", "{}", upload.json);
    client.expect("missing", 1, code::NOT_FOUND);
    client.expect("broken", 1, code::INTERNAL);
    client.expect("slow 1000 200", 1, code::DEADLINE_EXCEEDED);
    let pids = [server.pid(), client.pid()];
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= 36
    });
    // Other Node processes on the machine are legitimately selected too: only ours count,
    // and nothing but Node and our server may show up.
    let spans = agent.stop();
    let strays: Vec<Span> = spans
        .iter()
        .filter(|s| !pids.contains(&s.pid) && s.service != "node")
        .cloned()
        .collect();
    assert!(strays.is_empty(), "strays:\n{}", span::show(&strays));
    let mut want = vec![call("Unary", code::OK); 13];
    want.extend([
        call("ServerStream", code::OK),
        call("ClientStream", code::OK),
        call("Missing", code::NOT_FOUND),
        call("Broken", code::INTERNAL),
    ]);
    let (server_spans, client_spans) = (of_pid(&spans, server.pid()), of_pid(&spans, client.pid()));
    let (server_slow, client_slow) = (
        deadline_status(&server_spans),
        deadline_status(&client_spans),
    );
    assert!(
        client_slow.is_none() || server_slow == client_slow,
        "the client saw the server's status, so the server's span has it:\n{}",
        span::show(&spans)
    );
    let mut server_want = want.clone();
    server_want.push(Call {
        method: "Slow",
        status: server_slow,
    });
    want.push(Call {
        method: "Slow",
        status: client_slow,
    });
    check_calls(
        &server_spans,
        "server",
        &server.service(),
        &server_want,
        server.port,
        false,
    );
    check_calls(&client_spans, "client", "node", &want, server.port, false);
}

/// The spans of `pid` received over OTLP (by the `process.pid` resource attribute).
fn otlp_of_pid(spans: &[OtlpSpan], pid: u32) -> Vec<OtlpSpan> {
    spans
        .iter()
        .filter(|s| {
            s.resource("process.pid")
                .and_then(serde_json::Value::as_u64)
                == Some(u64::from(pid))
        })
        .cloned()
        .collect()
}

/// Span status over OTLP per the RPC semantic conventions: a client span is ERROR for any
/// status but OK; a server span only for `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`,
/// `UNAVAILABLE` and `DATA_LOSS` (so `NOT_FOUND` served is not an error). grpcio client: OK,
/// `NOT_FOUND`, `INTERNAL` and a deadline (`DEADLINE_EXCEEDED` is an error on both sides; a span
/// without a status code, see [`deadline_status`], is unset).
#[test]
fn grpc_span_status_over_otlp() {
    let _serial = util::serial();
    let receiver = OtlpReceiver::start();
    let server = GrpcServer::start(None);
    let mut client = GrpcClient::python(server.port, None);
    let config = config(&server, &client).replace("trace_printer: json\n", "");
    let endpoint = format!("http://127.0.0.1:{}", receiver.http_port);
    let agent = Agent::start(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    client.expect("unary 1", 1, code::OK);
    client.expect("missing", 1, code::NOT_FOUND);
    client.expect("broken", 1, code::INTERNAL);
    client.expect("slow 1000 200", 1, code::DEADLINE_EXCEEDED);
    let pids = [server.pid(), client.pid()];
    receiver.wait_for(SPAN_WAIT, |s| {
        pids.iter().map(|&p| otlp_of_pid(s, p).len()).sum::<usize>() >= 8
    });
    agent.stop();
    let all = receiver.spans();
    let show = |spans: &[OtlpSpan]| {
        spans
            .iter()
            .map(|s| s.json.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let status_of = |pid: u32, kind: &str| -> Vec<(String, Option<i64>, String)> {
        let mut v: Vec<(String, Option<i64>, String)> = otlp_of_pid(&all, pid)
            .iter()
            .map(|s| {
                assert_eq!(s.field("kind"), kind, "{}", s.json);
                assert_eq!(s.str_attr("rpc.system"), "grpc", "{}", s.json);
                (
                    s.field("name").to_owned(),
                    s.attr("rpc.grpc.status_code")
                        .map(|c| c.as_i64().expect("rpc.grpc.status_code is an int_value")),
                    s.field("status").to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let row = |method: &str, code: Option<i64>, status: &str| {
        (format!("{SERVICE}/{method}"), code, status.to_owned())
    };
    let (unset, error) = ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR");
    // The deadline call, on either side: DEADLINE_EXCEEDED is an error, no status (the reset
    // won the race, see `deadline_status`) is unset.
    let deadline_rows = [row("Slow", None, unset), row("Slow", Some(4), error)];
    let server_rows = status_of(server.pid(), "SPAN_KIND_SERVER");
    let client_rows = status_of(client.pid(), "SPAN_KIND_CLIENT");
    for (rows, who) in [(&server_rows, "server"), (&client_rows, "client")] {
        assert!(
            rows.len() == 4 && deadline_rows.contains(&rows[2]),
            "grpcio {who}'s deadline span: {:?}\n{}",
            rows.get(2),
            show(&all)
        );
    }
    assert_eq!(
        [&server_rows[..2], &server_rows[3..]].concat(),
        vec![
            row("Broken", Some(13), error),
            row("Missing", Some(5), unset),
            row("Unary", Some(0), unset),
        ],
        "server spans:\n{}",
        show(&all)
    );
    assert_eq!(
        [&client_rows[..2], &client_rows[3..]].concat(),
        vec![
            row("Broken", Some(13), error),
            row("Missing", Some(5), error),
            row("Unary", Some(0), unset),
        ],
        "grpcio client spans:\n{}",
        show(&all)
    );
}

/// What a call made on a connection the agent joined late must look like: its true method,
/// path and sizes where the span carries them.
struct Expected {
    method: &'static str,
    request_body: i64,
    response_body: i64,
    grpc_status: i64,
}

/// Checks that `span` says nothing wrong about `call` (a field is either absent or right) and
/// returns whether the gRPC method (or the path) was known.
fn check_joined_span(span: &Span, kind: &str, call: &Expected, port: u16) -> bool {
    assert_eq!(span.kind, kind, "kind of {span}");
    let path = format!("/{SERVICE}/{}", call.method);
    assert_eq!(span.int_attr("server.port"), i64::from(port), "{span}");
    assert_eq!(span.str_attr("network.protocol.version"), "2", "{span}");
    if span.has_attr("rpc.system") {
        check_grpc_span(
            span,
            kind,
            Call {
                method: call.method,
                status: span
                    .has_attr("rpc.grpc.status_code")
                    .then_some(call.grpc_status),
            },
            port,
        );
        return true;
    }
    // Not recognised as gRPC (its content-type was in the HPACK table before the agent came):
    // an HTTP/2 span, whose every attribute must still be true.
    if span.has_attr("http.request.method") {
        assert_eq!(span.str_attr("http.request.method"), "POST", "{span}");
        assert_eq!(span.name, "POST", "name of {span}");
    } else {
        assert_eq!(span.name, "HTTP", "name of {span}");
    }
    if let Some(code) = span.attr("http.response.status_code") {
        assert_eq!(code, 200, "gRPC answers 200: {span}");
    }
    if span.has_attr("http.request.body.size") {
        assert_eq!(
            span.int_attr("http.request.body.size"),
            call.request_body,
            "{span}"
        );
    }
    if span.has_attr("http.response.body.size") {
        assert_eq!(
            span.int_attr("http.response.body.size"),
            call.response_body,
            "{span}"
        );
    }
    let url = format!("http://127.0.0.1:{port}{path}");
    match kind {
        "server" => span.attr("url.path").is_some_and(|p| {
            assert_eq!(p, path.as_str(), "url.path of {span}");
            true
        }),
        _ => span.attr("url.full").is_some_and(|u| {
            assert_eq!(u, url.as_str(), "url.full of {span}");
            true
        }),
    }
}

/// A grpcio channel whose connection (and HPACK tables) started before the agent: three unary
/// calls and a `NOT_FOUND` before, then 5 unary calls, `NOT_FOUND`, `INTERNAL` and a server stream
/// of 3 after the agent is ready, on the same connection. Exactly 8 server and 8 client spans,
/// and none carries a wrong value: fields that were indexed in the unseen table (the repeated
/// paths, `content-type`) are left out, so those calls may show as plain HTTP/2 `POST` spans;
/// the paths sent for the first time after the join (`Broken`, `ServerStream`) are known.
/// Nothing is counted in `mop_parse_errors_total{protocol="http2"}` for this: a late join is
/// not a parse error.
#[test]
fn grpcio_channel_joined_mid_stream() {
    let _serial = util::serial();
    let server = GrpcServer::start(None);
    let mut client = GrpcClient::python(server.port, None);
    client.expect("unary 3", 3, code::OK);
    client.expect("missing", 1, code::NOT_FOUND);
    let (prometheus, metrics_port) = metrics::config_block();
    let agent = Agent::start(&format!("{prometheus}{}", config(&server, &client)), &[]);
    client.expect("unary 5", 5, code::OK);
    client.expect("missing", 1, code::NOT_FOUND);
    client.expect("broken", 1, code::INTERNAL);
    client.expect("server_stream 3", 1, code::OK);
    let pids = [server.pid(), client.pid()];
    agent.wait_for_spans(SPAN_WAIT, |s| {
        s.iter().filter(|s| pids.contains(&s.pid)).count() >= 16
    });
    let scrape = metrics::scrape(metrics_port);
    let spans = agent.stop();
    super::assert_only_from(&spans, &pids);
    // gRPC framing: 5 bytes of prefix per message; "hello", "?", "!", "3"; 3 replies of 10.
    let unary = Expected {
        method: "Unary",
        request_body: 10,
        response_body: 10,
        grpc_status: 0,
    };
    let calls = [
        &unary,
        &unary,
        &unary,
        &unary,
        &unary,
        &Expected {
            method: "Missing",
            request_body: 6,
            response_body: 0,
            grpc_status: 5,
        },
        &Expected {
            method: "Broken",
            request_body: 6,
            response_body: 0,
            grpc_status: 13,
        },
        &Expected {
            method: "ServerStream",
            request_body: 6,
            response_body: 45,
            grpc_status: 0,
        },
    ];
    for (pid, kind) in [(server.pid(), "server"), (client.pid(), "client")] {
        let ours = of_pid(&spans, pid);
        assert_count(&ours, calls.len(), &format!("{kind} spans after the join"));
        let known: Vec<bool> = ours
            .iter()
            .zip(calls)
            .map(|(s, c)| check_joined_span(s, kind, c, server.port))
            .collect();
        assert!(
            known[6] && known[7],
            "paths first sent after the join must be known ({kind}):\n{}",
            span::show(&ours)
        );
    }
    let errors = scrape.expect("mop_parse_errors_total", &[("protocol", "http2")]);
    assert!(
        errors == 0.0,
        "{errors} HTTP/2 parse errors for a late join"
    );
}
