//! `accuracy`: every request as the client measured it against the span mop made of it: the
//! duration error distribution, status codes, paths, body sizes, and whether the span and RED
//! metric counts are exact.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::Duration};

use integration_test::{
    peers::{
        nginx::{Nginx, NginxOptions},
        python::PythonServer,
    },
    span::Span,
};
use serde_json::{Value, json};

use super::{
    Ctx,
    load::{self, Plan, Record, Request, RequestFn},
    report::{Report, table},
    runner::{AgentSpec, MopAgent, loadavg, quantile},
};

/// One client request next to its span (if found).
struct Pair {
    server: &'static str,
    rate: f64,
    rec: Record,
    span: Option<Span>,
}

impl Pair {
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
    fn client_us(&self) -> f64 {
        (self.rec.end_unix_nano - self.rec.start_unix_nano) as f64 / 1e3
    }

    #[expect(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
    fn span_us(&self) -> Option<f64> {
        self.span.as_ref().map(|s| s.duration_nanos() as f64 / 1e3)
    }

    fn span_int(&self, key: &str) -> Option<i64> {
        self.span.as_ref()?.attr(key)?.as_i64()
    }

    fn span_str(&self, key: &str) -> Option<String> {
        Some(self.span.as_ref()?.attr(key)?.as_str()?.to_owned())
    }

    fn path(&self) -> &str {
        self.rec.target.split('?').next().unwrap_or("")
    }

    /// The span lies inside the client's window (same wall clock).
    fn inside(&self) -> Option<bool> {
        let s = self.span.as_ref()?;
        Some(
            s.start_unix_nano >= self.rec.start_unix_nano
                && s.end_unix_nano <= self.rec.end_unix_nano,
        )
    }
}

/// The request mix for nginx: statuses 200/404/500, GET/POST/HEAD, bodies of many sizes.
fn nginx_mix() -> RequestFn {
    Arc::new(|n| match n % 6 {
        0 => Request::get(format!("/small.html?i={n}")),
        1 => Request::get(format!("/users/{n}?i={n}")),
        2 => Request::get(format!("/missing/{n}?i={n}")),
        3 => Request::get(format!("/fail?i={n}")),
        4 => Request {
            method: "POST",
            target: format!("/upload?i={n}"),
            body: vec![b'b'; usize::try_from((n * 37) % 6000).unwrap_or(0)],
        },
        _ => Request {
            method: "HEAD",
            target: format!("/small.html?i={n}"),
            body: Vec::new(),
        },
    })
}

/// The mix for the Python keep-alive server: Content-Length and chunked responses (three
/// chunks written 2 ms apart), POST bodies, 404s.
fn python_mix() -> RequestFn {
    Arc::new(|n| match n % 4 {
        0 => Request::get(format!("/ok?i={n}")),
        1 => Request::get(format!("/chunked?chunks=3&size={}&i={n}", 50 + n % 500)),
        2 => Request {
            method: "POST",
            target: format!("/upload?i={n}"),
            body: vec![b'b'; usize::try_from((n * 53) % 4000).unwrap_or(0)],
        },
        _ => Request::get(format!("/nope/{n}?i={n}")),
    })
}

struct Phase {
    server: &'static str,
    rate: f64,
    requests: u64,
    spans: usize,
    extra_spans: usize,
    red_count: f64,
    loadavg: String,
}

pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let (n_nginx, n_python) = if ctx.smoke { (120, 60) } else { (3000, 1200) };
    let phases: [(&'static str, f64, u64); 4] = [
        ("nginx", 300.0, n_nginx),
        ("nginx", 3000.0, n_nginx),
        ("python", 100.0, n_python),
        ("python", 400.0, n_python),
    ];
    let mut pairs = Vec::new();
    let mut summary_phases = Vec::new();
    for (server, rate, count) in phases {
        let (port, pids, mix, _keep): (u16, Vec<u32>, RequestFn, Box<dyn std::any::Any>) =
            if server == "nginx" {
                let nginx = Nginx::start_with(NginxOptions {
                    workers: 1,
                    ..NginxOptions::default()
                });
                (
                    nginx.port,
                    nginx.worker_pids().to_vec(),
                    nginx_mix(),
                    Box::new(nginx),
                )
            } else {
                let py = PythonServer::http11(&[]);
                (py.port, vec![py.pid()], python_mix(), Box::new(py))
            };
        let agent = MopAgent::start(&AgentSpec::port(port).printing());
        let la = loadavg();
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let out = load::run(&Plan {
            port,
            rate: Some(rate),
            connections: 4,
            duration: Duration::from_secs_f64(count as f64 / rate * 3.0 + 10.0),
            max_requests: count,
            request: mix,
            headers: String::new(),
            record: true,
        });
        let metrics = agent.settle(Duration::from_secs(10));
        let red_count = metrics.sum("http_server_request_duration_seconds_count");
        let spans: Vec<Span> = agent
            .stop()
            .into_iter()
            .filter(|s| s.kind == "server" && pids.contains(&s.pid))
            .collect();
        let mut by_seq: HashMap<u64, Span> = HashMap::new();
        let mut extra = 0;
        for s in spans.iter().cloned() {
            let seq = s
                .attr("url.query")
                .and_then(Value::as_str)
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("i=")))
                .and_then(|v| v.parse().ok());
            match seq {
                Some(seq) if !by_seq.contains_key(&seq) => {
                    by_seq.insert(seq, s);
                }
                _ => extra += 1,
            }
        }
        eprintln!(
            "accuracy: {server} at {rate}/s: {} requests, {} errors, {} spans, RED count {red_count} (load {la})",
            out.completed,
            out.errors,
            spans.len()
        );
        summary_phases.push(Phase {
            server,
            rate,
            requests: out.completed,
            spans: spans.len(),
            extra_spans: extra,
            red_count,
            loadavg: la,
        });
        for rec in out.records {
            let span = by_seq.remove(&rec.seq);
            pairs.push(Pair {
                server,
                rate,
                rec,
                span,
            });
        }
    }
    write_report(ctx, &pairs, &summary_phases)
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        return "-".into();
    }
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let p = n as f64 * 100.0 / d as f64;
    format!("{p:.2}% ({n}/{d})")
}

