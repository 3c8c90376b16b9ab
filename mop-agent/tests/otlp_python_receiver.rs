//! The exporters against a real OTLP receiver (`PyPI` `opentelemetry-proto` + `grpcio`,
//! `test/peers/otlp_receiver.py`), over gRPC and HTTP/protobuf: every span arrives with its ids
//! and typed attributes, histogram counts are exact, and a receiver that fails its first
//! requests loses nothing.

#![expect(
    unused_crate_dependencies,
    reason = "an integration test uses a few of the crate's dependencies"
)]

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::{Receiver, wait_until};
use mop_agent::{
    export::{
        ExportSettings, Exporters, MetricsPushSettings,
        otlp::{Compression, OtlpSettings, Protocol},
        synthetic::{grpc_client_span, http_server_span, resource},
    },
    metrics::MetricsSettings,
    span::model::Span,
    telemetry::{DropReason, Exporter, SelfMetrics, Signal},
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn otlp(receiver: &Receiver, protocol: Protocol, signal: &str) -> OtlpSettings {
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://127.0.0.1:{}", receiver.grpc_port),
        Protocol::HttpProtobuf => format!("http://127.0.0.1:{}/v1/{signal}", receiver.http_port),
    };
    let mut s = OtlpSettings::new(endpoint, protocol);
    s.batch.timeout = Duration::from_millis(100);
    s.batch.max_items = 64;
    s.retry.initial_backoff = Duration::from_millis(20);
    s.retry.max_backoff = Duration::from_millis(200);
    s.compression = Compression::Gzip;
    s.headers = vec![("x-mop-test".into(), "yes".into())];
    s
}

/// 150 HTTP spans of `shop`, 50 of `api`, 100 gRPC client spans of `cli`.
fn workload() -> Vec<Arc<Span>> {
    let (shop, api, cli) = (resource("shop", 1), resource("api", 2), resource("cli", 3));
    let mut spans = Vec::new();
    spans.extend((0..150).map(|i| Arc::new(http_server_span(i, &shop))));
    spans.extend((150..200).map(|i| Arc::new(http_server_span(i, &api))));
    spans.extend((200..300).map(|i| Arc::new(grpc_client_span(i, &cli))));
    spans
}

async fn run(
    protocol: Protocol,
    fail_first: usize,
) -> (Receiver, Arc<SelfMetrics>, Vec<Arc<Span>>) {
    let receiver = Receiver::start(fail_first);
    let settings = ExportSettings {
        traces: Some(otlp(&receiver, protocol, "traces")),
        metrics: Some(MetricsPushSettings {
            otlp: otlp(&receiver, protocol, "metrics"),
            interval: Duration::from_millis(300),
            red: MetricsSettings::default(),
        }),
        ..ExportSettings::default()
    };
    let self_metrics = Arc::new(SelfMetrics::default());
    let (_ready_tx, ready) = watch::channel(true);
    let cancel = CancellationToken::new();
    let (sink, exporters) =
        Exporters::start(settings, Arc::clone(&self_metrics), ready, cancel.clone())
            .await
            .unwrap();
    let spans = workload();
    for span in &spans {
        sink.send(Arc::clone(span));
    }
    let arrived = wait_until(Duration::from_secs(20), || {
        receiver.records("span").len() >= spans.len()
    })
    .await;
    assert!(
        arrived,
        "only {} of {} spans arrived",
        receiver.records("span").len(),
        spans.len()
    );
    // Let at least one periodic push happen, then shut down (final push).
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::time::timeout(Duration::from_secs(15), exporters.shutdown())
        .await
        .unwrap();
    (receiver, self_metrics, spans)
}

