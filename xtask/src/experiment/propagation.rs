//! `propagation`: complete parent/child chains across the trace-context scenarios (an incoming
//! `traceparent`, a client and a server on one node, a service that calls another while
//! serving, in Python threads, Node's event loop and Go goroutines), and what the context
//! carriers (`ebpf.context_propagation`) cost.

use std::{
    collections::HashMap,
    fmt::Write as _,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use integration_test::{
    peers::nginx::{Nginx, NginxOptions, OK_PATH},
    span::Span,
    util,
};
use serde_json::{Value, json};

use super::{
    Ctx,
    load::{self, Plan, Request},
    peers::{self, Peer},
    report::{Report, table},
    runner::{AgentSpec, MopAgent, loadavg, median, spread},
};
use crate::cmd;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One scenario's links, counted over its requests.
#[derive(Clone, Debug, Default)]
struct Scenario {
    name: String,
    requests: usize,
    /// (link description, requests where it holds).
    links: Vec<(String, usize)>,
    /// Requests whose whole chain holds.
    complete: usize,
    note: String,
}

fn curl_n(url: &str, n: usize, header: Option<&str>) -> anyhow::Result<u32> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--noproxy", "*", "-o", "/dev/null"]);
    if let Some(h) = header {
        c.args(["-H", h]);
    }
    for _ in 0..n {
        c.arg(url);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().context("starting curl")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(pid)
}

fn nginx() -> Nginx {
    Nginx::start_with(NginxOptions {
        workers: 1,
        ..NginxOptions::default()
    })
}

/// Scenario 1: a request that carries `traceparent` joins that trace.
fn incoming(n: usize) -> anyhow::Result<Scenario> {
    let ng = nginx();
    let agent = MopAgent::start(&AgentSpec::port(ng.port).printing());
    curl_n(
        &ng.url(OK_PATH),
        n,
        Some(&format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01")),
    )?;
    let workers = ng.worker_pids().to_vec();
    util::wait_until(Duration::from_secs(3), || {
        agent
            .spans()
            .iter()
            .filter(|s| workers.contains(&s.pid))
            .count()
            >= n
    });
    let spans: Vec<Span> = agent
        .stop()
        .into_iter()
        .filter(|s| workers.contains(&s.pid))
        .collect();
    let ok = spans
        .iter()
        .filter(|s| s.trace_id == TRACE_ID && s.parent_span_id == PARENT_ID)
        .count();
    Ok(Scenario {
        name: "incoming `traceparent` (curl -H -> nginx)".into(),
        requests: n,
        links: vec![(
            "nginx server span joins the caller's trace as its child".into(),
            ok,
        )],
        complete: ok,
        note: String::new(),
    })
}

/// Scenario 2: curl and nginx both instrumented, no header: the server span is a child of the
/// client span.
fn one_node(n: usize) -> anyhow::Result<Scenario> {
    let ng = nginx();
    let agent = MopAgent::start(
        &AgentSpec {
            select: vec![
                format!("open_ports: \"{}\"", ng.port),
                "exe_path: \"*/curl\"".into(),
            ],
            ..AgentSpec::default()
        }
        .printing(),
    );
    let pid = curl_n(&ng.url(OK_PATH), n, None)?;
    let workers = ng.worker_pids().to_vec();
    util::wait_until(Duration::from_secs(3), || {
        agent
            .spans()
            .iter()
            .filter(|s| workers.contains(&s.pid) || s.pid == pid)
            .count()
            >= 2 * n
    });
    let spans = agent.stop();
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.pid == pid && s.kind == "client")
        .collect();
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| workers.contains(&s.pid) && s.kind == "server")
        .collect();
    let linked = clients
        .iter()
        .filter(|c| servers.iter().any(|s| s.is_child_of(c)))
        .count();
    Ok(Scenario {
        name: "client and server on one node (curl -> nginx, no header)".into(),
        requests: n,
        links: vec![
            ("curl client span seen".into(), clients.len().min(n)),
            (
                "nginx server span is the child of curl's client span".into(),
                linked,
            ),
        ],
        complete: linked,
        note: String::new(),
    })
}

