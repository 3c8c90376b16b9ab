//! What every experiment shares: the agent under test (started like a user does, through the
//! integration harness), its self-metrics, process CPU and memory from `/proc`, the machine's
//! load and description, wrk, and small statistics.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use integration_test::{agent::Agent, span::Span, util};
use serde_json::{Value, json};

use crate::bench;

/// How the agent under test is configured.
#[derive(Clone, Debug, Default)]
pub(crate) struct AgentSpec {
    /// `discovery.instrument` entries, each a YAML mapping body such as `open_ports: "80"`.
    pub(crate) select: Vec<String>,
    /// `trace_printer: json` (spans collected from stdout) instead of `disabled`.
    pub(crate) print_spans: bool,
    /// More top-level YAML (e.g. an `ebpf:` block).
    pub(crate) extra_yaml: String,
}

impl AgentSpec {
    /// Selects the processes listening on `port`.
    pub(crate) fn port(port: u16) -> Self {
        Self {
            select: vec![format!("open_ports: \"{port}\"")],
            ..Self::default()
        }
    }

    /// The hooks attached but nothing selected (a port nothing listens on): the cost floor of
    /// the capture path.
    pub(crate) fn floor() -> Self {
        Self::port(1)
    }

    #[must_use]
    pub(crate) fn printing(mut self) -> Self {
        self.print_spans = true;
        self
    }

    #[must_use]
    pub(crate) fn with_yaml(mut self, yaml: &str) -> Self {
        self.extra_yaml.push_str(yaml);
        self
    }

    fn yaml(&self, prometheus_port: u16) -> String {
        let mut y = format!(
            "trace_printer: {}\nprometheus_export:\n  port: {prometheus_port}\nroutes:\n  unmatched: path\ndiscovery:\n  instrument:\n",
            if self.print_spans { "json" } else { "disabled" }
        );
        for s in &self.select {
            let _ = writeln!(y, "    - {s}");
        }
        y.push_str(&self.extra_yaml);
        y
    }
}

/// The agent under test, with its Prometheus port.
pub(crate) struct MopAgent {
    agent: Agent,
    prometheus_port: u16,
}

impl MopAgent {
    /// Starts the agent and waits for its `ready` line (panics with its log if it fails).
    pub(crate) fn start(spec: &AgentSpec) -> Self {
        let prometheus_port = util::free_port();
        let agent = Agent::start(&spec.yaml(prometheus_port), &[]);
        Self {
            agent,
            prometheus_port,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.agent.pid()
    }

    /// User plus system CPU seconds the agent used so far.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&[self.pid()])
    }

    /// Peak and current resident memory, KiB.
    pub(crate) fn rss_kib(&self) -> (u64, u64) {
        (
            status_kib(self.pid(), "VmHWM:"),
            status_kib(self.pid(), "VmRSS:"),
        )
    }

    /// The agent's `/metrics`, one entry per series (`name{labels}` -> value).
    pub(crate) fn metrics(&self) -> Metrics {
        Metrics(scrape(self.prometheus_port).unwrap_or_default())
    }

    /// Waits until `mop_spans_produced_total` has not moved for 500 ms (bounded by `timeout`):
    /// everything captured has been handled.
    pub(crate) fn settle(&self, timeout: Duration) -> Metrics {
        let deadline = Instant::now() + timeout;
        let mut last = self.metrics();
        let mut stable_since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.metrics();
            if (now.sum("mop_spans_produced_total") - last.sum("mop_spans_produced_total")).abs()
                > 0.5
                || (now.sum("mop_events_read_total") - last.sum("mop_events_read_total")).abs()
                    > 0.5
            {
                stable_since = Instant::now();
            }
            last = now;
            if stable_since.elapsed() >= Duration::from_millis(500) || Instant::now() > deadline {
                return last;
            }
        }
    }

    /// The spans printed so far (with [`AgentSpec::printing`]).
    pub(crate) fn spans(&self) -> Vec<Span> {
        self.agent.spans()
    }

    /// Stops the agent (SIGTERM, exit 0 asserted) and returns every printed span.
    pub(crate) fn stop(self) -> Vec<Span> {
        self.agent.stop()
    }
}

