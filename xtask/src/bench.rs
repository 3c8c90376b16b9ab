//! `cargo xtask bench overhead`: what the agent costs a saturated nginx, measured against a
//! baseline and against the cost floor of its own hooks, in the same run.
//!
//! Each round runs wrk three times against nginx (1 worker, a 1 KiB file, keep-alive):
//! - `baseline`: no agent;
//! - `floor`: the agent attached but selecting nothing (its hooks run for every syscall and
//!   leave at the pid filter: the cost of the capture path alone);
//! - `agent`: the agent selecting nginx (every request captured, parsed and made a span).
//!
//! Ratios are throughput and p99 latency relative to the baseline of the same round; the
//! median over rounds is reported, with the agent's CPU per request, its peak RSS and the
//! spans it made per request wrk completed.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Which benchmark.
    #[arg(value_enum)]
    which: Which,
    /// Rounds (each: baseline, floor, agent).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 8)]
    duration: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Skip building the agent (use the existing release binary).
    #[arg(long)]
    no_build: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Which {
    /// Agent overhead on nginx under saturating load.
    Overhead,
    /// A collector outage under load: peak memory against the queue cap, and recovery time.
    Export,
}

/// One wrk run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// What the agent reported and cost during one run.
#[derive(Clone, Copy, Debug, Default)]
struct AgentCost {
    cpu_seconds: f64,
    peak_rss_kib: u64,
    spans: u64,
    events: u64,
    lost: u64,
}

const NGINX_PORT: u16 = 19_590;

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    match opts.which {
        Which::Overhead => overhead(opts),
        Which::Export => export(opts),
    }
}

/// Runs the exporter outage example: 2k spans/s, the collector down for 60 s (`--duration`
/// overrides the outage length), over gRPC then HTTP; writes `target/bench/export.json`.
fn export(opts: &Options) -> anyhow::Result<()> {
    let outage = if opts.duration == 8 {
        60
    } else {
        opts.duration
    };
    let mut results = Vec::new();
    for protocol in ["grpc", "http"] {
        let out = cmd::output(Command::new("cargo").args([
            "run",
            "--release",
            "-q",
            "-p",
            "mop-agent",
            "--example",
            "export_outage",
            "--",
            "--rate",
            "2000",
            "--outage-secs",
            &outage.to_string(),
            "--protocol",
            protocol,
        ]))?;
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .context("export_outage printed no JSON")?
            .to_owned();
        println!("export ({protocol}, collector down {outage} s at 2000 spans/s): {line}");
        results.push(format!("\"{protocol}\":{line}"));
    }
    let dir = Path::new("target/bench");
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("export.json"),
        format!("{{{}}}\n", results.join(",")),
    )?;
    Ok(())
}