/// A proxy in one runtime: curl -> proxy -> nginx, all three instrumented.
fn chain(
    runtime: &str,
    n: usize,
    start: impl FnOnce(u16) -> anyhow::Result<Peer>,
) -> anyhow::Result<Scenario> {
    let ng = nginx();
    let proxy = start(ng.port)?;
    let agent = MopAgent::start(
        &AgentSpec {
            select: vec![
                format!("open_ports: \"{},{}\"", ng.port, proxy.port),
                "exe_path: \"*/curl\"".into(),
            ],
            ..AgentSpec::default()
        }
        .printing(),
    );
    let curl_pid = curl_n(&format!("http://127.0.0.1:{}/hop", proxy.port), n, None)?;
    let workers = ng.worker_pids().to_vec();
    util::wait_until(Duration::from_secs(3), || agent.spans().len() >= 4 * n);
    let spans = agent.stop();
    let proxy_pid = proxy.pid();
    let by_parent: HashMap<&str, Vec<&Span>> = spans.iter().fold(HashMap::new(), |mut m, s| {
        m.entry(s.parent_span_id.as_str()).or_default().push(s);
        m
    });
    let child_of = |parent: &Span, pred: &dyn Fn(&Span) -> bool| -> Option<&Span> {
        by_parent
            .get(parent.span_id.as_str())?
            .iter()
            .copied()
            .find(|s| s.trace_id == parent.trace_id && pred(s))
    };
    let clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.pid == curl_pid && s.kind == "client")
        .collect();
    let proxy_servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.pid == proxy_pid && s.kind == "server")
        .collect();
    let proxy_clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.pid == proxy_pid && s.kind == "client")
        .collect();
    let nginx_servers: Vec<&Span> = spans
        .iter()
        .filter(|s| workers.contains(&s.pid) && s.kind == "server")
        .collect();
    let a = clients
        .iter()
        .filter(|c| child_of(c, &|s| s.pid == proxy_pid && s.kind == "server").is_some())
        .count();
    let b = proxy_servers
        .iter()
        .filter(|ps| child_of(ps, &|s| s.pid == proxy_pid && s.kind == "client").is_some())
        .count();
    let c = proxy_clients
        .iter()
        .filter(|pc| child_of(pc, &|s| workers.contains(&s.pid) && s.kind == "server").is_some())
        .count();
    let complete = clients
        .iter()
        .filter(|cl| {
            child_of(cl, &|s| s.pid == proxy_pid && s.kind == "server")
                .and_then(|ps| child_of(ps, &|s| s.pid == proxy_pid && s.kind == "client"))
                .and_then(|pc| child_of(pc, &|s| workers.contains(&s.pid) && s.kind == "server"))
                .is_some()
        })
        .count();
    Ok(Scenario {
        name: format!("service calling a service: curl -> {runtime} proxy -> nginx"),
        requests: n,
        links: vec![
            (
                format!(
                    "spans seen: curl client {}, proxy server {}, proxy client {}, nginx server {}",
                    clients.len(),
                    proxy_servers.len(),
                    proxy_clients.len(),
                    nginx_servers.len()
                ),
                clients
                    .len()
                    .min(proxy_servers.len())
                    .min(proxy_clients.len())
                    .min(nginx_servers.len())
                    .min(n),
            ),
            (
                "proxy server span is the child of curl's client span (across processes)".into(),
                a,
            ),
            (
                "proxy client span is the child of its server span (inside the proxy)".into(),
                b,
            ),
            (
                "nginx server span is the child of the proxy's client span (across processes)"
                    .into(),
                c,
            ),
        ],
        complete,
        note: String::new(),
    })
}

/// One cost measurement: closed-loop load through the Python proxy chain.
#[derive(Clone, Debug)]
struct CostRun {
    variant: String,
    round: u32,
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    agent_cpu_s: f64,
    loadavg: String,
    error: String,
}

const CARRIERS: [&str; 4] = ["disabled", "headers", "tcp", "all"];

