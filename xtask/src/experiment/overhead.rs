//! `overhead`: what mop costs real servers, against no instrumentation measured in the same
//! round, over a request-rate sweep up to saturation; the OpenTelemetry SDK's own
//! instrumentation of the same Python app as a second reference; the agent's own CPU per 1k
//! requests and its memory.

use std::{fmt::Write as _, time::Duration};

use integration_test::peers::nginx::{Nginx, NginxOptions, SMALL_PATH};
use serde_json::{Value, json};

use super::{
    Ctx,
    load::{self, Plan, Request},
    peers::{self, Peer},
    report::{Report, table},
    runner::{self, AgentSpec, MopAgent, cpu_seconds, loadavg, median, spread},
};

/// A server under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Nginx,
    Python,
    Grpc,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::Nginx => "nginx",
            Self::Python => "python-wsgi",
            Self::Grpc => "grpcio",
        }
    }
}

/// What runs beside the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// No instrumentation.
    Baseline,
    /// The agent attached, selecting nothing: the capture path's cost floor.
    Floor,
    /// The agent instrumenting the server.
    Mop,
    /// The OpenTelemetry SDK inside the server (Python only), spans dropped after batching.
    Otel,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Floor => "floor",
            Self::Mop => "mop",
            Self::Otel => "otel-sdk",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Run {
    server: &'static str,
    variant: &'static str,
    /// Offered rate (req/s), 0 for closed-loop saturation.
    rate: f64,
    round: u32,
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu_s: f64,
    agent_cpu_s: f64,
    agent_rss_peak_kib: u64,
    spans: f64,
    events_lost: f64,
    loadavg: String,
}

impl Run {
    fn json(&self) -> Value {
        json!({
            "server": self.server, "variant": self.variant, "rate": self.rate,
            "round": self.round, "requests": self.requests, "rps": self.rps,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "server_cpu_s": self.server_cpu_s,
            "agent_cpu_s": self.agent_cpu_s, "agent_rss_peak_kib": self.agent_rss_peak_kib,
            "spans": self.spans, "events_lost": self.events_lost, "loadavg": self.loadavg,
        })
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.server.to_owned(),
            self.variant.to_owned(),
            format!("{}", self.rate),
            self.round.to_string(),
            self.requests.to_string(),
            format!("{:.1}", self.rps),
            format!("{:.3}", self.p50_ms),
            format!("{:.3}", self.p99_ms),
            format!("{:.3}", self.server_cpu_s),
            format!("{:.3}", self.agent_cpu_s),
            self.agent_rss_peak_kib.to_string(),
            format!("{}", self.spans),
            format!("{}", self.events_lost),
            self.loadavg.clone(),
        ]
    }
}

struct Settings {
    rounds: u32,
    seconds: f64,
    nginx_rates: Vec<f64>,
    python_rates: Vec<f64>,
    grpc_rates: Vec<f64>,
}

impl Settings {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                rounds: 1,
                seconds: 1.0,
                nginx_rates: vec![1000.0, 0.0],
                python_rates: vec![200.0, 0.0],
                grpc_rates: vec![0.0],
            }
        } else {
            Self {
                rounds: 3,
                seconds: 4.0,
                nginx_rates: vec![1000.0, 5000.0, 10_000.0, 0.0],
                python_rates: vec![200.0, 1000.0, 0.0],
                grpc_rates: vec![200.0, 500.0, 0.0],
            }
        }
    }
}

/// Running servers: the plain ones and the OpenTelemetry-instrumented twins.
struct Servers {
    nginx: Nginx,
    python: Peer,
    python_otel: Peer,
    grpc: Peer,
    grpc_otel: Peer,
}

pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let s = Settings::new(ctx.smoke);
    let servers = Servers {
        nginx: Nginx::start_with(NginxOptions {
            workers: 1,
            ..NginxOptions::default()
        }),
        python: Peer::python("wsgi_app.py", &["0"])?,
        python_otel: Peer::python("wsgi_app.py", &["--otel", "0"])?,
        grpc: Peer::python("grpc_peer.py", &["server", "0"])?,
        grpc_otel: Peer::python("grpc_peer.py", &["server", "--otel", "0"])?,
    };
    let mut runs = Vec::new();
    for round in 1..=s.rounds {
        for (server, rates) in [
            (Server::Nginx, &s.nginx_rates),
            (Server::Python, &s.python_rates),
            (Server::Grpc, &s.grpc_rates),
        ] {
            for &rate in rates {
                let mut variants = vec![Variant::Baseline, Variant::Mop];
                if server == Server::Nginx && rate == 0.0 {
                    variants.push(Variant::Floor);
                }
                if server != Server::Nginx {
                    variants.push(Variant::Otel);
                }
                // Rotate the order each round so that no variant always runs first.
                let k = (round as usize - 1) % variants.len();
                variants.rotate_left(k);
                for v in variants {
                    let r = measure(&servers, server, v, rate, round, s.seconds)?;
                    eprintln!(
                        "overhead: round {round} {} {} rate {}: {:.0} req/s p99 {:.2} ms server cpu {:.2}s agent cpu {:.2}s spans {} (load {})",
                        r.server,
                        r.variant,
                        r.rate,
                        r.rps,
                        r.p99_ms,
                        r.server_cpu_s,
                        r.agent_cpu_s,
                        r.spans,
                        r.loadavg
                    );
                    runs.push(r);
                }
            }
        }
    }
    drop(servers);
    write_report(ctx, &s, &runs)
}

fn measure(
    servers: &Servers,
    server: Server,
    variant: Variant,
    rate: f64,
    round: u32,
    seconds: f64,
) -> anyhow::Result<Run> {
    let (port, pids): (u16, Vec<u32>) = match (server, variant) {
        (Server::Nginx, _) => (servers.nginx.port, servers.nginx.worker_pids().to_vec()),
        (Server::Python, Variant::Otel) => {
            (servers.python_otel.port, vec![servers.python_otel.pid()])
        }
        (Server::Python, _) => (servers.python.port, vec![servers.python.pid()]),
        (Server::Grpc, Variant::Otel) => (servers.grpc_otel.port, vec![servers.grpc_otel.pid()]),
        (Server::Grpc, _) => (servers.grpc.port, vec![servers.grpc.pid()]),
    };
    let agent = match variant {
        Variant::Mop => Some(MopAgent::start(&AgentSpec::port(port))),
        Variant::Floor => Some(MopAgent::start(&AgentSpec::floor())),
        Variant::Baseline | Variant::Otel => None,
    };
    let before = agent.as_ref().map(MopAgent::metrics).unwrap_or_default();
    let agent_cpu0 = agent.as_ref().map_or(0.0, MopAgent::cpu_seconds);
    let server_cpu0 = cpu_seconds(&pids);
    let mut run = Run {
        server: server.name(),
        variant: variant.name(),
        rate,
        round,
        loadavg: loadavg(),
        ..Run::default()
    };
    match server {
        Server::Grpc => {
            let rate = (rate > 0.0).then_some(rate);
            let l = peers::grpc_load(port, seconds, 8, rate)?;
            run.requests = l.calls;
            run.rps = l.rps;
            run.p50_ms = l.p50_ms;
            run.p99_ms = l.p99_ms;
        }
        Server::Nginx | Server::Python if rate == 0.0 => {
            let conns = if server == Server::Nginx { 32 } else { 8 };
            let path = if server == Server::Nginx {
                SMALL_PATH
            } else {
                "/hello"
            };
            let l = runner::wrk(&format!("http://127.0.0.1:{port}{path}"), conns, seconds)?;
            run.requests = l.requests;
            run.rps = l.rps;
            run.p50_ms = l.p50_ms;
            run.p99_ms = l.p99_ms;
        }
        Server::Nginx | Server::Python => {
            let path = if server == Server::Nginx {
                SMALL_PATH
            } else {
                "/hello"
            };
            let out = load::run(&Plan {
                port,
                rate: Some(rate),
                connections: 4,
                duration: Duration::from_secs_f64(seconds),
                max_requests: 0,
                request: std::sync::Arc::new(move |_| Request::get(path)),
                headers: String::new(),
                record: false,
            });
            run.requests = out.completed;
            run.rps = out.rps();
            run.p50_ms = out.latency_ms(0.5);
            run.p99_ms = out.latency_ms(0.99);
        }
    }
    run.server_cpu_s = cpu_seconds(&pids) - server_cpu0;
    if let Some(agent) = agent {
        let after = agent.settle(Duration::from_secs(10));
        run.agent_cpu_s = agent.cpu_seconds() - agent_cpu0;
        run.agent_rss_peak_kib = agent.rss_kib().0;
        run.spans = after.sum("mop_spans_produced_total") - before.sum("mop_spans_produced_total");
        run.events_lost = after.sum("mop_events_lost_total") - before.sum("mop_events_lost_total");
        agent.stop();
    }
    Ok(run)
}