/// A scrape of the agent's Prometheus endpoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics(pub(crate) BTreeMap<String, f64>);

impl Metrics {
    /// Sum over every series of `name` whose labels contain every `label="value"` of `having`.
    pub(crate) fn sum_where(&self, name: &str, having: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let (n, labels) = k.split_once('{').unwrap_or((k.as_str(), ""));
                n == name && having.iter().all(|h| labels.contains(h))
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub(crate) fn sum(&self, name: &str) -> f64 {
        self.sum_where(name, &[])
    }
}

fn scrape(port: u16) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(parse_metrics(body))
}

/// Parses Prometheus text exposition: `name{labels} value` lines, comments skipped.
pub(crate) fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// User plus system CPU seconds of `pids` so far (exited pids count 0).
#[expect(clippy::cast_precision_loss, reason = "tick counts are small")]
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return 0;
            };
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let f: Vec<u64> = after
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            // After the comm: utime and stime are fields 11 and 12 (0-based), in ticks.
            f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
        })
        .sum::<u64>() as f64
        / clock_ticks()
}

#[expect(clippy::cast_precision_loss, reason = "a small constant")]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// A `kB` field of `/proc/PID/status` (0 when missing).
pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The 1-minute load average (and the rest of `/proc/loadavg`).
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs wrk closed-loop against `url` and returns requests, req/s, p50 and p99 (ms).
pub(crate) fn wrk(url: &str, connections: u32, seconds: f64) -> anyhow::Result<bench::Load> {
    bench::wrk_url(url, 1, connections, seconds)
}

/// Median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// Linear-interpolated quantile of `v` (NaN when empty).
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    reason = "indices of short vectors"
)]
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = (v.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// `median [min-max]` of `v`, formatted with `prec` decimals.
pub(crate) fn spread(v: &[f64], prec: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.prec$} [{lo:.prec$}-{hi:.prec$}]", median(v))
}

/// What the measurements ran on: kernel, cores, memory, the peers' versions, the agent's commit.
pub(crate) fn environment() -> Value {
    let sh = |c: &str| {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines().next().unwrap_or("").trim().to_owned()
            })
            .unwrap_or_default()
    };
    json!({
        "kernel": sh("uname -r"),
        "cores": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "memory": sh("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "mop_commit": sh("git rev-parse --short HEAD"),
        "nginx": sh("nginx -v 2>&1"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "python": sh("python3 --version"),
        "grpcio": sh("python3 -c 'import grpc; print(grpc.__version__)'"),
        "opentelemetry_sdk": sh("python3 -c 'from importlib.metadata import version as v; print(v(\"opentelemetry-sdk\"))'"),
        "werkzeug": sh("python3 -c 'from importlib.metadata import version as v; print(v(\"werkzeug\"))'"),
        "node": sh("node --version"),
        "go": sh("go version"),
        "curl": sh("curl --version"),
        "openssl": sh("openssl version"),
        "loadavg_at_start": loadavg(),
    })
}

/// The environment as a Markdown list.
pub(crate) fn environment_md(env: &Value) -> String {
    let mut md = String::new();
    if let Some(obj) = env.as_object() {
        for (k, v) in obj {
            let _ = writeln!(md, "- {k}: `{}`", v.as_str().unwrap_or_default());
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let m = Metrics(parse_metrics(
            "# HELP x\nmop_events_lost_total 3\nmop_spans_dropped_total{reason=\"a\"} 1\nmop_spans_dropped_total{reason=\"b\",exporter=\"p\"} 2\n",
        ));
        assert!((m.sum("mop_events_lost_total") - 3.0).abs() < 1e-9);
        assert!((m.sum("mop_spans_dropped_total") - 3.0).abs() < 1e-9);
        assert!((m.sum_where("mop_spans_dropped_total", &["exporter=\"p\""]) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn quantiles() {
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&[5.0], 0.99) - 5.0).abs() < 1e-12);
        assert!(median(&[]).is_nan());
    }
}
