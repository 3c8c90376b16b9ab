//! Overload: a flood of keep-alive connections sending requests in one-byte writes, more than
//! the agent's 64 KiB ring buffer and its userspace can take. The kernel side drops and counts,
//! the agent's memory stays under its cap, and once the flood is over it captures every request
//! again.

use std::{
    thread,
    time::{Duration, Instant},
};

use crate::tests::{SPAN_WAIT, assert_only_from, ports_config, with_metrics};
use crate::{
    agent::Agent,
    metrics::{self, Scrape},
    peers::{
        curl::{Transfer, curl},
        flood,
        nginx::{self, Nginx, OK_PATH},
    },
    span::{self, Span},
    util,
};

/// The path every flood request asks for (a 404 from nginx: the span is made all the same).
const FLOOD_PATH: &str = "/flood";
/// Connections of the flood, each a thread of the test writing one byte per `write`.
const FLOOD_CONNECTIONS: usize = 32;
/// How long the flood runs.
const FLOOD_TIME: Duration = Duration::from_secs(8);
/// When, into the flood, the agent is stopped (SIGSTOP), and for how long: a stalled or
/// descheduled agent, so that the ring buffer overflows whatever this machine's speed.
const STALL_AT: Duration = Duration::from_secs(2);
const STALL_FOR: Duration = Duration::from_secs(2);
/// Requests sent after the flood, each of which must give exactly one span.
const AFTER_FLOOD: usize = 50;
/// The agent's resident memory must stay below this (KiB) during and after the flood: its
/// connection table, parser buffers and span queues are all bounded, and none of them may grow
/// with the flood.
const RSS_CAP_KIB: u64 = 160 * 1024;
/// How often the agent's resident memory is sampled.
const RSS_EVERY: Duration = Duration::from_millis(100);

/// `mop_events_lost_total`: records the kernel could not put in the ring buffer.
const EVENTS_LOST: &str = "mop_events_lost_total";
/// `mop_events_read_total`: records userspace read from the ring buffer.
const EVENTS_READ: &str = "mop_events_read_total";