/// Per (server, rate) and variant: the ratios to the baseline of the same round.
struct Ratios {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Server CPU per request relative to the baseline's.
    server_cpu: Vec<f64>,
    /// (server + agent) CPU per request relative to the baseline's server CPU per request.
    total_cpu: Vec<f64>,
    agent_ms_per_1k: Vec<f64>,
    spans_per_request: Vec<f64>,
}

#[expect(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
fn ratios(runs: &[Run], server: &str, rate: f64, variant: &str) -> Option<Ratios> {
    let mut r = Ratios {
        rps: vec![],
        p50: vec![],
        p99: vec![],
        server_cpu: vec![],
        total_cpu: vec![],
        agent_ms_per_1k: vec![],
        spans_per_request: vec![],
    };
    for v in runs
        .iter()
        .filter(|x| x.server == server && x.rate == rate && x.variant == variant)
    {
        let Some(b) = runs.iter().find(|x| {
            x.server == server && x.rate == rate && x.variant == "baseline" && x.round == v.round
        }) else {
            continue;
        };
        let per = |cpu: f64, n: u64| cpu / (n.max(1) as f64);
        r.rps.push(v.rps / b.rps);
        r.p50.push(v.p50_ms / b.p50_ms);
        r.p99.push(v.p99_ms / b.p99_ms);
        r.server_cpu
            .push(per(v.server_cpu_s, v.requests) / per(b.server_cpu_s, b.requests));
        r.total_cpu.push(
            per(v.server_cpu_s + v.agent_cpu_s, v.requests) / per(b.server_cpu_s, b.requests),
        );
        r.agent_ms_per_1k
            .push(v.agent_cpu_s * 1e3 / (v.requests.max(1) as f64) * 1e3);
        r.spans_per_request.push(v.spans / v.requests.max(1) as f64);
    }
    (!r.rps.is_empty()).then_some(r)
}

fn rate_label(rate: f64) -> String {
    if rate == 0.0 {
        "saturation".to_owned()
    } else {
        format!("{rate:.0}/s")
    }
}

