//! OTLP trace export to a real receiver: the endpoint rules, span status (which the JSON
//! printer does not carry), typed attributes, the resource, and the flush at shutdown.

use std::time::Duration;

use super::{SPAN_WAIT, ports_config};
use crate::{
    agent::Agent,
    peers::{
        curl::{Transfer, curl},
        nginx::{FAIL_PATH, MISSING_PATH, Nginx, OK_PATH},
        otlp::{OtlpReceiver, OtlpSpan},
    },
    util,
};

/// The spans of `pids` (by the `process.pid` resource attribute).
fn of_pids(spans: &[OtlpSpan], pids: &[u32]) -> Vec<OtlpSpan> {
    spans
        .iter()
        .filter(|s| {
            s.resource("process.pid")
                .and_then(serde_json::Value::as_u64)
                .is_some_and(|p| pids.iter().any(|&q| u64::from(q) == p))
        })
        .cloned()
        .collect()
}

fn show(spans: &[OtlpSpan]) -> String {
    spans
        .iter()
        .map(|s| s.json.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the resource of a span from `pid` whose executable is `exe`.
fn check_resource(span: &OtlpSpan, pid: u32, exe: &str) {
    let res = |key: &str| {
        span.resource(key)
            .unwrap_or_else(|| panic!("resource attribute `{key}` missing in {}", span.json))
    };
    assert_eq!(res("service.name"), exe, "service.name in {}", span.json);
    assert_eq!(
        res("process.pid").as_u64(),
        Some(u64::from(pid)),
        "process.pid (an int) in {}",
        span.json
    );
    assert_eq!(
        res("process.executable.name"),
        exe,
        "process.executable.name in {}",
        span.json
    );
    assert_eq!(
        res("telemetry.sdk.name"),
        "mop-agent",
        "telemetry.sdk.name in {}",
        span.json
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(res("host.name"), host.trim(), "host.name in {}", span.json);
    assert!(
        res("service.instance.id")
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "service.instance.id empty in {}",
        span.json
    );
}

/// OTLP/HTTP through the shared `OTEL_EXPORTER_OTLP_ENDPOINT` (the agent appends
/// `/v1/traces`): curl and nginx both instrumented, requests answered 200, 404 and 500. Server
/// spans are ERROR only for the 500, client spans for the 404 and the 500; status codes and
/// ports are integers; each resource names its process.
#[test]
fn otlp_http_status_and_resource() {
    let _serial = util::serial();
    let receiver = OtlpReceiver::start();
    let nginx = Nginx::start(1);
    let config = format!(
        "{}    - exe_path: \"*/curl\"\n",
        ports_config(&nginx.port.to_string())
    )
    .replace("trace_printer: json\n", "");
    let endpoint = format!("http://127.0.0.1:{}", receiver.http_port);
    let agent = Agent::start(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let paths = [OK_PATH, MISSING_PATH, FAIL_PATH];
    let run = curl(&paths.map(|p| Transfer::get(nginx.url(p))));
    let codes: Vec<i64> = run.results.iter().map(|r| r.http_code).collect();
    assert_eq!(codes, [200, 404, 500], "nginx's answers");
    let worker = nginx.worker_pids()[0];
    let pids = [worker, run.pid];
    receiver.wait_for(SPAN_WAIT, |s| of_pids(s, &pids).len() >= 6);
    let printed = agent.stop();
    assert!(
        printed.is_empty(),
        "the printer is disabled by default, yet spans were printed"
    );
    let all = receiver.spans();
    let spans = of_pids(&all, &pids);
    assert_eq!(
        spans.len(),
        6,
        "expected 3 client and 3 server spans:\n{}",
        show(&all)
    );
    for span in &spans {
        assert_eq!(
            span.json["path"], "/v1/traces",
            "OTLP/HTTP path: {}",
            span.json
        );
        let code = span.int_attr("http.response.status_code");
        let server = span.field("kind") == "SPAN_KIND_SERVER";
        let error = if server { code >= 500 } else { code >= 400 };
        let expected = if error {
            "STATUS_CODE_ERROR"
        } else {
            "STATUS_CODE_UNSET"
        };
        assert_eq!(span.field("status"), expected, "status of {}", span.json);
        assert_eq!(span.int_attr("server.port"), i64::from(nginx.port));
        assert_eq!(span.field("name"), "GET");
        if server {
            assert!(paths.contains(&span.str_attr("url.path")), "{}", span.json);
            check_resource(span, worker, "nginx");
        } else {
            assert_eq!(span.field("kind"), "SPAN_KIND_CLIENT", "{}", span.json);
            check_resource(span, run.pid, &util::which_name("curl"));
        }
    }
    let servers = spans
        .iter()
        .filter(|s| s.field("kind") == "SPAN_KIND_SERVER")
        .count();
    assert_eq!(servers, 3, "server spans:\n{}", show(&spans));
}

/// OTLP/gRPC through `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` with an `http://` (plaintext)
/// endpoint: the spans arrive over gRPC.
#[test]
fn otlp_grpc_plaintext() {
    let _serial = util::serial();
    let receiver = OtlpReceiver::start();
    let nginx = Nginx::start(1);
    let config = ports_config(&nginx.port.to_string()).replace("trace_printer: json\n", "");
    let endpoint = format!("http://127.0.0.1:{}", receiver.grpc_port);
    let agent = Agent::start(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    curl(&[
        Transfer::get(nginx.url(OK_PATH)),
        Transfer::get(nginx.url(OK_PATH)),
    ]);
    let workers = nginx.worker_pids().to_vec();
    receiver.wait_for(SPAN_WAIT, |s| of_pids(s, &workers).len() >= 2);
    agent.stop();
    let spans = of_pids(&receiver.spans(), &workers);
    assert_eq!(
        spans.len(),
        2,
        "expected 2 server spans:\n{}",
        show(&receiver.spans())
    );
    for span in &spans {
        assert_eq!(span.json["transport"], "grpc", "{}", span.json);
        assert_eq!(span.field("kind"), "SPAN_KIND_SERVER", "{}", span.json);
        assert_eq!(span.int_attr("http.response.status_code"), 200);
        check_resource(span, workers[0], "nginx");
    }
}

/// SIGTERM flushes what is queued: with a 60 s batch delay, a span that the printer already
/// showed reaches the OTLP receiver only because of the shutdown flush.
#[test]
fn sigterm_flushes_queued_spans() {
    let _serial = util::serial();
    let receiver = OtlpReceiver::start();
    let nginx = Nginx::start(1);
    let endpoint = format!("http://127.0.0.1:{}", receiver.http_port);
    let agent = Agent::start(
        &ports_config(&nginx.port.to_string()),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    );
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let workers = nginx.worker_pids().to_vec();
    assert!(
        agent.wait_for_spans(SPAN_WAIT, |s| s.iter().any(|s| workers.contains(&s.pid))),
        "the printer never showed the span"
    );
    assert!(
        of_pids(&receiver.spans(), &workers).is_empty(),
        "exported before the 60 s batch delay: the test cannot tell a flush from a batch"
    );
    let printed = agent.stop();
    assert_eq!(printed.len(), 1, "printed spans");
    // The agent has exited; the receiver may still be printing what it got.
    receiver.wait_for(Duration::from_secs(5), |s| !of_pids(s, &workers).is_empty());
    let exported = of_pids(&receiver.spans(), &workers);
    assert_eq!(exported.len(), 1, "exported spans:\n{}", show(&exported));
    assert_eq!(exported[0].field("span_id"), printed[0].span_id);
    assert_eq!(exported[0].field("trace_id"), printed[0].trace_id);
}
