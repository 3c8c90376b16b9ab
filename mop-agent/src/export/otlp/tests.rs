//! Encoding tests, and exporter tests against in-process tonic and axum receivers.

use std::{
    io::Read as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::any_value::Value,
    metrics::v1::metric,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{
    export::synthetic::{grpc_client_span, http_server_span, resource},
    metrics::{MetricsSettings, RedMetrics},
    span::model::Span,
    telemetry::{DropReason, Signal},
};

fn attr<'a>(attrs: &'a [opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> &'a Value {
    let kv = attrs
        .iter()
        .find(|kv| kv.key == key)
        .unwrap_or_else(|| panic!("no {key}"));
    kv.value.as_ref().unwrap().value.as_ref().unwrap()
}

#[test]
fn spans_encode_with_ids_kind_status_and_typed_attributes() {
    let r = resource("shop", 1);
    let server = Arc::new(http_server_span(9, &r));
    let client = Arc::new(grpc_client_span(3, &r));
    let req = encode::traces_request(&[Arc::clone(&server), Arc::clone(&client)]);
    assert_eq!(req.resource_spans.len(), 1);
    let scope = &req.resource_spans[0].scope_spans[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "mop-agent");
    assert_eq!(
        scope.scope.as_ref().unwrap().version,
        env!("CARGO_PKG_VERSION")
    );
    let s = &scope.spans[0];
    assert_eq!(s.trace_id, server.trace_id.0);
    assert_eq!(s.span_id, server.span_id.0);
    assert_eq!(s.parent_span_id, server.parent_span_id.unwrap().0);
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        s.status.as_ref().unwrap().code,
        2,
        "STATUS_CODE_ERROR for a 500"
    );
    assert_eq!(s.flags, 1);
    assert_eq!(s.start_time_unix_nano, server.start_unix_nano);
    assert_eq!(
        *attr(&s.attributes, "http.response.status_code"),
        Value::IntValue(500)
    );
    assert_eq!(*attr(&s.attributes, "server.port"), Value::IntValue(8080));
    assert_eq!(
        *attr(&s.attributes, "http.route"),
        Value::StringValue("/users/{id}".into())
    );
    let c = &scope.spans[1];
    assert_eq!(c.kind, 3, "SPAN_KIND_CLIENT");
    assert!(c.parent_span_id.is_empty(), "a root span has no parent id");
    assert_eq!(c.status.as_ref().unwrap().code, 0);
    assert_eq!(
        *attr(&c.attributes, "rpc.grpc.status_code"),
        Value::IntValue(0)
    );
    let res = req.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        *attr(&res.attributes, "service.name"),
        Value::StringValue("shop".into())
    );
    assert_eq!(
        *attr(&res.attributes, "service.namespace"),
        Value::StringValue("mop-test".into())
    );
    assert_eq!(*attr(&res.attributes, "process.pid"), Value::IntValue(1));
}

#[test]
fn one_resource_spans_per_distinct_resource() {
    let a = resource("a", 1);
    let a_again = resource("a", 1); // Equal contents, another Arc.
    let b = resource("b", 2);
    let spans: Vec<_> = [&a, &b, &a_again, &a, &b]
        .iter()
        .enumerate()
        .map(|(i, r)| Arc::new(http_server_span(i as u64, r)))
        .collect();
    let req = encode::traces_request(&spans);
    let groups: Vec<_> = req
        .resource_spans
        .iter()
        .map(|rs| {
            let name = attr(&rs.resource.as_ref().unwrap().attributes, "service.name").clone();
            (name, rs.scope_spans[0].spans.len())
        })
        .collect();
    assert_eq!(
        groups,
        [
            (Value::StringValue("a".into()), 3),
            (Value::StringValue("b".into()), 2)
        ]
    );
}

#[test]
fn metrics_encode_as_cumulative_histograms_per_service() {
    let red = RedMetrics::new(MetricsSettings::default(), Arc::default());
    let (shop, cli) = (resource("a", 1), resource("b", 2));
    for seq in 0..10 {
        red.record(&http_server_span(seq, &shop));
    }
    red.record(&grpc_client_span(0, &cli));
    let rms = encode::resource_metrics(&red.snapshot());
    assert_eq!(rms.len(), 2);
    let names: Vec<_> = rms[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "http.server.request.duration",
            "http.server.request.body.size",
            "http.server.response.body.size"
        ]
    );
    let m = &rms[0].scope_metrics[0].metrics[0];
    assert_eq!(m.unit, "s");
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("not a histogram")
    };
    assert_eq!(h.aggregation_temporality, 2, "cumulative");
    let total: u64 = h.data_points.iter().map(|p| p.count).sum();
    assert_eq!(total, 10);
    let p = &h.data_points[0];
    assert_eq!(p.explicit_bounds.len(), 14);
    assert_eq!(p.bucket_counts.len(), 15);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
    assert!(p.start_time_unix_nano > 0 && p.time_unix_nano >= p.start_time_unix_nano);
    assert_eq!(encode::data_points(&rms[0]), 6);
    assert_eq!(encode::data_points(&rms[1]), 1);
    assert_eq!(
        rms[1].scope_metrics[0].metrics[0].name,
        "rpc.client.call.duration"
    );
}

