//! The Prometheus endpoint against Debian's Prometheus (it scrapes every second and reports
//! scrape errors in `/api/v1/targets`) and Python `prometheus_client`'s parsers.

#![expect(
    unused_crate_dependencies,
    reason = "an integration test uses a few of the crate's dependencies"
)]

mod common;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{Peer, TempDir, free_port, http_get, wait_until};
use mop_agent::{
    export::{
        ExportSettings, Exporters, PrometheusSettings,
        synthetic::{grpc_client_span, http_server_span, resource},
    },
    metrics::MetricsSettings,
    telemetry::SelfMetrics,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

async fn start_agent_side() -> (Exporters, watch::Sender<bool>) {
    let settings = ExportSettings {
        prometheus: Some(PrometheusSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            path: "/metrics".into(),
            red: Some(MetricsSettings::default()),
        }),
        ..ExportSettings::default()
    };
    let self_metrics = Arc::new(SelfMetrics::default());
    self_metrics.set_capture_path("syscalls");
    let (ready_tx, ready) = watch::channel(false);
    let (sink, exporters) =
        Exporters::start(settings, self_metrics, ready, CancellationToken::new())
            .await
            .unwrap();
    let (shop, cli) = (resource("shop", 1), resource("cli", 2));
    for seq in 0..20 {
        sink.send(Arc::new(http_server_span(seq, &shop)));
        sink.send(Arc::new(grpc_client_span(seq, &cli)));
    }
    (exporters, ready_tx)
}

fn python_parses(text: &str, parser: &str) {
    let dir = TempDir::new("promparse");
    let file = dir.0.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = format!(
        "import sys\nfrom {parser} import text_string_to_metric_families as parse\n\
         fams = list(parse(open(sys.argv[1]).read()))\n\
         names = {{f.name for f in fams}}\n\
         assert 'http_server_request_duration_seconds' in names, names\n\
         print(len(fams))\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{parser} rejected the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_parsers_accept_both_formats_and_readyz_follows_the_flag() {
    let (exporters, ready_tx) = start_agent_side().await;
    let addr = exporters.prometheus_addr().unwrap().to_string();
    let ok = wait_until(Duration::from_secs(5), || {
        http_get(&addr, "/metrics", "text/plain")
            .1
            .contains("http_server_request_duration_seconds_count")
    })
    .await;
    assert!(ok, "the spans reached the RED histograms");
    assert_eq!(http_get(&addr, "/healthz", "*/*").0, 200);
    assert_eq!(http_get(&addr, "/readyz", "*/*").0, 503);
    ready_tx.send(true).unwrap();
    assert_eq!(http_get(&addr, "/readyz", "*/*").0, 200);
    let (status, om) = http_get(
        &addr,
        "/metrics",
        "application/openmetrics-text; version=1.0.0",
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"));
    python_parses(&om, "prometheus_client.openmetrics.parser");
    let (_, text) = http_get(&addr, "/metrics", "text/plain");
    python_parses(&text, "prometheus_client.parser");
    exporters.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_without_errors() {
    let (exporters, _ready) = start_agent_side().await;
    let target = exporters.prometheus_addr().unwrap();
    let dir = TempDir::new("prometheus");
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mop\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
    let child = Command::new(std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into()))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("Debian's prometheus must be installed (cargo xtask setup)");
    let _prometheus = Peer(child);

    let mut last = Value::Null;
    let scraped = wait_until(Duration::from_secs(30), || {
        if std::net::TcpStream::connect(&web).is_err() {
            return false;
        }
        let (status, body) = http_get(&web, "/api/v1/targets", "application/json");
        if status != 200 {
            return false;
        }
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
        let t = &last["data"]["activeTargets"][0];
        t["health"] == "up"
            && t["lastScrape"]
                .as_str()
                .is_some_and(|s| !s.starts_with("0001"))
    })
    .await;
    let logs = std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
    assert!(scraped, "target never up: {last}\n{logs}");
    let t = &last["data"]["activeTargets"][0];
    assert_eq!(t["lastError"], "", "{t}");
    assert_eq!(t["scrapeUrl"], format!("http://{target}/metrics"));

    // The samples are queryable, with the contract's labels.
    let mut result = Value::Null;
    let queried = wait_until(Duration::from_secs(10), || {
        let q = "/api/v1/query?query=http_server_request_duration_seconds_count%7Bhttp_response_status_code%3D%22200%22%7D";
        let (_, body) = http_get(&web, q, "application/json");
        result = serde_json::from_str(&body).unwrap_or(Value::Null);
        result["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert!(queried, "{result}");
    let sample = &result["data"]["result"][0];
    assert_eq!(sample["metric"]["service_name"], "shop");
    assert_eq!(sample["metric"]["http_request_method"], "GET");
    assert_eq!(sample["metric"]["http_route"], "/users/{id}");
    assert_eq!(sample["value"][1], "18");
    let (_, body) = http_get(
        &web,
        "/api/v1/query?query=mop_build_info",
        "application/json",
    );
    assert!(body.contains(env!("CARGO_PKG_VERSION")), "{body}");
    exporters.shutdown().await;
}