fn check_spans(receiver: &Receiver, spans: &[Arc<Span>], transport: &str) {
    let got = receiver.records("span");
    let by_id: HashMap<&str, &Value> = got
        .iter()
        .map(|v| (v["span_id"].as_str().unwrap(), v))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "no span lost or duplicated");
    for span in spans {
        let v = by_id[span.span_id.to_hex().as_str()];
        assert_eq!(v["transport"], transport);
        assert_eq!(v["trace_id"], span.trace_id.to_hex());
        assert_eq!(
            v["parent_span_id"],
            span.parent_span_id.map(|p| p.to_hex()).unwrap_or_default()
        );
        assert_eq!(v["name"], span.name);
        assert_eq!(v["kind"], span.kind.as_str());
        assert_eq!(v["start_unix_nano"], span.start_unix_nano);
        assert_eq!(v["scope"], "mop-agent");
        assert_eq!(v["resource"]["service.name"], span.resource.service_name);
        let attrs = &v["attributes"];
        assert_eq!(attrs["server.port"], span.attributes.server_port.unwrap());
        let error = v["status_code"] == 2;
        assert_eq!(
            error,
            span.status == mop_agent::span::model::SpanStatus::Error,
            "{v}"
        );
        if let Some(rpc) = &span.attributes.rpc {
            assert_eq!(attrs["rpc.method"], rpc.method);
            assert_eq!(attrs["rpc.grpc.status_code"], rpc.grpc_status_code.unwrap());
            // gRPC spans carry the RPC conventions, not the HTTP ones.
            assert!(attrs.get("http.response.status_code").is_none(), "{attrs}");
            assert!(attrs.get("http.request.body.size").is_none(), "{attrs}");
        } else {
            let status = span.attributes.http_response_status_code.unwrap();
            assert!(
                attrs["http.response.status_code"].is_i64(),
                "status codes are ints: {attrs}"
            );
            assert_eq!(attrs["http.response.status_code"], status);
            assert_eq!(
                attrs["http.request.body.size"],
                span.attributes.http_request_body_size.unwrap()
            );
            assert_eq!(attrs["http.route"], "/users/{id}");
            assert_eq!(attrs["url.path"], span.attributes.url_path.clone().unwrap());
        }
    }
}

/// The latest cumulative count per (service, metric, status attribute).
fn latest_counts(receiver: &Receiver) -> HashMap<(String, String, i64), u64> {
    let mut latest: HashMap<(String, String, String), (u64, u64, i64)> = HashMap::new();
    for p in receiver.records("histogram_point") {
        assert_eq!(p["temporality"], 2, "cumulative");
        let buckets: u64 = p["bucket_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(
            buckets,
            p["count"].as_u64().unwrap(),
            "buckets add up to the count"
        );
        let status = p["attributes"]["http.response.status_code"]
            .as_i64()
            .or_else(|| p["attributes"]["rpc.grpc.status_code"].as_i64())
            .unwrap();
        let key = (
            p["resource"]["service.name"].as_str().unwrap().to_owned(),
            p["metric"].as_str().unwrap().to_owned(),
            p["attributes"].to_string(),
        );
        let entry = (
            p["time_unix_nano"].as_u64().unwrap(),
            p["count"].as_u64().unwrap(),
            status,
        );
        let slot = latest.entry(key).or_insert(entry);
        if entry.0 >= slot.0 {
            *slot = entry;
        }
    }
    latest
        .into_iter()
        .map(|((service, metric, _), (_, count, status))| ((service, metric, status), count))
        .collect()
}