/// An in-process OTLP receiver (gRPC and HTTP) that records requests and fails on demand.
#[derive(Clone, Default)]
struct Fake {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    fail_first: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    reject: Arc<AtomicUsize>,
}

impl Fake {
    fn failing(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        n < self.fail_first.load(Ordering::SeqCst)
    }

    fn span_ids(&self) -> Vec<Vec<u8>> {
        let traces = self.traces.lock().unwrap();
        traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.span_id.clone())
            .collect()
    }

    fn trace_response(&self) -> ExportTraceServiceResponse {
        let rejected = self.reject.load(Ordering::SeqCst);
        ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap(),
                error_message: "too old".into(),
            }),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Fake {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.failing() {
            use tonic_types::{ErrorDetails, StatusExt as _};
            let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(10)));
            return Err(tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                "warming up",
                details,
            ));
        }
        self.headers
            .lock()
            .unwrap()
            .push(request.metadata().clone().into_headers());
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(self.trace_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for Fake {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn grpc_receiver(fake: &Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(fake.clone())
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .add_service(MetricsServiceServer::new(fake.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    format!("http://{addr}")
}

async fn http_receiver(fake: &Fake) -> String {
    async fn traces(
        axum::extract::State(fake): axum::extract::State<Fake>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        if fake.failing() {
            let mut h = HeaderMap::new();
            h.insert("retry-after", "0".parse().unwrap());
            return (StatusCode::SERVICE_UNAVAILABLE, h, Vec::new());
        }
        let mut raw = body.to_vec();
        if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .unwrap();
            raw = out;
        }
        let req = ExportTraceServiceRequest::decode(&raw[..]).unwrap();
        fake.headers.lock().unwrap().push(headers);
        fake.traces.lock().unwrap().push(req);
        (
            StatusCode::OK,
            HeaderMap::new(),
            fake.trace_response().encode_to_vec(),
        )
    }
    let app = axum::Router::new()
        .route("/custom/v1/traces", axum::routing::post(traces))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/custom/v1/traces")
}

fn settings(endpoint: String, protocol: Protocol) -> OtlpSettings {
    let mut s = OtlpSettings::new(endpoint, protocol);
    s.batch.timeout = Duration::from_millis(50);
    s.batch.max_items = 100;
    s.retry.initial_backoff = Duration::from_millis(10);
    s.retry.max_backoff = Duration::from_millis(50);
    s.timeout = Duration::from_secs(2);
    s
}

struct Running {
    tx: mpsc::Sender<Arc<Span>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<SelfMetrics>,
}

fn start(settings: &OtlpSettings) -> Running {
    let metrics = Arc::new(SelfMetrics::default());
    let exporter =
        OtlpExporter::<Traces>::new(&settings.validate().unwrap(), Arc::clone(&metrics)).unwrap();
    let (tx, rx) = mpsc::channel(10_000);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(exporter.run(rx, cancel.clone(), Duration::from_secs(5)));
    Running {
        tx,
        cancel,
        task,
        metrics,
    }
}

fn spans(n: u64) -> Vec<Arc<Span>> {
    let r = resource("shop", 1);
    (0..n).map(|i| Arc::new(http_server_span(i, &r))).collect()
}

async fn export_all(settings: &OtlpSettings, fake: &Fake, n: u64) -> Arc<SelfMetrics> {
    let run = start(settings);
    let sent = spans(n);
    for s in &sent {
        run.tx.try_send(Arc::clone(s)).unwrap();
    }
    for _ in 0..200 {
        if fake.span_ids().len() as u64 >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.cancel.cancel();
    run.task.await.unwrap();
    let mut got = fake.span_ids();
    got.sort();
    let mut want: Vec<_> = sent.iter().map(|s| s.span_id.0.to_vec()).collect();
    want.sort();
    assert_eq!(got, want, "every span arrives exactly once");
    run.metrics
}

#[tokio::test]
async fn grpc_exports_every_span_with_headers_and_gzip() {
    let fake = Fake::default();
    let mut s = settings(grpc_receiver(&fake).await, Protocol::Grpc);
    s.compression = Compression::Gzip;
    s.headers = vec![("X-Tenant".into(), "acme".into())];
    let metrics = export_all(&s, &fake, 250).await;
    let stats = metrics.export(Exporter::OtlpGrpc, Signal::Traces);
    assert_eq!(stats.exported(), 250);
    assert_eq!(stats.errors(), 0);
    assert!(
        fake.traces.lock().unwrap().len() >= 3,
        "batches of at most 100"
    );
    assert_eq!(
        fake.headers.lock().unwrap()[0].get("x-tenant").unwrap(),
        "acme"
    );
}

#[tokio::test]
async fn http_exports_every_span_to_the_verbatim_url() {
    let fake = Fake::default();
    let mut s = settings(http_receiver(&fake).await, Protocol::HttpProtobuf);
    s.compression = Compression::Gzip;
    s.headers = vec![("authorization".into(), "Bearer t".into())];
    let metrics = export_all(&s, &fake, 120).await;
    assert_eq!(
        metrics
            .export(Exporter::OtlpHttp, Signal::Traces)
            .exported(),
        120
    );
    let headers = fake.headers.lock().unwrap();
    assert_eq!(
        headers[0].get("content-type").unwrap(),
        "application/x-protobuf"
    );
    assert_eq!(headers[0].get("authorization").unwrap(), "Bearer t");
}

#[tokio::test]
async fn grpc_unavailable_is_retried_without_loss() {
    let fake = Fake::default();
    fake.fail_first.store(3, Ordering::SeqCst);
    let s = settings(grpc_receiver(&fake).await, Protocol::Grpc);
    let metrics = export_all(&s, &fake, 50).await;
    let stats = metrics.export(Exporter::OtlpGrpc, Signal::Traces);
    assert_eq!(stats.exported(), 50);
    assert_eq!(stats.errors(), 3);
    assert_eq!(stats.retries(), 3);
    assert_eq!(stats.dropped(DropReason::ExportFailed), 0);
}

#[tokio::test]
async fn http_503_is_retried_without_loss() {
    let fake = Fake::default();
    fake.fail_first.store(4, Ordering::SeqCst);
    let s = settings(http_receiver(&fake).await, Protocol::HttpProtobuf);
    let metrics = export_all(&s, &fake, 50).await;
    let stats = metrics.export(Exporter::OtlpHttp, Signal::Traces);
    assert_eq!(
        (stats.exported(), stats.errors(), stats.retries()),
        (50, 4, 4)
    );
}

#[tokio::test]
async fn partial_success_is_counted_as_rejected() {
    let fake = Fake::default();
    fake.reject.store(2, Ordering::SeqCst);
    let s = settings(grpc_receiver(&fake).await, Protocol::Grpc);
    let run = start(&s);
    for span in spans(10) {
        run.tx.try_send(span).unwrap();
    }
    run.cancel.cancel();
    run.task.await.unwrap();
    let stats = run.metrics.export(Exporter::OtlpGrpc, Signal::Traces);
    assert_eq!((stats.exported(), stats.rejected()), (8, 2));
}

#[tokio::test]
async fn permanent_errors_drop_the_batch_at_once() {
    let fake = Fake::default();
    let url = http_receiver(&fake).await.replace("/custom/", "/nowhere/");
    let s = settings(url, Protocol::HttpProtobuf);
    let run = start(&s);
    for span in spans(10) {
        run.tx.try_send(span).unwrap();
    }
    run.cancel.cancel();
    run.task.await.unwrap();
    let stats = run.metrics.export(Exporter::OtlpHttp, Signal::Traces);
    assert_eq!(
        (stats.errors(), stats.retries()),
        (1, 0),
        "404 is not retried"
    );
    assert_eq!(stats.dropped(DropReason::ExportFailed), 10);
}

#[tokio::test]
async fn an_outage_never_blocks_and_stays_under_the_cap() {
    // Nothing listens there: every attempt fails to connect and is retried.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut s = settings(url, Protocol::Grpc);
    s.batch.max_queue_bytes = 256 << 10;
    s.retry.max_elapsed = Duration::from_mins(1);
    let run = start(&s);
    let span_bytes = encode::estimated_span_bytes(&spans(1)[0]) as u64;
    let started = std::time::Instant::now();
    for (i, span) in spans(5000).into_iter().enumerate() {
        run.tx
            .try_send(span)
            .expect("the channel keeps draining during an outage");
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "sending never waited"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = run.metrics.export(Exporter::OtlpGrpc, Signal::Traces);
    let evicted = stats.dropped(DropReason::ExportMemoryCap);
    let held = 5000 - evicted;
    assert!(
        held * span_bytes <= 256 << 10,
        "{held} spans of {span_bytes} B held"
    );
    assert!(evicted > 3000, "{evicted} evicted");
    assert!(stats.errors() >= 1);
    assert!(stats.retries() >= 1, "connection failures are retried");
    let code = stats.errors();
    run.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(7), run.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stats.dropped(DropReason::ExportFailed) + evicted,
        5000,
        "everything not evicted is counted as failed at shutdown ({code} errors)"
    );
    assert_eq!(stats.exported(), 0);
}