#[expect(clippy::too_many_lines, reason = "one report, written top to bottom")]
fn write_report(ctx: &Ctx, pairs: &[Pair], phases: &[Phase]) -> anyhow::Result<()> {
    let mut report = Report::new(
        ctx,
        "accuracy",
        "Accuracy: spans against what the client measured",
    )?;
    let header = [
        "server",
        "rate",
        "seq",
        "method",
        "target",
        "client_start_unix_nano",
        "client_end_unix_nano",
        "client_us",
        "span_us",
        "status_client",
        "status_span",
        "path_span",
        "request_body_client",
        "request_body_span",
        "response_body_client",
        "response_body_span",
        "span_inside_client_window",
    ];
    let opt = |v: Option<String>| v.unwrap_or_default();
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            vec![
                p.server.to_owned(),
                format!("{}", p.rate),
                p.rec.seq.to_string(),
                p.rec.method.to_owned(),
                p.rec.target.clone(),
                p.rec.start_unix_nano.to_string(),
                p.rec.end_unix_nano.to_string(),
                format!("{:.1}", p.client_us()),
                opt(p.span_us().map(|v| format!("{v:.1}"))),
                p.rec.status.to_string(),
                opt(p
                    .span_int("http.response.status_code")
                    .map(|v| v.to_string())),
                opt(p.span_str("url.path")),
                p.rec.request_body.to_string(),
                opt(p.span_int("http.request.body.size").map(|v| v.to_string())),
                p.rec.response_body.to_string(),
                opt(p.span_int("http.response.body.size").map(|v| v.to_string())),
                opt(p.inside().map(|v| v.to_string())),
            ]
        })
        .collect();
    report.csv("requests.csv", &header, &rows)?;

    let mut summary_rows = Vec::new();
    let mut data_phases = Vec::new();
    for ph in phases {
        let sel: Vec<&Pair> = pairs
            .iter()
            .filter(|p| p.server == ph.server && p.rate == ph.rate)
            .collect();
        let matched: Vec<&&Pair> = sel.iter().filter(|p| p.span.is_some()).collect();
        let n = sel.len();
        let m = matched.len();
        let status_ok = matched
            .iter()
            .filter(|p| p.span_int("http.response.status_code") == Some(i64::from(p.rec.status)))
            .count();
        let path_ok = matched
            .iter()
            .filter(|p| p.span_str("url.path").as_deref() == Some(p.path()))
            .count();
        let method_ok = matched
            .iter()
            .filter(|p| p.span_str("http.request.method").as_deref() == Some(p.rec.method))
            .count();
        let req_reported: Vec<&&&Pair> = matched
            .iter()
            .filter(|p| p.span_int("http.request.body.size").is_some())
            .collect();
        let req_ok = req_reported
            .iter()
            .filter(|p| {
                p.span_int("http.request.body.size") == i64::try_from(p.rec.request_body).ok()
            })
            .count();
        let resp_reported: Vec<&&&Pair> = matched
            .iter()
            .filter(|p| p.span_int("http.response.body.size").is_some())
            .collect();
        let resp_ok = resp_reported
            .iter()
            .filter(|p| {
                p.span_int("http.response.body.size") == i64::try_from(p.rec.response_body).ok()
            })
            .count();
        let inside = matched.iter().filter(|p| p.inside() == Some(true)).count();
        let err: Vec<f64> = matched
            .iter()
            .filter_map(|p| Some(p.client_us() - p.span_us()?))
            .collect();
        let rel: Vec<f64> = matched
            .iter()
            .filter_map(|p| Some(p.span_us()? / p.client_us()))
            .collect();
        summary_rows.push(vec![
            ph.server.to_owned(),
            format!("{:.0}/s", ph.rate),
            ph.requests.to_string(),
            pct(m, n),
            ph.extra_spans.to_string(),
            format!("{}", ph.red_count),
            pct(status_ok, m),
            pct(method_ok, m),
            pct(path_ok, m),
            pct(req_ok, req_reported.len()),
            pct(resp_ok, resp_reported.len()),
            pct(inside, m),
            format!(
                "{:.0} / {:.0} / {:.0}",
                quantile(&err, 0.5),
                quantile(&err, 0.99),
                quantile(&err, 1.0)
            ),
            format!("{:.2}", quantile(&rel, 0.5)),
            ph.loadavg.clone(),
        ]);
        data_phases.push(json!({
            "server": ph.server, "rate": ph.rate, "requests": ph.requests,
            "spans": ph.spans, "matched": m, "extra_spans": ph.extra_spans,
            "red_count": ph.red_count, "status_exact": status_ok, "path_exact": path_ok,
            "request_body_reported": req_reported.len(), "request_body_exact": req_ok,
            "response_body_reported": resp_reported.len(), "response_body_exact": resp_ok,
            "inside_client_window": inside,
            "client_minus_span_us": err, "span_over_client": rel,
            "client_us": matched.iter().map(|p| p.client_us()).collect::<Vec<_>>(),
            "span_us": matched.iter().filter_map(|p| p.span_us()).collect::<Vec<_>>(),
            "loadavg": ph.loadavg,
        }));
    }
    report.data("phases", Value::Array(data_phases));
    let mut summary = table(
        &[
            "server",
            "offered rate",
            "requests",
            "requests with a span",
            "spans without a request",
            "RED count",
            "status exact",
            "method exact",
            "path exact",
            "request body exact (of reported)",
            "response body exact (of reported)",
            "span inside client window",
            "client - span duration, us: p50 / p99 / max",
            "span / client duration (p50)",
            "load (1/5/15 min)",
        ],
        &summary_rows,
    );
    summary.push_str(&mismatches(pairs));
    report.summary(&summary);
    let method = "- Servers: nginx (1 worker, the integration harness's configuration: static files, \
         `return` locations for 200/500, a POST `/upload`, 404 from its own error page) and the \
         harness's Python HTTP/1.1 keep-alive server (`test/peers/http11_server.py`: \
         Content-Length and chunked responses, the chunks written 2 ms apart, POST bodies, \
         404).\n\
         - Client: `xtask/src/experiment/load.rs`, 4 keep-alive connections, open loop at the \
         rate shown, each request's window taken just before its first byte is written and just \
         after the last byte of its response is read (wall clock, the clock of the spans' \
         `start_unix_nano`), with its status and body sizes. Mix for nginx: GET 200 file, GET \
         200 `return`, GET 404, GET 500, POST with bodies of 0-6000 bytes, HEAD; for Python: \
         GET Content-Length, GET chunked, POST 0-4000 bytes, GET 404.\n\
         - Every request carries a unique `?i=N`; its span is found by `url.query`. The agent \
         (fresh for each phase) selects the server's port and prints spans as JSON; the RED \
         count is the sum of `http_server_request_duration_seconds_count` from its Prometheus \
         endpoint after the spans settle.\n\
         - Duration error = client duration - span duration: positive by construction (the \
         span runs from the server reading the request to it writing the response, inside the \
         client's window), so it measures loopback transfer plus the client's own overhead; a \
         negative value or a span outside the client's window would be a timing error.\n\
         - A body size a span leaves out is \"not reported\" (mop omits sizes it could not \
         determine) and is counted apart from a wrong size.\n";
    report.finish(method)?;
    Ok(())
}