#[expect(clippy::too_many_lines, reason = "one report, written top to bottom")]
fn write_report(ctx: &Ctx, s: &Settings, runs: &[Run]) -> anyhow::Result<()> {
    let mut report = Report::new(ctx, "overhead", "Overhead: what mop costs real servers")?;
    let header = [
        "server",
        "variant",
        "rate",
        "round",
        "requests",
        "rps",
        "p50_ms",
        "p99_ms",
        "server_cpu_s",
        "agent_cpu_s",
        "agent_rss_peak_kib",
        "spans",
        "events_lost",
        "loadavg",
    ];
    report.csv(
        "runs.csv",
        &header,
        &runs.iter().map(Run::row).collect::<Vec<_>>(),
    )?;
    report.data("runs", Value::Array(runs.iter().map(Run::json).collect()));

    // Summary: one line per server, variant and rate; ratios are medians over rounds
    // [min-max].
    let mut rows = Vec::new();
    let mut ratio_json = Vec::new();
    for (server, rates) in [
        ("nginx", &s.nginx_rates),
        ("python-wsgi", &s.python_rates),
        ("grpcio", &s.grpc_rates),
    ] {
        for &rate in rates {
            for variant in ["floor", "mop", "otel-sdk"] {
                let Some(r) = ratios(runs, server, rate, variant) else {
                    continue;
                };
                let baseline_rps = median(
                    &runs
                        .iter()
                        .filter(|x| x.server == server && x.rate == rate && x.variant == "baseline")
                        .map(|x| x.rps)
                        .collect::<Vec<_>>(),
                );
                let rss = runs
                    .iter()
                    .filter(|x| x.server == server && x.variant == variant)
                    .map(|x| x.agent_rss_peak_kib)
                    .max()
                    .unwrap_or(0);
                let agent = variant == "mop" || variant == "floor";
                rows.push(vec![
                    server.to_owned(),
                    rate_label(rate),
                    variant.to_owned(),
                    format!("{baseline_rps:.0}"),
                    spread(&r.rps, 3),
                    spread(&r.p50, 2),
                    spread(&r.p99, 2),
                    spread(&r.server_cpu, 2),
                    spread(&r.total_cpu, 2),
                    if agent {
                        format!("{:.1}", median(&r.agent_ms_per_1k))
                    } else {
                        "-".into()
                    },
                    #[expect(clippy::cast_precision_loss, reason = "KiB")]
                    if agent {
                        format!("{:.1}", rss as f64 / 1024.0)
                    } else {
                        "-".into()
                    },
                    if variant == "mop" {
                        format!("{:.3}", median(&r.spans_per_request))
                    } else {
                        "-".into()
                    },
                ]);
                ratio_json.push(json!({
                    "server": server, "rate": rate, "variant": variant,
                    "baseline_rps": baseline_rps,
                    "rps_ratio": r.rps, "p50_ratio": r.p50, "p99_ratio": r.p99,
                    "server_cpu_ratio": r.server_cpu, "total_cpu_ratio": r.total_cpu,
                    "agent_ms_per_1k": r.agent_ms_per_1k, "spans_per_request": r.spans_per_request,
                }));
            }
        }
    }
    report.data("ratios", Value::Array(ratio_json));
    let loads: Vec<&str> = runs.iter().map(|r| r.loadavg.as_str()).collect();
    let mut summary = String::from(
        "Ratios are the instrumented run over the uninstrumented baseline of the same round \
         (median [min-max] over rounds; < 1 for throughput and > 1 for latency and CPU mean a \
         cost). At a fixed offered rate the throughput is the rate itself, so the cost shows as \
         latency and CPU; at saturation it shows as throughput.\n\n",
    );
    summary.push_str(&table(
        &[
            "server",
            "offered load",
            "variant",
            "baseline req/s",
            "throughput ratio",
            "p50 ratio",
            "p99 ratio",
            "server CPU/request ratio",
            "server+agent CPU/request ratio",
            "agent CPU ms / 1k req",
            "agent peak RSS MiB",
            "spans / request",
        ],
        &rows,
    ));
    let _ = write!(
        summary,
        "\nMachine load (1/5/15-minute `/proc/loadavg`) at the start of each run ranged over: \
         first `{}`, last `{}`; every run's value is in `runs.csv`.\n",
        loads.first().unwrap_or(&""),
        loads.last().unwrap_or(&"")
    );
    summary.push_str(&verdicts(runs, s));
    report.summary(&summary);
    let method = format!(
        "- Servers, all on 127.0.0.1 and started once: **nginx** {} (1 worker, `/small.html`, a \
         1234-byte static file, keep-alive); **python-wsgi**: `experiments/peers/wsgi_app.py`, a \
         WSGI app (`/hello`, 12 bytes) behind a threaded HTTP/1.1 keep-alive gateway from the \
         standard library; **grpcio**: `experiments/peers/grpc_peer.py server`, unary \
         `mop.bench.Echo/Say` echoing 64 bytes, 4 worker threads.\n\
         - Variants: **baseline** (nothing attached); **mop** (the agent selecting the server's \
         port, every request made a span and RED metrics; no trace exporter, Prometheus \
         endpoint on); **floor** (nginx at saturation only: the agent attached but selecting \
         nothing, so its hooks run and leave at the pid filter: the capture path's own cost); \
         **otel-sdk** (Python only: the same app in a second process instrumented with the \
         OpenTelemetry SDK {}: `opentelemetry-instrumentation-wsgi` / \
         `opentelemetry-instrumentation-grpc`, `BatchSpanProcessor` into an exporter that drops \
         the spans, so the SDK pays for spans but not for a network export).\n\
         - Load: fixed rates (open loop, `xtask/src/experiment/load.rs`: 4 keep-alive \
         connections, latency from each request's scheduled time, so queueing shows) and \
         saturation (closed loop: wrk -t1 -c32 for nginx, -c8 for Python); gRPC: \
         `grpc_peer.py client`, 8 threads on one channel, open loop at a rate or closed loop. \
         Rates: nginx {:?}, Python {:?}, gRPC {:?} req/s (0 = saturation).\n\
         - {} rounds; in each round every (server, rate) runs each variant for {} s, in an order \
         rotated every round. The agent is started before and stopped after each of its runs; \
         its CPU is `utime+stime` from `/proc/PID/stat` over the load, its peak RSS is \
         `VmHWM`; the servers' CPU likewise (nginx: the worker). Spans and lost events are \
         deltas of `mop_spans_produced_total` and `mop_events_lost_total` scraped from the \
         agent's Prometheus endpoint after the spans settle.\n\
         - The client runs on the same 2 cores as the server and the agent: every variant \
         shares the machine the same way, so ratios compare, absolute rates do not transfer.\n",
        ctx.env["nginx"].as_str().unwrap_or(""),
        ctx.env["opentelemetry_sdk"].as_str().unwrap_or(""),
        s.nginx_rates,
        s.python_rates,
        s.grpc_rates,
        s.rounds,
        s.seconds,
    );
    report.finish(&method)?;
    Ok(())
}

