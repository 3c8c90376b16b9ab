//! The soak run behind `cargo xtask soak --duration N`: one agent (default ring buffer, spans
//! exported over OTLP/HTTP to a real receiver) through three phases of `N / 3` seconds each,
//! its resident memory sampled every second, and a Markdown report written.
//!
//! - flood: [`FLOOD_CONNECTIONS`] keep-alive connections sending requests in 1-byte writes;
//! - churn: short connections (one request each, `Connection: close`), [`CHURN_PARALLEL`] at
//!   a time;
//! - outage: the OTLP receiver is stopped while a lighter load goes on (the exporter retries
//!   and drops; capture must not block).
//!
//! Before the agent starts, the flood runs once without it: the report gives the application's
//! throughput under the flood with the agent as a ratio of that.
//!
//! Asserts only what must hold however long it runs: the agent is alive after every phase and
//! its RSS stays under [`RSS_CAP_KIB`]; the rest is reported.

use std::{
    fmt::Write as _,
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent::Agent,
    metrics::{self, Scrape},
    peers::{
        flood::{self, FloodStats},
        nginx::Nginx,
        otlp::OtlpReceiver,
    },
    tests::with_metrics,
    util,
};

/// Seconds of the whole run when `MOP_SOAK_SECONDS` is not set.
const DEFAULT_SECONDS: u64 = 30;
/// Connections of the flood phase.
const FLOOD_CONNECTIONS: usize = 32;
/// Connections open at once in the churn phase.
const CHURN_PARALLEL: usize = 8;
/// Connections per churn batch (the phase runs batches until its time is up).
const CHURN_BATCH: u64 = 500;
/// Connections of the load during the outage, and the bytes per write.
const OUTAGE_CONNECTIONS: usize = 4;
const OUTAGE_PIECE: usize = 64;
/// The agent's resident memory must stay below this (KiB) throughout.
const RSS_CAP_KIB: u64 = 160 * 1024;

/// One phase: its name and the load it runs for the given time.
type Phase = (&'static str, fn(u16, Duration) -> FloodStats);

const PHASES: [Phase; 3] = [
    ("flood", |port, time| {
        flood::tiny_writes(port, "/flood", FLOOD_CONNECTIONS, 1, time)
    }),
    ("churn", churn),
    ("outage", |port, time| {
        flood::tiny_writes(port, "/outage", OUTAGE_CONNECTIONS, OUTAGE_PIECE, time)
    }),
];

/// Short connections in batches until `time` is up.
fn churn(port: u16, time: Duration) -> FloodStats {
    let started = Instant::now();
    let mut total = FloodStats::default();
    while started.elapsed() < time {
        let batch = flood::short_connections(port, "/churn", CHURN_BATCH, CHURN_PARALLEL);
        total.requests += batch.requests;
        total.errors += batch.errors;
    }
    total.elapsed = started.elapsed();
    total
}

/// What a phase did and what the agent counted by its end.
struct PhaseResult {
    name: &'static str,
    load: FloodStats,
    end: Scrape,
}

/// Run by `cargo xtask soak` (`MOP_SOAK_SECONDS`, `MOP_SOAK_REPORT`); see the module docs.
#[test]
#[ignore = "long: run by cargo xtask soak"]
fn soak() {
    let _serial = util::serial();
    let seconds: u64 = std::env::var("MOP_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let phase_time = Duration::from_secs((seconds / 3).max(1));
    let nginx = Nginx::start(1);
    let (_, flood_load) = PHASES[0];
    let without_agent = flood_load(nginx.port, phase_time);
    let mut receiver = Some(OtlpReceiver::start());
    let http_port = receiver.as_ref().map_or(0, |r| r.http_port);
    let config = format!(
        "discovery:\n  instrument:\n    - open_ports: \"{}\"\n\
         otel_traces_export:\n  endpoint: http://127.0.0.1:{http_port}\n  protocol: http/protobuf\n",
        nginx.port
    );
    let (config, metrics_port) = with_metrics(&config);
    let agent = Agent::start(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "500")]);
    let pid = agent.pid();
    let started = Instant::now();
    let mut samples: Vec<(f64, &str, u64)> = Vec::new();
    let mut results = Vec::new();
    for (name, run) in PHASES {
        if name == "outage" {
            drop(receiver.take());
        }
        let port = nginx.port;
        let load = thread::spawn(move || run(port, phase_time));
        while !load.is_finished() && started.elapsed() < Duration::from_secs(seconds * 3 + 60) {
            let rss = metrics::rss_kib(pid).map_or(0, |(now, _)| now);
            assert!(util::alive(pid), "the agent died during the {name} phase");
            samples.push((started.elapsed().as_secs_f64(), name, rss));
            thread::sleep(Duration::from_secs(1));
        }
        let load = load.join().expect("the load thread panicked");
        results.push(PhaseResult {
            name,
            load,
            end: metrics::scrape(metrics_port),
        });
    }
    let peak = metrics::rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let report = render(seconds, &samples, &results, peak, &without_agent);
    let path = std::env::var("MOP_SOAK_REPORT").unwrap_or_else(|_| "soak-report.md".to_owned());
    std::fs::write(&path, &report).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    eprintln!("{report}\nsoak: report written to {path}");
    drop(agent.stop());
    assert!(
        peak < RSS_CAP_KIB,
        "agent peak RSS {peak} KiB over its cap of {RSS_CAP_KIB} KiB"
    );
}

/// The Markdown report: one row per phase, then RSS over time.
fn render(
    seconds: u64,
    samples: &[(f64, &str, u64)],
    results: &[PhaseResult],
    peak: u64,
    without_agent: &FloodStats,
) -> String {
    let with_agent = results.first().map_or(0.0, |r| r.load.rate());
    let mut out = format!(
        "# mop soak report\n\n{seconds} s in three phases; agent peak RSS (VmHWM) {} MiB, cap {} MiB. Counters are \
         the agent's self-metrics at the end of each phase (dropped and export errors summed over \
         their label sets).\n\n\
         Application throughput under the flood: {with_agent:.0} req/s with the agent, {:.0} req/s \
         without it (same load, before the agent started): ratio {:.3}.\n\n\
         | phase | requests | req/s | client errors | events lost (total) | spans produced (total) | spans dropped (total) | export errors (total) | connections tracked |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        peak / 1024,
        RSS_CAP_KIB / 1024,
        without_agent.rate(),
        with_agent / without_agent.rate().max(f64::MIN_POSITIVE),
    );
    for r in results {
        let count = |name: &str| r.end.series(name).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.load.requests,
            r.load.rate(),
            r.load.errors,
            count("mop_events_lost_total"),
            count("mop_spans_produced_total"),
            r.end.sum("mop_spans_dropped_total"),
            r.end.sum("mop_export_errors_total"),
            count("mop_connections_tracked"),
        );
    }
    out.push_str("\n## RSS over time\n\n| t (s) | phase | RSS (MiB) |\n|---|---|---|\n");
    for (t, phase, kib) in samples {
        let _ = writeln!(out, "| {t:.0} | {phase} | {:.1} |", rss_mib(*kib));
    }
    out
}

/// KiB as MiB.
#[expect(clippy::cast_precision_loss, reason = "a memory size for a report")]
fn rss_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