/// Lists the kinds of mismatches found, with a few examples each.
fn mismatches(pairs: &[Pair]) -> String {
    let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |kind: String, example: String| {
        if let Some(k) = kinds.iter_mut().find(|(k, _)| *k == kind) {
            if k.1.len() < 3 {
                k.1.push(example);
            }
        } else {
            kinds.push((kind, vec![example]));
        }
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in pairs {
        let what = format!("{} {} {}", p.server, p.rec.method, p.rec.target);
        let mut note = |k: String, ex: String| {
            *counts.entry(k.clone()).or_default() += 1;
            add(k, ex);
        };
        if p.span.is_none() {
            note(format!("{}: no span", p.server), what.clone());
            continue;
        }
        if p.span_int("http.response.status_code") != Some(i64::from(p.rec.status)) {
            note(
                format!("{}: status differs", p.server),
                format!(
                    "{what}: client {} span {:?}",
                    p.rec.status,
                    p.span_int("http.response.status_code")
                ),
            );
        }
        match p.span_int("http.response.body.size") {
            None => note(
                format!(
                    "{} {}: response body size not reported",
                    p.server, p.rec.method
                ),
                what.clone(),
            ),
            Some(v) if v != i64::try_from(p.rec.response_body).unwrap_or(-1) => note(
                format!("{} {}: response body size differs", p.server, p.rec.method),
                format!("{what}: client {} span {v}", p.rec.response_body),
            ),
            _ => {}
        }
        match p.span_int("http.request.body.size") {
            None => note(
                format!(
                    "{} {}: request body size not reported",
                    p.server, p.rec.method
                ),
                what.clone(),
            ),
            Some(v) if v != i64::try_from(p.rec.request_body).unwrap_or(-1) => note(
                format!("{} {}: request body size differs", p.server, p.rec.method),
                format!("{what}: client {} span {v}", p.rec.request_body),
            ),
            _ => {}
        }
        if p.inside() == Some(false) {
            note(
                format!("{}: span outside the client's window", p.server),
                format!(
                    "{what}: client {}..{} span {}..{}",
                    p.rec.start_unix_nano,
                    p.rec.end_unix_nano,
                    p.span.as_ref().map_or(0, |s| s.start_unix_nano),
                    p.span.as_ref().map_or(0, |s| s.end_unix_nano)
                ),
            );
        }
    }
    if kinds.is_empty() {
        return "\nEvery request had exactly one span with the client's status, method, path and \
                body sizes, inside the client's window.\n"
            .into();
    }
    let mut out = String::from(
        "\nWhere the spans differ from the client (counts over all phases; examples):\n\n",
    );
    for (k, ex) in &kinds {
        let _ = writeln!(
            out,
            "- **{k}**: {} requests; e.g. {}",
            counts[k],
            ex.join("; ")
        );
    }
    out
}