fn check_metrics(receiver: &Receiver) {
    let counts = latest_counts(receiver);
    let get = |s: &str, m: &str, code: i64| counts.get(&(s.into(), m.into(), code)).copied();
    assert_eq!(
        get("shop", "http.server.request.duration", 200),
        Some(135),
        "{counts:?}"
    );
    assert_eq!(get("shop", "http.server.request.duration", 500), Some(15));
    assert_eq!(get("api", "http.server.request.duration", 200), Some(45));
    assert_eq!(get("api", "http.server.request.duration", 500), Some(5));
    assert_eq!(
        get("shop", "http.server.response.body.size", 200),
        Some(135)
    );
    assert_eq!(get("cli", "rpc.client.call.duration", 0), Some(80));
    assert_eq!(get("cli", "rpc.client.call.duration", 14), Some(20));
    let point = receiver
        .records("histogram_point")
        .into_iter()
        .find(|p| p["metric"] == "http.server.request.duration")
        .unwrap();
    assert_eq!(point["unit"], "s");
    let bounds: Vec<f64> = point["explicit_bounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect();
    assert_eq!(bounds, mop_agent::metrics::DEFAULT_DURATION_BUCKETS);
}

fn exporter(protocol: Protocol) -> Exporter {
    match protocol {
        Protocol::Grpc => Exporter::OtlpGrpc,
        Protocol::HttpProtobuf => Exporter::OtlpHttp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_delivers_spans_and_exact_histograms() {
    let (receiver, metrics, spans) = run(Protocol::Grpc, 0).await;
    check_spans(&receiver, &spans, "grpc");
    check_metrics(&receiver);
    let requests = receiver.records("request");
    assert!(
        requests
            .iter()
            .any(|r| r["metadata"]["x-mop-test"] == "yes"),
        "headers arrive as metadata"
    );
    assert_eq!(
        metrics
            .export(Exporter::OtlpGrpc, Signal::Traces)
            .exported(),
        300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_delivers_spans_and_exact_histograms() {
    let (receiver, metrics, spans) = run(Protocol::HttpProtobuf, 0).await;
    check_spans(&receiver, &spans, "http");
    check_metrics(&receiver);
    let requests = receiver.records("request");
    let traces = requests.iter().find(|r| r["signal"] == "traces").unwrap();
    assert_eq!(traces["path"], "/v1/traces");
    assert_eq!(traces["content_type"], "application/x-protobuf");
    assert_eq!(traces["content_encoding"], "gzip");
    assert_eq!(traces["headers"]["x-mop-test"], "yes");
    assert!(
        requests
            .iter()
            .any(|r| r["signal"] == "metrics" && r["path"] == "/v1/metrics")
    );
    assert_eq!(
        metrics
            .export(Exporter::OtlpHttp, Signal::Traces)
            .exported(),
        300
    );
}

async fn recovers(protocol: Protocol, transport: &str) {
    let (receiver, metrics, spans) = run(protocol, 4).await;
    check_spans(&receiver, &spans, transport);
    check_metrics(&receiver);
    let failed = receiver
        .records("request")
        .iter()
        .filter(|r| r["status"] == "failed")
        .count();
    assert_eq!(
        failed, 4,
        "the receiver refused exactly its first 4 requests"
    );
    let e = exporter(protocol);
    let (traces, points) = (
        metrics.export(e, Signal::Traces),
        metrics.export(e, Signal::Metrics),
    );
    assert_eq!(
        traces.retries() + points.retries(),
        4,
        "every refusal was retried"
    );
    assert_eq!(traces.errors() + points.errors(), 4);
    assert_eq!(traces.exported(), 300);
    for reason in DropReason::ALL {
        assert_eq!(traces.dropped(reason), 0, "{reason:?}");
        assert_eq!(points.dropped(reason), 0, "{reason:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_then_recovery_loses_nothing() {
    recovers(Protocol::Grpc, "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_then_recovery_loses_nothing() {
    recovers(Protocol::HttpProtobuf, "http").await;
}

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1 (openssl CLI):
/// (CA certificate, server certificate, server key).
fn test_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed (cargo xtask setup)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=mop-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_use_tls_with_the_ca_file() {
    let dir = common::TempDir::new("tls");
    let (ca, cert, key) = test_pki(&dir.0);
    let receiver = Receiver::start_tls(&cert, &key);
    for (protocol, endpoint, transport) in [
        (
            Protocol::Grpc,
            format!("https://localhost:{}", receiver.grpc_port),
            "grpc",
        ),
        (
            Protocol::HttpProtobuf,
            format!("https://localhost:{}/v1/traces", receiver.http_port),
            "http",
        ),
    ] {
        let mut otlp = OtlpSettings::new(endpoint, protocol);
        otlp.batch.timeout = Duration::from_millis(100);
        otlp.ca_file = Some(ca.clone());
        let settings = ExportSettings {
            traces: Some(otlp),
            ..ExportSettings::default()
        };
        let self_metrics = Arc::new(SelfMetrics::default());
        let (_ready_tx, ready) = watch::channel(true);
        let (sink, exporters) = Exporters::start(
            settings,
            Arc::clone(&self_metrics),
            ready,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let r = resource("tls", 9);
        for seq in 0..20 {
            sink.send(Arc::new(http_server_span(seq, &r)));
        }
        tokio::time::timeout(Duration::from_secs(15), exporters.shutdown())
            .await
            .unwrap();
        let got = receiver
            .records("span")
            .into_iter()
            .filter(|s| s["transport"] == transport)
            .count();
        assert_eq!(got, 20, "{transport} over TLS");
        let stats = self_metrics.export(exporter(protocol), Signal::Traces);
        assert_eq!((stats.exported(), stats.errors()), (20, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let dir = common::TempDir::new("tls-untrusted");
    let (_ca, cert, key) = test_pki(&dir.0);
    let receiver = Receiver::start_tls(&cert, &key);
    let mut otlp = OtlpSettings::new(
        format!("https://localhost:{}/v1/traces", receiver.http_port),
        Protocol::HttpProtobuf,
    );
    otlp.batch.timeout = Duration::from_millis(50);
    otlp.retry.enabled = false;
    let settings = ExportSettings {
        traces: Some(otlp),
        shutdown_timeout: Duration::from_secs(2),
        ..ExportSettings::default()
    };
    let self_metrics = Arc::new(SelfMetrics::default());
    let (_ready_tx, ready) = watch::channel(true);
    let (sink, exporters) = Exporters::start(
        settings,
        Arc::clone(&self_metrics),
        ready,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    sink.send(Arc::new(http_server_span(0, &resource("tls", 9))));
    exporters.shutdown().await;
    assert!(receiver.records("span").is_empty());
    let stats = self_metrics.export(Exporter::OtlpHttp, Signal::Traces);
    assert_eq!((stats.exported(), stats.errors()), (0, 1));
}

/// The receiver process dies with a request in flight (the connection resets under it) and
/// comes back on the same ports: that batch is retried, the spans sent meanwhile wait in the
/// queue, and everything arrives.
async fn survives_a_receiver_restart(protocol: Protocol) {
    let dir = common::TempDir::new("restart");
    let out = dir.0.join("received.jsonl");
    // The first request hangs: it is in flight when the receiver dies.
    let mut receiver = Receiver::start_stalling(out.clone());
    let mut otlp = otlp(&receiver, protocol, "traces");
    otlp.batch.max_items = 50;
    otlp.batch.max_in_flight = 1;
    let settings = ExportSettings {
        traces: Some(otlp),
        ..ExportSettings::default()
    };
    let self_metrics = Arc::new(SelfMetrics::default());
    let (_ready_tx, ready) = watch::channel(true);
    let (sink, exporters) = Exporters::start(
        settings,
        Arc::clone(&self_metrics),
        ready,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let r = resource("restart", 5);
    for seq in 0..100 {
        sink.send(Arc::new(http_server_span(seq, &r)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.records("span").is_empty(),
        "the first batch is stuck in flight"
    );
    let (grpc_port, http_port) = (receiver.grpc_port, receiver.http_port);
    drop(receiver); // Killed: the connection dies under the in-flight request.
    for seq in 100..200 {
        sink.send(Arc::new(http_server_span(seq, &r)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver = Receiver::start_on(0, grpc_port, http_port, Some(out));
    let all = wait_until(Duration::from_secs(15), || {
        receiver.records("span").len() >= 200
    })
    .await;
    tokio::time::timeout(Duration::from_secs(15), exporters.shutdown())
        .await
        .unwrap();
    let stats = self_metrics.export(exporter(protocol), Signal::Traces);
    assert!(
        all,
        "{} of 200 spans arrived",
        receiver.records("span").len()
    );
    assert_eq!(stats.exported(), 200);
    assert_eq!(stats.dropped(DropReason::ExportFailed), 0);
    assert!(stats.retries() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_survives_a_receiver_restart() {
    survives_a_receiver_restart(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_survives_a_receiver_restart() {
    survives_a_receiver_restart(Protocol::HttpProtobuf).await;
}
