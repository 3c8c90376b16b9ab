//! Process and connection churn: many short-lived client processes (curl, selected by
//! `exe_path` and so captured from their `exec`), then many short connections to nginx. Every
//! request is counted once in the RED metrics, and afterwards the kernel's per-process and
//! per-connection maps and the agent's own tables are back at the size they had before.
//!
//! CI runs [`DEFAULT_PROCESSES`] processes and [`DEFAULT_CONNECTIONS`] connections;
//! `MOP_CHURN_PROCESSES` and `MOP_CHURN_CONNECTIONS` scale it up (`cargo xtask soak` runs
//! 10 000 and 1 000 000), and `MOP_CHURN_REPORT` names a Markdown report with the agent's RSS
//! over time.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    agent::Agent,
    bpf,
    metrics::{self, Scrape},
    peers::{flood, nginx::Nginx},
    tests::with_metrics,
    util,
};

/// Client processes in CI.
const DEFAULT_PROCESSES: u64 = 1_000;
/// Short connections in CI.
const DEFAULT_CONNECTIONS: u64 = 20_000;
/// Processes, and connections, in flight at once.
const PARALLEL: usize = 8;
/// Requests before the baseline is taken, so that nginx's own entries exist by then (a 404
/// also writes nginx's error log: its stderr, which the kernel classifies once).
const WARM_UP: u64 = 20;
/// The path of every churn request.
const CHURN_PATH: &str = "/churn";
/// How long the agent has, after the churn, to get back to its baseline: a few discovery
/// passes (one per second) and the kernel's own clean-up.
const SETTLE: Duration = Duration::from_secs(20);
/// The agent's resident memory must stay below this (KiB) throughout.
const RSS_CAP_KIB: u64 = 160 * 1024;
/// How often the agent's resident memory is sampled for the report.
const RSS_EVERY: Duration = Duration::from_millis(500);

/// The kernel maps whose entries belong to one process, thread or connection (names as the
/// kernel keeps them: the first 15 bytes).
const STATE_MAPS: [&str; 11] = [
    "MOP_PIDS",
    "MOP_INFLIGHT",
    "MOP_CONNS",
    "MOP_SOCK_CONNS",
    "MOP_THREAD_CTX",
    "MOP_FLOW_OUT",
    "MOP_FLOW_IN",
    "MOP_SSL_CALLS",
    "MOP_SSL_FDS",
    "MOP_SSL_SOCKS",
    "MOP_KFUNC_INFLI",
];

/// The agent's gauges of the same state in userspace.
const STATE_GAUGES: [&str; 2] = ["mop_instrumented_processes", "mop_connections_tracked"];

/// The size of everything the churn could leave behind: entries per kernel map, then gauges.
type Footprint = BTreeMap<&'static str, u64>;

/// Entries of each of [`STATE_MAPS`] among `maps`, and each of [`STATE_GAUGES`].
fn footprint(maps: &[bpf::Map], scrape: &Scrape) -> Footprint {
    let mut sizes = Footprint::new();
    for name in STATE_MAPS {
        let map = maps
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("the agent holds no map {name}: {maps:?}"));
        sizes.insert(name, bpf::map_len(map.id) as u64);
    }
    for gauge in STATE_GAUGES {
        sizes.insert(gauge, scrape.counter(gauge));
    }
    sizes
}

