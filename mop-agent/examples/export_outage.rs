//! Export outage bench (the core of `cargo xtask bench export`): drives the OTLP trace exporter
//! with synthetic spans at a fixed rate against the Python OTLP receiver
//! (`test/peers/otlp_receiver.py`), stops the receiver for the outage, restarts it on the same
//! ports, and prints one JSON object: peak RSS against the queue's memory cap, spans sent,
//! exported, received and dropped, and the recovery time after the receiver returns.
//!
//! `cargo run --release --example export_outage -- --rate 2000 --outage-secs 60`

#![expect(
    unused_crate_dependencies,
    reason = "an example uses a few of the crate's dependencies"
)]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use mop_agent::{
    export::{
        ExportSettings, Exporters,
        otlp::{OtlpSettings, Protocol},
        synthetic::{http_server_span, resource},
    },
    telemetry::{DropReason, Exporter, SelfMetrics, Signal},
};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Options.
#[derive(Debug, Parser)]
struct Options {
    /// Spans per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of normal operation before the outage.
    #[arg(long, default_value_t = 10)]
    before_secs: u64,
    /// Seconds the receiver is down.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Seconds of load after the receiver returns.
    #[arg(long, default_value_t = 30)]
    after_secs: u64,
    /// Queue memory cap, MiB.
    #[arg(long, default_value_t = 64)]
    cap_mib: usize,
    /// `grpc` or `http`.
    #[arg(long, default_value = "grpc")]
    protocol: String,
}

/// The receiver as a child process, restartable on the same ports.
struct Receiver {
    child: Child,
    grpc_port: u16,
    http_port: u16,
}

impl Receiver {
    fn start(grpc_port: u16, http_port: u16, out: &Path) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test/peers/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--grpc-port",
                &grpc_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .arg("--out")
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with opentelemetry-proto and grpcio (cargo xtask setup)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("receiver output");
        let ports: serde_json::Value =
            serde_json::from_str(&line).expect("the receiver did not start");
        let port = |k: &str| u16::try_from(ports[k].as_u64().expect("port")).expect("port");
        Self {
            child,
            grpc_port: port("grpc_port"),
            http_port: port("http_port"),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` (peak) of this process, KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn received(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\": \"span\""))
        .count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one linear bench timeline")]
async fn main() {
    let opts = Options::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let dir = std::env::temp_dir().join(format!("mop-export-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("received.jsonl");
    let mut receiver = Receiver::start(0, 0, &out);
    let (protocol, endpoint) = match opts.protocol.as_str() {
        "http" => (
            Protocol::HttpProtobuf,
            format!("http://127.0.0.1:{}/v1/traces", receiver.http_port),
        ),
        _ => (
            Protocol::Grpc,
            format!("http://127.0.0.1:{}", receiver.grpc_port),
        ),
    };
    let mut otlp = OtlpSettings::new(endpoint, protocol);
    otlp.batch.max_queue_bytes = opts.cap_mib << 20;
    let exporter = match protocol {
        Protocol::Grpc => Exporter::OtlpGrpc,
        Protocol::HttpProtobuf => Exporter::OtlpHttp,
    };
    let settings = ExportSettings {
        traces: Some(otlp.clone()),
        ..ExportSettings::default()
    };
    let metrics = Arc::new(SelfMetrics::default());
    let (_ready_tx, ready) = watch::channel(true);
    let (sink, exporters) = Exporters::start(
        settings,
        Arc::clone(&metrics),
        ready,
        CancellationToken::new(),
    )
    .await
    .expect("exporter");
    let stats = metrics.export(exporter, Signal::Traces);

    let resource = resource("bench", 1);
    let started = Instant::now();
    let (outage_at, back_at) = (opts.before_secs, opts.before_secs + opts.outage_secs);
    let end = back_at + opts.after_secs;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = opts.rate / 100;
    let (mut sent, mut seq) = (0u64, 0u64);
    let (mut baseline_rss, mut peak_outage_rss) = (0u64, 0u64);
    let (mut restarted_at, mut first_export, mut drained) =
        (None::<Instant>, None::<f64>, None::<f64>);
    let mut exported_at_restart = 0;
    let mut samples = Vec::new();
    let mut last_sample = 0;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed().as_secs();
        if elapsed >= end {
            break;
        }
        for _ in 0..per_tick {
            sink.send(Arc::new(http_server_span(seq, &resource)));
            seq += 1;
        }
        sent += per_tick;
        if elapsed >= outage_at && baseline_rss == 0 {
            baseline_rss = rss_kib().0;
            receiver.stop();
        }
        if elapsed >= back_at && restarted_at.is_none() {
            receiver = Receiver::start(receiver.grpc_port, receiver.http_port, &out);
            restarted_at = Some(Instant::now());
            exported_at_restart = stats.exported();
        }
        if let Some(at) = restarted_at {
            let since = at.elapsed().as_secs_f64();
            if first_export.is_none() && stats.exported() > exported_at_restart {
                first_export = Some(since);
            }
            if drained.is_none() && first_export.is_some() && stats.queue_length() < 2 * 512 {
                drained = Some(since);
            }
        }
        if elapsed > last_sample || samples.is_empty() {
            last_sample = elapsed;
            let (rss, _) = rss_kib();
            if elapsed >= outage_at && elapsed < back_at {
                peak_outage_rss = peak_outage_rss.max(rss);
            }
            samples.push(json!({
                "t": elapsed,
                "rss_kib": rss,
                "queue": stats.queue_length(),
                "exported": stats.exported(),
                "evicted": stats.dropped(DropReason::ExportMemoryCap),
            }));
        }
    }
    tokio::time::timeout(Duration::from_secs(30), exporters.shutdown())
        .await
        .ok();
    receiver.stop();
    let (_, peak_rss) = rss_kib();
    let report = json!({
        "rate_spans_per_s": opts.rate,
        "outage_s": opts.outage_secs,
        "protocol": opts.protocol,
        "queue_cap_bytes": otlp.batch.max_queue_bytes,
        "spans_sent": sent,
        "spans_exported": stats.exported(),
        "spans_received": received(&out),
        "spans_dropped_memory_cap": stats.dropped(DropReason::ExportMemoryCap),
        "spans_dropped_failed": stats.dropped(DropReason::ExportFailed),
        "spans_dropped_channel_full": stats.dropped(DropReason::ExportQueueFull),
        "export_errors": stats.errors(),
        "export_retries": stats.retries(),
        "baseline_rss_kib": baseline_rss,
        "peak_rss_during_outage_kib": peak_outage_rss,
        "peak_rss_kib": peak_rss,
        "peak_rss_over_baseline_kib": peak_rss.saturating_sub(baseline_rss),
        "recovery_first_export_s": first_export,
        "recovery_backlog_drained_s": drained,
        "samples": samples,
    });
    println!("{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