fn overhead(opts: &Options) -> anyhow::Result<()> {
    for tool in ["nginx", "wrk"] {
        if !cmd::have(tool) {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    if !cmd::is_root() {
        bail!("the overhead benchmark loads eBPF programs: run it as root");
    }
    if !opts.no_build {
        cmd::run(Command::new("cargo").args(["build", "--release", "-p", "mop-agent"]))?;
    }
    let agent_bin = PathBuf::from("target/release/mop-agent")
        .canonicalize()
        .context("target/release/mop-agent not built")?;
    let work = std::env::temp_dir().join(format!("mop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut nginx = Nginx::start(&work, NGINX_PORT)?;
    let result = rounds(opts, &agent_bin, &work);
    nginx.stop();
    let _ = std::fs::remove_dir_all(&work);
    let rows = result?;
    report(opts, &rows)
}

/// One round's three runs.
struct Round {
    baseline: Load,
    floor: Load,
    agent: Load,
    cost: AgentCost,
}

fn rounds(opts: &Options, agent_bin: &Path, work: &Path) -> anyhow::Result<Vec<Round>> {
    let mut out = Vec::new();
    for round in 1..=opts.rounds {
        let baseline = wrk(opts)?;
        let mut floor_agent = Agent::start(agent_bin, work, "floor", 1)?;
        let floor = wrk(opts)?;
        floor_agent.stop()?;
        let mut agent = Agent::start(agent_bin, work, "agent", NGINX_PORT)?;
        let cpu_before = agent.cpu_seconds()?;
        let loaded = wrk(opts)?;
        let cpu = agent.cpu_seconds()? - cpu_before;
        let mut cost = agent.stop()?;
        cost.cpu_seconds = cpu;
        eprintln!(
            "round {round}: baseline {:.0} req/s, floor {:.0} req/s, agent {:.0} req/s, spans {} / requests {}",
            baseline.rps, floor.rps, loaded.rps, cost.spans, loaded.requests
        );
        out.push(Round {
            baseline,
            floor,
            agent: loaded,
            cost,
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn report(opts: &Options, rows: &[Round]) -> anyhow::Result<()> {
    let ratio = |f: &dyn Fn(&Round) -> f64| median(rows.iter().map(f).collect());
    let floor_tput = ratio(&|r| r.floor.rps / r.baseline.rps);
    let agent_tput = ratio(&|r| r.agent.rps / r.baseline.rps);
    let floor_p99 = ratio(&|r| r.floor.p99_ms / r.baseline.p99_ms);
    let agent_p99 = ratio(&|r| r.agent.p99_ms / r.baseline.p99_ms);
    let captured = ratio(&|r| r.cost.spans as f64 / r.agent.requests as f64);
    let events = ratio(&|r| r.cost.events as f64 / r.agent.requests as f64);
    let cpu_ns = ratio(&|r| r.cost.cpu_seconds * 1e9 / r.agent.requests as f64);
    let rss_mib = rows.iter().map(|r| r.cost.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    let lost: u64 = rows.iter().map(|r| r.cost.lost).sum();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "overhead: nginx 1 worker, 1 KiB file, wrk -t1 -c{} -d{}s, {} rounds (medians)",
        opts.connections, opts.duration, opts.rounds
    );
    let _ = writeln!(text, "| measure | floor (hooks only) | agent |");
    let _ = writeln!(text, "|---|---|---|");
    let _ = writeln!(
        text,
        "| throughput ratio | {floor_tput:.3} | {agent_tput:.3} |"
    );
    let _ = writeln!(
        text,
        "| p99 latency ratio | {floor_p99:.3} | {agent_p99:.3} |"
    );
    let _ = writeln!(text, "| spans / requests | - | {captured:.4} |");
    let _ = writeln!(text, "| kernel records per request | - | {events:.2} |");
    let _ = writeln!(text, "| agent CPU per request | - | {cpu_ns:.0} ns |");
    let _ = writeln!(text, "| agent peak RSS | - | {rss_mib:.1} MiB |");
    let _ = writeln!(text, "| kernel records lost | - | {lost} |");
    print!("{text}");
    let dir = Path::new("target/bench");
    std::fs::create_dir_all(dir)?;
    let json = format!(
        "{{\"floor_throughput_ratio\":{floor_tput:.4},\"agent_throughput_ratio\":{agent_tput:.4},\
         \"floor_p99_ratio\":{floor_p99:.4},\"agent_p99_ratio\":{agent_p99:.4},\
         \"spans_per_request\":{captured:.5},\"records_per_request\":{events:.3},\"agent_cpu_ns_per_request\":{cpu_ns:.0},\
         \"agent_peak_rss_mib\":{rss_mib:.2},\"records_lost\":{lost}}}\n"
    );
    std::fs::write(dir.join("overhead.json"), json)?;
    std::fs::write(dir.join("overhead.md"), text)?;
    Ok(())
}

/// Runs wrk and parses its summary.
fn wrk(opts: &Options) -> anyhow::Result<Load> {
    wrk_url(
        &format!("http://127.0.0.1:{NGINX_PORT}/1k"),
        1,
        opts.connections,
        f64::from(opts.duration),
    )
}

/// Runs wrk (`threads`, `connections`, `seconds` of load, `--latency`) against `url` and parses
/// its summary.
pub(crate) fn wrk_url(
    url: &str,
    threads: u32,
    connections: u32,
    seconds: f64,
) -> anyhow::Result<Load> {
    let out = cmd::output(Command::new("wrk").args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{}s", seconds.round().max(1.0)),
        "--latency",
        url,
    ]))?;
    parse_wrk(&out).with_context(|| format!("cannot parse wrk output:\n{out}"))
}

fn parse_wrk(out: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            load.rps = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("50%") {
            load.p50_ms = parse_latency_ms(rest.trim())?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            load.p99_ms = parse_latency_ms(rest.trim())?;
        } else if line.contains(" requests in ") {
            load.requests = line.split_whitespace().next()?.parse().ok()?;
        }
    }
    (load.rps > 0.0 && load.requests > 0).then_some(load)
}

/// wrk latencies: `812.00us`, `1.23ms`, `2.01s`.
fn parse_latency_ms(s: &str) -> Option<f64> {
    let (num, factor) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// nginx with one worker serving a 1 KiB file.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(work: &Path, port: u16) -> anyhow::Result<Self> {
        let www = work.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::create_dir_all(work.join("tmp"))?;
        std::fs::write(www.join("1k"), "x".repeat(1024))?;
        let w = work.display();
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; user root; pid {w}/nginx.pid;\n\
             error_log {w}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; default_type text/plain; keepalive_requests 1000000;\n\
             client_body_temp_path {w}/tmp/b; proxy_temp_path {w}/tmp/p; fastcgi_temp_path {w}/tmp/f;\n\
             uwsgi_temp_path {w}/tmp/u; scgi_temp_path {w}/tmp/s;\n\
             server {{ listen 127.0.0.1:{port}; root {w}/www; location = /1k {{ try_files /1k =404; }} }} }}\n"
        );
        let conf_path = work.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child })
    }

    fn stop(&mut self) {
        // SIGQUIT: graceful stop of master and workers.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A running agent selecting one port.
struct Agent {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Agent {
    fn start(bin: &Path, work: &Path, name: &str, port: u16) -> anyhow::Result<Self> {
        let config = work.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!("discovery:\n  instrument:\n    - open_ports: {port}\nlog_level: info\n"),
        )?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the agent")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let mut agent = Self {
            child,
            stderr: BufReader::new(stderr),
        };
        agent.wait_for("ready", Duration::from_secs(30))?;
        Ok(agent)
    }

    /// Reads stderr until a line containing `needle`; returns that line.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        loop {
            line.clear();
            if self.stderr.read_line(&mut line)? == 0 {
                bail!("the agent exited before logging `{needle}`");
            }
            if line.contains(needle) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!("the agent did not log `{needle}` within {timeout:?}");
            }
        }
    }

    /// User plus system CPU time so far.
    #[expect(clippy::cast_precision_loss, reason = "tick counts are small")]
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the comm: utime and stime are fields 12 and 13 (0-based).
        Ok((ticks(11) + ticks(12)) as f64 / 100.0)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGTERM, then the counts from the `Stopped.` line.
    fn stop(&mut self) -> anyhow::Result<AgentCost> {
        let peak_rss_kib = self.peak_rss_kib();
        cmd::run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]))?;
        let line = self.wait_for("Stopped.", Duration::from_secs(30))?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(AgentCost {
            cpu_seconds: 0.0,
            peak_rss_kib,
            spans: field("spans"),
            events: field("events"),
            lost: field("lost"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 8s test @ http://127.0.0.1:19590/1k\n  1 threads and 32 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   455.12us  120.00us   5.00ms   90.00%\n\
  Latency Distribution\n     50%  430.00us\n     75%  500.00us\n     90%  600.00us\n     99%    1.20ms\n\
  560000 requests in 8.00s, 650.00MB read\nRequests/sec:  70000.00\nTransfer/sec:     81.25MB\n";
        let load = parse_wrk(out).unwrap();
        assert_eq!(load.requests, 560_000);
        assert!((load.rps - 70_000.0).abs() < 1e-9);
        assert!((load.p99_ms - 1.2).abs() < 1e-9);
        assert!((parse_latency_ms("812.00us").unwrap() - 0.812).abs() < 1e-9);
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn medians() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
    }
}
