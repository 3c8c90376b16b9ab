use std::time::{Duration, Instant};

use super::*;
use crate::{
    export::synthetic::{grpc_client_span, http_server_span, resource},
    metrics::{MetricsSettings, RedMetrics},
    span::model::AttrValue,
    telemetry::{DropReason, Exporter, Protocol, Signal},
};

/// Deterministic metrics: two services, HTTP server and gRPC client series, some self-metrics.
fn fixture() -> (crate::metrics::MetricsSnapshot, SelfMetrics) {
    let red = RedMetrics::new(
        MetricsSettings {
            duration_buckets: vec![0.005, 0.025, 0.1],
            request_size_buckets: vec![0.0, 1024.0],
            response_size_buckets: vec![0.0, 1024.0],
            ..MetricsSettings::default()
        },
        Arc::default(),
    );
    let mut shop = (*resource("shop", 1)).clone();
    shop.attributes
        .push(("k8s.namespace.name".into(), AttrValue::Str("prod".into())));
    shop.service_name = "shop \"eu\"\\1".into();
    let shop = Arc::new(shop);
    let now = Instant::now();
    for seq in 0..10 {
        red.record_at(&http_server_span(seq, &shop), now, 1_000);
    }
    red.record_at(&grpc_client_span(4, &resource("cli", 2)), now, 1_000);
    let snapshot = red.snapshot_at(now + Duration::from_secs(1), 2_000);
    let m = SelfMetrics::default();
    m.add_events_read(42);
    m.add_parse_errors(Protocol::Http2, 3);
    m.add_spans_dropped(DropReason::AssemblyQueueFull, 5);
    m.set_instrumented_processes(2);
    m.set_capture_path("syscalls");
    m.set_capture_path_refused(vec![("fentry", "attach_denied"), ("kprobe", "no_kprobes")]);
    let grpc = m.export(Exporter::OtlpGrpc, Signal::Traces);
    grpc.activate();
    grpc.add_exported(100);
    grpc.inc_errors();
    grpc.inc_retries();
    grpc.add_dropped(DropReason::ExportMemoryCap, 7);
    grpc.observe_duration(Duration::from_millis(20));
    grpc.set_queue_length(12);
    m.export(Exporter::Printer, Signal::Traces).activate();
    m.export(Exporter::OtlpHttp, Signal::Metrics).activate();
    (snapshot, m)
}

#[test]
fn prometheus_text_matches_the_golden_file() {
    let (snapshot, m) = fixture();
    let text = render(Format::Prometheus, Some(&snapshot), &m, None);
    let golden = include_str!("testdata/metrics.prom");
    if text != golden && std::env::var_os("MOP_BLESS").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/export/prometheus/testdata/metrics.prom"
            ),
            &text,
        )
        .unwrap();
        return;
    }
    assert_eq!(
        text, golden,
        "run with MOP_BLESS=1 to update the golden file"
    );
}

#[test]
fn openmetrics_text_matches_the_golden_file() {
    let (snapshot, m) = fixture();
    let text = render(Format::OpenMetrics, Some(&snapshot), &m, None);
    let golden = include_str!("testdata/metrics.om");
    if text != golden && std::env::var_os("MOP_BLESS").is_some() {
        std::fs::write(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/export/prometheus/testdata/metrics.om"
            ),
            &text,
        )
        .unwrap();
        return;
    }
    assert_eq!(
        text, golden,
        "run with MOP_BLESS=1 to update the golden file"
    );
}

#[test]
fn histogram_buckets_are_cumulative_and_end_with_inf() {
    let (snapshot, m) = fixture();
    let text = render(Format::Prometheus, Some(&snapshot), &m, None);
    let ok: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_bucket")
                && l.contains("status_code=\"200\"")
        })
        .collect();
    let counts: Vec<&str> = ok.iter().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(counts, ["0", "9", "9", "9"]);
    assert!(ok[3].contains("le=\"+Inf\""));
    assert!(text.contains(
        "http_server_request_duration_seconds_count{service_name=\"shop \\\"eu\\\"\\\\1\""
    ));
    assert!(text.contains("k8s_namespace_name=\"prod\""));
    assert!(text.contains("http_request_method=\"GET\""));
    assert!(text.contains("http_route=\"/users/{id}\""));
    assert!(text.contains("rpc_client_call_duration_seconds_count{service_name=\"cli\""));
}

#[test]
fn format_negotiation() {
    let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::negotiate(Some(prometheus_2)), Format::OpenMetrics);
    assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
    assert_eq!(Format::negotiate(None), Format::Prometheus);
    assert_eq!(
        label_name("http.response.status_code"),
        "http_response_status_code"
    );
    assert_eq!(label_name("9lives-x"), "_9lives_x");
}

#[tokio::test]
async fn endpoints_answer_health_and_readiness() {
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let server = Server::new("metrics".into(), None, Arc::default(), ready_rx);
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, cancel.clone()));
    let get = |path: &'static str, accept: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut out)
            .await
            .unwrap();
        out
    };
    assert!(get("/healthz", "*/*").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz", "*/*").await.starts_with("HTTP/1.1 503"));
    ready_tx.send(true).unwrap();
    assert!(get("/readyz", "*/*").await.starts_with("HTTP/1.1 200"));
    let om = get("/metrics", "application/openmetrics-text;version=1.0.0").await;
    assert!(
        om.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    assert!(om.trim_end().ends_with("# EOF"));
    let text = get("/metrics", "text/plain").await;
    assert!(
        text.contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(text.contains("mop_build_info{version="));
    assert!(get("/other", "*/*").await.starts_with("HTTP/1.1 404"));
    cancel.cancel();
    task.await.unwrap();
}

#[test]
fn process_families_follow_the_prometheus_client_conventions() {
    let (snapshot, m) = fixture();
    let p = crate::telemetry::ProcessStats {
        cpu_seconds: 3.25,
        resident_bytes: 20_480_000,
        virtual_bytes: 1_073_741_824,
        open_fds: 42,
        start_time_seconds: 1_764_001_234.5,
    };
    let text = render(Format::Prometheus, Some(&snapshot), &m, Some(&p));
    for line in [
        "# TYPE process_cpu_seconds_total counter",
        "process_cpu_seconds_total 3.25",
        "# TYPE process_resident_memory_bytes gauge",
        "process_resident_memory_bytes 20480000",
        "process_virtual_memory_bytes 1073741824",
        "process_open_fds 42",
        "process_start_time_seconds 1764001234.5",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    let om = render(Format::OpenMetrics, Some(&snapshot), &m, Some(&p));
    for line in [
        "# TYPE process_cpu_seconds counter",
        "# UNIT process_cpu_seconds seconds",
        "process_cpu_seconds_total 3.25",
        "# UNIT process_resident_memory_bytes bytes",
        "# UNIT process_start_time_seconds seconds",
    ] {
        assert!(om.lines().any(|l| l == line), "missing {line:?}:\n{om}");
    }
    assert!(
        om.ends_with("# EOF\n"),
        "families come before the end marker"
    );
    assert!(!render(Format::Prometheus, Some(&snapshot), &m, None).contains("process_"));
}
