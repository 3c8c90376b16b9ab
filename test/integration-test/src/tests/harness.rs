//! The harness itself, without the agent: each peer behaves the way the agent tests assume, so
//! that a failure there points at the agent and not at a peer.

use std::time::Duration;

use super::{MEASURED, Req, body_file, check_curl, curl_reqs, raw_get};
use crate::{
    bpf,
    peers::{
        curl::{Transfer, curl},
        nginx::{
            BIG_PATH, BIG_SIZE, MISSING_PATH, Nginx, NginxOptions, OK_LEN, OK_PATH, SMALL_PATH,
            SMALL_SIZE, UPLOAD_LEN, UPLOAD_PATH,
        },
        python::{FILE_PATH, FILE_SIZE, PythonServer},
        raw::{self, RawResponse},
    },
    util::{self, TempDir},
};

/// nginx: every location, keep-alive, HEAD, HTTP/1.0, POST bodies, sendfile, reuseport workers
/// and the executable name.
#[test]
fn nginx_peer() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let nginx = Nginx::start_with(NginxOptions {
        workers: 4,
        reuseport: true,
        ..NginxOptions::default()
    });
    assert_eq!(nginx.worker_pids().len(), 4);
    assert!(!nginx.worker_pids().contains(&nginx.master_pid()));
    assert_eq!(nginx.service(), "nginx");
    let reqs = [
        Req::get(SMALL_PATH, 200, SMALL_SIZE),
        Req::get("/ok?x=1", 200, OK_LEN),
        Req::get(MISSING_PATH, 404, MEASURED),
        Req::head(SMALL_PATH, 200),
        Req::post(UPLOAD_PATH, 70_000, 200, UPLOAD_LEN),
        Req::get(BIG_PATH, 200, BIG_SIZE),
        Req::get("/users/42", 200, 5),
    ];
    let (run, _) = curl_reqs(&nginx.url(""), &reqs, &dir, |t| t);
    assert_eq!(run.connections(), 1);
    assert!(run.start_unix_nano < run.end_unix_nano);
    assert!(run.results.iter().all(|r| r.time_total_nanos > 0));
    let (run, _) = curl_reqs(&nginx.url(""), &reqs[..2], &dir, Transfer::http10);
    assert_eq!(run.connections(), 2);
}

/// The raw client: a pipeline of three and byte-by-byte writes.
#[test]
fn raw_client() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let port = nginx.port;
    let lines = [
        raw_get("GET", SMALL_PATH, port),
        raw_get("HEAD", SMALL_PATH, port),
        raw_get("GET", OK_PATH, port),
    ];
    let written: Vec<&str> = lines.iter().map(String::as_str).collect();
    let exchange = raw::pipelined(port, &written);
    assert_eq!(
        exchange.responses,
        [
            RawResponse {
                status: 200,
                body_len: 1234
            },
            RawResponse {
                status: 200,
                body_len: 0
            },
            RawResponse {
                status: 200,
                body_len: 3
            },
        ]
    );
    let one = raw_get("GET", OK_PATH, port);
    let exchange = raw::split_writes(port, &[one.as_bytes()], 1, Duration::from_millis(1));
    assert_eq!(
        exchange.responses,
        [RawResponse {
            status: 200,
            body_len: 3
        }]
    );
    assert!(exchange.end_unix_nano - exchange.start_unix_nano > 40_000_000);
}

/// Python: `http.server` closes each connection; `http11_server.py` keeps it, chunks, reads
/// bodies after `100 Continue`, and passes its environment on.
#[test]
fn python_peers() {
    let _serial = util::serial();
    let dir = TempDir::new("bodies");
    let py = PythonServer::http_server();
    assert!(py.service().starts_with("python"), "{}", py.service());
    let reqs = [
        Req::get(FILE_PATH, 200, FILE_SIZE),
        Req::get("/nope", 404, MEASURED),
    ];
    let (run, _) = curl_reqs(&py.url(""), &reqs, &dir, |t| t);
    assert_eq!(run.connections(), 2);

    let py = PythonServer::http11(&[("OTEL_SERVICE_NAME", "inventory")]);
    let environ = std::fs::read(format!("/proc/{}/environ", py.pid())).expect("environ");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"OTEL_SERVICE_NAME=inventory")
    );
    let body = body_file(&dir, 1024 * 1024);
    let reqs = [
        Req::get("/chunked?chunks=5&size=1000", 200, 5000),
        Req::post(UPLOAD_PATH, 1024 * 1024, 200, 3),
        Req::get(OK_PATH, 200, 3),
    ];
    let run = curl(&[
        Transfer::get(py.url(reqs[0].target)),
        Transfer::post_expect_continue(py.url(UPLOAD_PATH), &body),
        Transfer::get(py.url(OK_PATH)),
    ]);
    check_curl(&run, &reqs);
    assert_eq!(run.connections(), 1);
    let chunked = raw::pipelined(
        py.port,
        &[&raw_get("GET", "/chunked?chunks=3&size=7", py.port)],
    );
    assert_eq!(
        chunked.responses,
        [RawResponse {
            status: 200,
            body_len: 21
        }]
    );
}

/// `bpftool` works and the fdinfo scan finds nothing held by a process without BPF fds.
#[test]
fn bpf_inspection() {
    let _serial = util::serial();
    let _ = bpf::programs();
    assert!(bpf::programs_held_by(std::process::id()).is_empty());
}

/// The OTLP receiver decodes what a real OTLP/HTTP and OTLP/gRPC client sends (the Python
/// `opentelemetry-proto` types, posted with urllib and sent with a grpcio stub).
#[test]
fn otlp_receiver() {
    let _serial = util::serial();
    let receiver = crate::peers::otlp::OtlpReceiver::start();
    let script = r#"
import sys, urllib.request, grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts, trace_service_pb2_grpc as tsg
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.common.v1 import common_pb2
req = ts.ExportTraceServiceRequest()
rs = req.resource_spans.add()
rs.resource.attributes.add(key="process.pid", value=common_pb2.AnyValue(int_value=42))
span = rs.scope_spans.add().spans.add()
span.trace_id = bytes(range(16)); span.span_id = bytes(range(8)); span.name = "GET"
span.kind = trace_pb2.Span.SPAN_KIND_SERVER
span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
span.attributes.add(key="http.response.status_code", value=common_pb2.AnyValue(int_value=500))
urllib.request.urlopen(urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/v1/traces", data=req.SerializeToString(),
    headers={"Content-Type": "application/x-protobuf"}), timeout=10)
tsg.TraceServiceStub(grpc.insecure_channel(f"127.0.0.1:{sys.argv[2]}")).Export(req, timeout=10)
"#;
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(receiver.http_port.to_string())
        .arg(receiver.grpc_port.to_string())
        .status()
        .expect("python3");
    assert!(status.success());
    assert!(receiver.wait_for(Duration::from_secs(5), |s| s.len() == 2));
    let spans = receiver.spans();
    let transports: Vec<&str> = spans.iter().map(|s| s.field("transport")).collect();
    assert!(
        transports.contains(&"http") && transports.contains(&"grpc"),
        "{transports:?}"
    );
    for span in &spans {
        assert_eq!(span.field("status"), "STATUS_CODE_ERROR");
        assert_eq!(span.field("kind"), "SPAN_KIND_SERVER");
        assert_eq!(span.int_attr("http.response.status_code"), 500);
        assert_eq!(
            span.resource("process.pid")
                .and_then(serde_json::Value::as_u64),
            Some(42)
        );
        assert_eq!(span.field("trace_id"), "000102030405060708090a0b0c0d0e0f");
    }
}