/// Flood, then `AFTER_FLOOD` requests: kernel drops counted in the self-metrics, peak RSS
/// under [`RSS_CAP_KIB`], no loss after the flood and exactly one span per request.
#[test]
fn flood_drops_in_kernel_keeps_memory_bounded_and_recovers() {
    let _serial = util::serial();
    let nginx = Nginx::start(1);
    let mut config = ports_config(&nginx.port.to_string());
    config.push_str("ebpf:\n  ring_buffer_size: 65536\n");
    let (config, metrics_port) = with_metrics(&config);
    let agent = Agent::start(&config, &[]);
    let pid = agent.pid();
    let baseline = metrics::scrape(metrics_port);
    assert_eq!(
        baseline.counter(EVENTS_LOST),
        0,
        "events lost before any load"
    );
    let (stats, rss) = flood_sampling_rss(pid, nginx.port);
    assert!(
        stats.requests > 0,
        "the flood got no response at all: {stats:?}"
    );
    let settled = settle(metrics_port);
    let lost = settled.counter(EVENTS_LOST);
    assert!(
        lost > 0,
        "no kernel drop counted after a {FLOOD_TIME:?} flood of {} requests in 1-byte writes \
         into a 64 KiB ring buffer with the agent stalled {STALL_FOR:?}",
        stats.requests
    );
    let peak = metrics::rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    let sampled = rss.iter().map(|&(_, (now, _))| now).max().unwrap_or(0);
    assert!(
        peak < RSS_CAP_KIB && sampled < RSS_CAP_KIB,
        "agent RSS over its cap of {RSS_CAP_KIB} KiB: peak {peak} KiB, samples {rss:?}"
    );

    // Recovery: every request now gives one span, and nothing more is lost.
    let printed = agent.spans().len();
    let transfers: Vec<Transfer> = (0..AFTER_FLOOD)
        .map(|_| Transfer::get(nginx.url(OK_PATH)))
        .collect();
    curl(&transfers);
    let after = |spans: &[Span]| {
        spans
            .iter()
            .filter(|s| s.attr("url.path").and_then(|v| v.as_str()) == Some(OK_PATH))
            .count()
    };
    agent.wait_for_spans(SPAN_WAIT, |s| after(s) >= AFTER_FLOOD);
    let end = metrics::scrape(metrics_port);
    let spans = agent.stop();
    let workers = nginx.worker_pids().to_vec();
    assert_only_from(&spans, &workers);
    assert_eq!(
        after(&spans),
        AFTER_FLOOD,
        "{AFTER_FLOOD} GET {OK_PATH} after the flood ({printed} spans printed before them):\n{}",
        span::show(&spans[printed.min(spans.len())..])
    );
    assert_eq!(
        end.counter(EVENTS_LOST),
        lost,
        "events lost after the flood was over"
    );
    // A flood request whose line a lost record cut keeps the prefix the agent saw (as for a
    // head the capture window cuts: `request_target_truncated`), e.g. `/flo`; any other path
    // is one nobody asked for.
    let strays: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            let path = s.attr("url.path").and_then(|v| v.as_str());
            path != Some(OK_PATH) && !path.is_some_and(|p| p.len() > 1 && FLOOD_PATH.starts_with(p))
        })
        .collect();
    assert!(
        strays.is_empty(),
        "spans for paths nobody asked for: {strays:?}"
    );
    for s in spans.iter().filter(|s| s.str_attr("url.path") == OK_PATH) {
        assert_eq!(s.int_attr("http.response.status_code"), 200, "{s}");
        assert_eq!(s.int_attr("http.response.body.size"), nginx::OK_LEN, "{s}");
    }
    eprintln!(
        "flood: {} requests ({:.0}/s), {} errors, {lost} events lost, peak RSS {peak} KiB",
        stats.requests,
        stats.rate(),
        stats.errors
    );
}

/// When into the flood, and the agent's `(VmRSS, VmHWM)` in KiB then.
type RssSample = (Duration, (u64, u64));

/// Runs the flood against 127.0.0.1:`port`, stopping the agent `pid` for [`STALL_FOR`] at
/// [`STALL_AT`]; returns what the flood managed and the agent's `(VmRSS, VmHWM)` every
/// [`RSS_EVERY`] meanwhile.
fn flood_sampling_rss(pid: u32, port: u16) -> (flood::FloodStats, Vec<RssSample>) {
    let load = thread::spawn(move || {
        flood::tiny_writes(port, FLOOD_PATH, FLOOD_CONNECTIONS, 1, FLOOD_TIME)
    });
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut stalled = false;
    while !load.is_finished() && started.elapsed() < FLOOD_TIME + Duration::from_secs(20) {
        let at = started.elapsed();
        if !stalled && at >= STALL_AT {
            util::signal(pid, libc::SIGSTOP);
            thread::sleep(STALL_FOR);
            util::signal(pid, libc::SIGCONT);
            stalled = true;
        }
        if let Some(kib) = metrics::rss_kib(pid) {
            rss.push((at, kib));
        }
        thread::sleep(RSS_EVERY);
    }
    util::signal(pid, libc::SIGCONT);
    (load.join().expect("the flood thread panicked"), rss)
}

/// Waits (up to 20 s) until the agent has drained what the kernel kept: two scrapes in a row
/// with the same count of events read; returns the last scrape.
fn settle(metrics_port: u16) -> Scrape {
    let mut settled = Scrape::default();
    let mut read = None;
    let quiet = util::wait_until(Duration::from_secs(20), || {
        settled = metrics::scrape(metrics_port);
        let now = Some(settled.counter(EVENTS_READ));
        let same = read == now;
        read = now;
        same
    });
    assert!(quiet, "the agent still reads events 20 s after the flood");
    settled
}
