//! The trace exporter against a real OpenTelemetry collector: `PyPI` `rotel` (`rotel-agent`)
//! with the blackhole exporter and detailed debug logging; the test parses its log to check
//! that it accepted every span, over gRPC and HTTP/protobuf.

#![expect(
    unused_crate_dependencies,
    reason = "an integration test uses a few of the crate's dependencies"
)]

mod common;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use common::{Peer, TempDir, free_port, wait_until};
use mop_agent::{
    export::{
        ExportSettings, Exporters,
        otlp::{OtlpSettings, Protocol},
        synthetic::{http_server_span, resource},
    },
    telemetry::SelfMetrics,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// `rotel-agent`: `$ROTEL_AGENT`, else the binary inside the `rotel` Python package.
fn rotel_agent() -> String {
    if let Ok(path) = std::env::var("ROTEL_AGENT") {
        return path;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "PyPI rotel is missing (cargo xtask setup)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Span records from rotel's detailed debug log: span id -> (trace id, parent id, attributes).
fn parse_log(log: &str) -> HashMap<String, (String, String, Vec<String>)> {
    let mut spans = HashMap::new();
    let mut current: Option<(String, String, String, Vec<String>)> = None;
    let mut in_attributes = false;
    for line in log.lines() {
        let line = line.trim();
        let field = |name: &str| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if line.starts_with("Span #") {
            if let Some((id, trace, parent, attrs)) = current.take() {
                spans.insert(id, (trace, parent, attrs));
            }
            current = Some(Default::default());
            in_attributes = false;
        } else if let Some(cur) = current.as_mut() {
            if let Some(v) = field("Trace ID") {
                cur.1 = v;
            } else if let Some(v) = field("Parent ID") {
                cur.2 = v;
            } else if let Some(v) = field("ID") {
                cur.0 = v;
            } else if line.starts_with("Attributes:") {
                in_attributes = true;
            } else if in_attributes && line.starts_with("->") {
                cur.3.push(line.trim_start_matches("->").trim().to_owned());
            } else if line.starts_with("ResourceSpans #") {
                in_attributes = false;
            }
        }
    }
    if let Some((id, trace, parent, attrs)) = current {
        spans.insert(id, (trace, parent, attrs));
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_accepts_spans_over_grpc_and_http() {
    let dir = TempDir::new("rotel");
    let log_path = dir.0.join("rotel.log");
    let (grpc_port, http_port) = (free_port(), free_port());
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc_port}"),
        ])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args([
            "--exporter",
            "blackhole",
            "--debug-log",
            "traces",
            "--debug-log-verbosity",
            "detailed",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("rotel-agent must run (cargo xtask setup installs PyPI rotel)");
    let _rotel = Peer(child);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || read_log()
            .contains("Starting Rotel"))
        .await,
        "rotel-agent did not start: {}",
        read_log()
    );

    let r = resource("shop", 1);
    let mut sent = Vec::new();
    for (protocol, endpoint, seqs) in [
        (
            Protocol::Grpc,
            format!("http://127.0.0.1:{grpc_port}"),
            0..40u64,
        ),
        (
            Protocol::HttpProtobuf,
            format!("http://127.0.0.1:{http_port}/v1/traces"),
            40..80,
        ),
    ] {
        let mut otlp = OtlpSettings::new(endpoint, protocol);
        otlp.batch.timeout = Duration::from_millis(100);
        let settings = ExportSettings {
            traces: Some(otlp),
            ..ExportSettings::default()
        };
        let self_metrics = Arc::new(SelfMetrics::default());
        let (_tx, ready) = watch::channel(true);
        let (sink, exporters) =
            Exporters::start(settings, self_metrics, ready, CancellationToken::new())
                .await
                .unwrap();
        for seq in seqs {
            let span = Arc::new(http_server_span(seq, &r));
            sent.push(Arc::clone(&span));
            sink.send(span);
        }
        tokio::time::timeout(Duration::from_secs(15), exporters.shutdown())
            .await
            .unwrap();
    }

    let all_logged = wait_until(Duration::from_secs(10), || {
        let logged = parse_log(&read_log());
        sent.iter()
            .all(|s| logged.contains_key(&s.span_id.to_hex()))
    })
    .await;
    let logged = parse_log(&read_log());
    assert!(
        all_logged,
        "rotel logged {} of {} spans",
        logged.len(),
        sent.len()
    );
    for span in &sent {
        let (trace, parent, attrs) = &logged[&span.span_id.to_hex()];
        assert_eq!(*trace, span.trace_id.to_hex());
        assert_eq!(
            *parent,
            span.parent_span_id.map(|p| p.to_hex()).unwrap_or_default()
        );
        let status = span.attributes.http_response_status_code.unwrap();
        assert!(
            attrs.contains(&format!("http.response.status_code: Int({status})")),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&"server.port: Int(8080)".to_owned()),
            "{attrs:?}"
        );
    }
}