fn costs(rounds: u32, seconds: f64) -> anyhow::Result<Vec<CostRun>> {
    let ng = nginx();
    let proxy = Peer::python("proxy.py", &["0", &ng.port.to_string()])?;
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let mut variants: Vec<&str> = vec!["baseline"];
        variants.extend(CARRIERS);
        let k = (round as usize - 1) % variants.len();
        variants.rotate_left(k);
        for v in variants {
            let la = loadavg();
            let agent = if v == "baseline" {
                None
            } else {
                let spec = AgentSpec {
                    select: vec![format!("open_ports: \"{},{}\"", ng.port, proxy.port)],
                    ..AgentSpec::default()
                }
                .with_yaml(&format!("ebpf:\n  context_propagation: {v}\n"));
                if let Ok(a) = std::panic::catch_unwind(|| MopAgent::start(&spec)) {
                    Some(a)
                } else {
                    runs.push(CostRun {
                        variant: v.to_owned(),
                        round,
                        requests: 0,
                        rps: f64::NAN,
                        p50_ms: f64::NAN,
                        p99_ms: f64::NAN,
                        agent_cpu_s: 0.0,
                        loadavg: la,
                        error: "the agent did not start with this setting".into(),
                    });
                    continue;
                }
            };
            let cpu0 = agent.as_ref().map_or(0.0, MopAgent::cpu_seconds);
            let out = load::run(&Plan {
                port: proxy.port,
                rate: None,
                connections: 4,
                duration: Duration::from_secs_f64(seconds),
                max_requests: 0,
                request: Arc::new(|_| Request::get("/hop")),
                headers: String::new(),
                record: false,
            });
            let agent_cpu_s = agent.as_ref().map_or(0.0, |a| a.cpu_seconds() - cpu0);
            if let Some(a) = agent {
                a.settle(Duration::from_secs(10));
                a.stop();
            }
            eprintln!(
                "propagation cost: round {round} {v}: {:.0} req/s p99 {:.2} ms (load {la})",
                out.rps(),
                out.latency_ms(0.99)
            );
            runs.push(CostRun {
                variant: v.to_owned(),
                round,
                requests: out.completed,
                rps: out.rps(),
                p50_ms: out.latency_ms(0.5),
                p99_ms: out.latency_ms(0.99),
                agent_cpu_s,
                loadavg: la,
                error: String::new(),
            });
        }
    }
    Ok(runs)
}

fn go_proxy(upstream: u16) -> anyhow::Result<Peer> {
    let root = cmd::workspace_root();
    let bin = cmd::target_dir(&root)?.join("experiments/go-cov-server");
    if let Some(p) = bin.parent() {
        std::fs::create_dir_all(p)?;
    }
    cmd::output(
        Command::new("go")
            .current_dir(peers::script("go"))
            .env("GO111MODULE", "off")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("main.go"),
    )?;
    let mut c = Command::new(bin);
    c.args(["proxy", "0", &upstream.to_string()]);
    Peer::spawn(c)
}

pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (n, rounds, seconds) = if ctx.smoke { (5, 1, 1.0) } else { (50, 3, 4.0) };
    let mut scenarios = Vec::new();
    let attempt = |name: &str, r: anyhow::Result<Scenario>| match r {
        Ok(s) => s,
        Err(e) => Scenario {
            name: name.to_owned(),
            requests: n,
            note: format!("could not run: {e:#}"),
            ..Scenario::default()
        },
    };
    scenarios.push(attempt("incoming traceparent", incoming(n)));
    scenarios.push(attempt("one node", one_node(n)));
    scenarios.push(attempt(
        "Python proxy",
        chain("Python (threads)", n, |up| {
            Peer::python("proxy.py", &["0", &up.to_string()])
        }),
    ));
    scenarios.push(attempt(
        "Node proxy",
        chain("Node (event loop)", n, |up| {
            let mut c = Command::new("node");
            c.arg(peers::script("node/proxy.js"))
                .args(["0", &up.to_string()]);
            Peer::spawn(c)
        }),
    ));
    scenarios.push(attempt("Go proxy", chain("Go (goroutines)", n, go_proxy)));
    for s in &scenarios {
        eprintln!(
            "propagation: {}: {}/{} complete {}",
            s.name, s.complete, s.requests, s.note
        );
    }
    let cost = costs(rounds, seconds)?;
    write_report(ctx, &scenarios, &cost, rounds, seconds)
}