/// A scale from the environment, else `default`.
fn scale(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `total` curl processes, [`PARALLEL`] at a time, each one GET of `url`; returns how many
/// exited with an error.
fn curl_processes(url: &str, total: u64) -> u64 {
    let curl = util::which("curl");
    let left = Arc::new(AtomicU64::new(total));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let (curl, url) = (curl.clone(), url.to_owned());
            let (left, failed) = (Arc::clone(&left), Arc::clone(&failed));
            thread::spawn(move || {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let ok = Command::new(&curl)
                        .args(["-s", "-o", "/dev/null", "-m", "10", &url])
                        .stdin(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a curl worker panicked");
    }
    failed.load(Ordering::Relaxed)
}

/// Requests nginx served by the RED metrics (every status code).
fn served(scrape: &Scrape, service: &str) -> u64 {
    scrape.count_with(
        "http_server_request_duration_seconds_count",
        &[("service_name", service)],
    )
}

/// Process churn, then connection churn, against nginx: every request counted once, nothing
/// lost, RSS under its cap, and every kernel map and userspace table back to its baseline.
#[test]
fn churn_returns_to_baseline() {
    let _serial = util::serial();
    let processes = scale("MOP_CHURN_PROCESSES", DEFAULT_PROCESSES);
    let connections = scale("MOP_CHURN_CONNECTIONS", DEFAULT_CONNECTIONS);
    let nginx = Nginx::start(1);
    let config = format!(
        "discovery:\n  instrument:\n    - open_ports: \"{}\"\n    - exe_path: \"*/curl\"\n",
        nginx.port
    );
    let (config, metrics_port) = with_metrics(&config);
    let agent = Agent::start(&config, &[]);
    let pid = agent.pid();
    let held = bpf::held_by(pid);
    let maps = bpf::maps(&held.maps);
    let service = nginx.service();

    let warm = flood::short_connections(nginx.port, CHURN_PATH, WARM_UP, 1);
    assert_eq!(warm.errors, 0, "warm-up requests failed");
    assert!(
        util::wait_until(Duration::from_secs(10), || served(
            &metrics::scrape(metrics_port),
            &service
        ) == WARM_UP),
        "the warm-up requests never all reached the RED metrics"
    );
    let baseline = footprint(&maps, &metrics::scrape(metrics_port));
    let rss = RssTrace::start(pid);

    let started = Instant::now();
    rss.phase("processes");
    let curl_failed = curl_processes(&nginx.url(CHURN_PATH), processes);
    let process_time = started.elapsed();
    rss.phase("connections");
    let load = flood::short_connections(nginx.port, CHURN_PATH, connections, PARALLEL);
    rss.phase("settling");
    assert!(util::alive(pid), "the agent died during the churn");
    assert_eq!(curl_failed, 0, "curl processes that failed");
    assert_eq!(load.errors, 0, "short connections that failed");

    let expected = WARM_UP + processes + connections;
    let mut last = (Scrape::parse(""), Footprint::new());
    let settled = util::wait_until(SETTLE, || {
        let scrape = metrics::scrape(metrics_port);
        let now = footprint(&maps, &scrape);
        let done = now == baseline && served(&scrape, &service) == expected;
        last = (scrape, now);
        done
    });
    let (scrape, end) = last;
    let samples = rss.stop();
    let peak = metrics::rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let report = report(
        &[
            ("processes", processes),
            ("connections", connections),
            ("process churn (ms)", process_time.as_millis() as u64),
            ("connection churn (ms)", load.elapsed.as_millis() as u64),
            ("peak RSS (KiB)", peak),
            (
                "exec reports dropped (decided by a later pass)",
                scrape.counter("mop_exec_reports_dropped_total"),
            ),
        ],
        &baseline,
        &end,
        &samples,
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("MOP_CHURN_REPORT") {
        std::fs::write(&path, &report).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    drop(agent.stop());
    assert_eq!(
        scrape.counter("mop_events_lost_total"),
        0,
        "ring-buffer records lost during the churn"
    );
    assert_eq!(
        served(&scrape, &service),
        expected,
        "requests in nginx's RED metrics after {processes} processes and {connections} connections"
    );
    assert!(
        settled,
        "state left after the churn: baseline {baseline:?}, end {end:?}"
    );
    assert!(
        peak < RSS_CAP_KIB,
        "agent peak RSS {peak} KiB over its cap of {RSS_CAP_KIB} KiB"
    );
}

/// The agent's resident memory sampled every [`RSS_EVERY`] by a thread, with the phase the
/// test is in.
struct RssTrace {
    phase: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<Vec<(f64, &'static str, u64)>>,
}

impl RssTrace {
    fn start(pid: u32) -> Self {
        let phase = Arc::new(Mutex::new("baseline"));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = thread::spawn({
            let (phase, stop) = (Arc::clone(&phase), Arc::clone(&stop));
            move || {
                let started = Instant::now();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some((now, _)) = metrics::rss_kib(pid) {
                        let phase = *phase.lock().unwrap_or_else(PoisonError::into_inner);
                        samples.push((started.elapsed().as_secs_f64(), phase, now));
                    }
                    thread::sleep(RSS_EVERY);
                }
                samples
            }
        });
        Self {
            phase,
            stop,
            sampler,
        }
    }

    fn phase(&self, name: &'static str) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = name;
    }

    /// (seconds since start, phase, RSS in KiB) samples.
    fn stop(self) -> Vec<(f64, &'static str, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the RSS sampler panicked")
    }
}

/// The Markdown report: the run, the footprint before and after, RSS over time.
fn report(
    rows: &[(&str, u64)],
    baseline: &Footprint,
    end: &Footprint,
    samples: &[(f64, &str, u64)],
) -> String {
    let mut out = String::from("# mop churn report\n\n| | |\n|---|---|\n");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    out.push_str("\n| kernel map or gauge | baseline | after |\n|---|---|---|\n");
    for (name, before) in baseline {
        let after = end.get(name).copied().unwrap_or_default();
        let _ = writeln!(out, "| {name} | {before} | {after} |");
    }
    out.push_str("\n## RSS over time\n\n| t (s) | phase | RSS (KiB) |\n|---|---|---|\n");
    for (t, phase, kib) in samples {
        let _ = writeln!(out, "| {t:.1} | {phase} | {kib} |");
    }
    out
}