/// Plain-language lines under the table: where mop loses and where it does not see.
fn verdicts(runs: &[Run], _s: &Settings) -> String {
    let mut out = String::from("\n");
    let sat = |server: &str, variant: &str| ratios(runs, server, 0.0, variant);
    if let (Some(mr), Some(fr)) = (sat("nginx", "mop"), sat("nginx", "floor")) {
        let (m, f) = (median(&mr.rps), median(&fr.rps));
        let _ = writeln!(
            out,
            "- nginx at saturation: mop keeps {:.0}% of the baseline throughput; its hooks alone \
             (floor, nothing selected) keep {:.0}%. {}",
            m * 100.0,
            f * 100.0,
            if m >= 1.0 || f >= 1.0 {
                format!(
                    "A throughput ratio above 1 is not a gain: on this shared, oversubscribed \
                     machine the saturation throughput is set by what the other tenants leave to \
                     nginx and wrk, and moves more between runs than mop costs. The robust cost \
                     figure is CPU per request: with mop nginx's worker spends {:.2}x the CPU per \
                     request (floor: {:.2}x) and nginx plus the agent {:.2}x.",
                    median(&mr.server_cpu),
                    median(&fr.server_cpu),
                    median(&mr.total_cpu)
                )
            } else {
                format!(
                    "Of the {:.0} points mop loses, {:.0} are the capture path's kernel hooks; the \
                     rest is the agent's userspace work competing for the same 2 cores.",
                    (1.0 - m) * 100.0,
                    ((1.0 - f) * 100.0).min((1.0 - m) * 100.0)
                )
            }
        );
    }
    if let (Some(m), Some(o)) = (sat("python-wsgi", "mop"), sat("python-wsgi", "otel-sdk")) {
        let _ = writeln!(
            out,
            "- Python WSGI at saturation: mop keeps {:.0}% of the baseline throughput, the \
             OpenTelemetry SDK in the process keeps {:.0}%.",
            median(&m.rps) * 100.0,
            median(&o.rps) * 100.0
        );
    }
    if let (Some(m), Some(o)) = (sat("grpcio", "mop"), sat("grpcio", "otel-sdk")) {
        let spans = median(&m.spans_per_request);
        let _ = writeln!(
            out,
            "- grpcio at saturation: mop keeps {:.0}% of the baseline throughput, the \
             OpenTelemetry SDK keeps {:.0}%. mop made {spans:.3} spans per call{}.",
            median(&m.rps) * 100.0,
            median(&o.rps) * 100.0,
            if spans < 0.5 {
                ": it does not parse HTTP/2 in this build, so it pays for capturing gRPC \
                 traffic without producing spans (see the coverage experiment)"
            } else {
                ""
            }
        );
    }
    let lost: f64 = runs.iter().map(|r| r.events_lost).sum();
    let _ = writeln!(
        out,
        "- Kernel ring-buffer events lost over all mop runs: {lost:.0}."
    );
    out
}