fn write_report(
    ctx: &Ctx,
    scenarios: &[Scenario],
    cost: &[CostRun],
    rounds: u32,
    seconds: f64,
) -> anyhow::Result<()> {
    let mut report = Report::new(
        ctx,
        "propagation",
        "Propagation: parent/child chains and the cost of context carriers",
    )?;
    let mut rows = Vec::new();
    for s in scenarios {
        rows.push(vec![
            format!("**{}**", s.name),
            "complete chains".into(),
            format!("{}/{}", s.complete, s.requests),
        ]);
        for (l, k) in &s.links {
            rows.push(vec![
                String::new(),
                l.clone(),
                format!("{k}/{}", s.requests),
            ]);
        }
        if !s.note.is_empty() {
            rows.push(vec![String::new(), s.note.clone(), String::new()]);
        }
    }
    let mut summary = String::from("### Chains\n\n");
    summary.push_str(&table(
        &["scenario", "link", "requests where it holds"],
        &rows,
    ));
    summary.push_str("\n### Cost of the context carriers\n\n");
    let mut crow = Vec::new();
    let mut cjson = Vec::new();
    let mut variants = vec!["baseline"];
    variants.extend(CARRIERS);
    for v in variants {
        let sel: Vec<&CostRun> = cost.iter().filter(|c| c.variant == v).collect();
        if sel.iter().any(|c| !c.error.is_empty()) {
            crow.push(vec![
                v.to_owned(),
                sel[0].error.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        let ratio = |f: &dyn Fn(&CostRun) -> f64| -> Vec<f64> {
            sel.iter()
                .filter_map(|c| {
                    let b = cost
                        .iter()
                        .find(|b| b.variant == "baseline" && b.round == c.round)?;
                    Some(f(c) / f(b))
                })
                .collect()
        };
        let rps = ratio(&|c| c.rps);
        let p99 = ratio(&|c| c.p99_ms);
        #[expect(clippy::cast_precision_loss, reason = "request counts")]
        let cpu: Vec<f64> = sel
            .iter()
            .map(|c| c.agent_cpu_s * 1e6 / c.requests.max(1) as f64)
            .collect();
        crow.push(vec![
            v.to_owned(),
            format!(
                "{:.0}",
                median(&sel.iter().map(|c| c.rps).collect::<Vec<_>>())
            ),
            spread(&rps, 3),
            spread(&p99, 2),
            if v == "baseline" {
                "-".into()
            } else {
                format!("{:.0}", median(&cpu))
            },
            sel.iter()
                .map(|c| c.loadavg.split(' ').next().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        ]);
        cjson.push(
            json!({"variant": v, "rps_ratio": rps, "p99_ratio": p99, "agent_us_per_request": cpu,
            "rps": sel.iter().map(|c| c.rps).collect::<Vec<_>>()}),
        );
    }
    summary.push_str(&table(
        &[
            "ebpf.context_propagation",
            "req/s through the chain (median)",
            "throughput / baseline",
            "p99 / baseline",
            "agent CPU us per request",
            "1-min load per round",
        ],
        &crow,
    ));
    report.summary(&summary);
    report.data("scenarios", Value::Array(scenarios.iter().map(|s| json!({
        "name": s.name, "requests": s.requests, "complete": s.complete,
        "links": s.links.iter().map(|(l, k)| json!({"link": l, "holds": k})).collect::<Vec<_>>(),
        "note": s.note,
    })).collect()));
    report.data("cost", Value::Array(cjson));
    let rows: Vec<Vec<String>> = cost
        .iter()
        .map(|c| {
            vec![
                c.variant.clone(),
                c.round.to_string(),
                c.requests.to_string(),
                format!("{:.1}", c.rps),
                format!("{:.3}", c.p50_ms),
                format!("{:.3}", c.p99_ms),
                format!("{:.3}", c.agent_cpu_s),
                c.loadavg.clone(),
                c.error.clone(),
            ]
        })
        .collect();
    report.csv(
        "cost_runs.csv",
        &[
            "variant",
            "round",
            "requests",
            "rps",
            "p50_ms",
            "p99_ms",
            "agent_cpu_s",
            "loadavg",
            "error",
        ],
        &rows,
    )?;
    let mut method = String::from(
        "- Chains: each scenario sends its requests with one curl invocation (one keep-alive \
         connection) and the agent prints spans as JSON; links are checked by trace id and \
         parent span id. Scenarios: (1) curl sends `traceparent` to nginx, only nginx \
         instrumented; (2) curl and nginx both instrumented, no header; (3-5) curl -> a proxy \
         -> nginx, all three instrumented, the proxy calling nginx `/ok` for every request and \
         sending no header of its own: `experiments/peers/proxy.py` (threads), \
         `experiments/peers/node/proxy.js` (event loop, keep-alive agent), the Go server's \
         `proxy` mode (goroutines, net/http client). A complete chain is curl client -> proxy \
         server -> proxy client -> nginx server.\n",
    );
    let _ = writeln!(
        method,
        "- Cost: closed loop through the Python chain (4 keep-alive connections to the \
         proxy) for {seconds} s per variant, {rounds} rounds, order rotated each round: no \
         agent (baseline), then the agent instrumenting proxy and nginx with each value of \
         `ebpf.context_propagation`. Ratios are against the baseline of the same round. \
         With `tcp` and `all`, a `sock_ops` program writes a 28-byte TCP option into the first \
         segment of every request the proxy and curl send and parses it where it arrives; on \
         loopback both ends run on this machine, so the ratio counts both sides' cost. The \
         cross-node behaviour is tested between two network namespaces \
         (`tests::tcp_context`)."
    );
    report.finish(&method)?;
    Ok(())
}
