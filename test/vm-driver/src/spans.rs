//! Reading the agent's JSON spans and comparing them with the plan.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use crate::http;

/// What a span is compared by: kind, method, `url.path` (or the path of `url.full`), status.
type Key = (String, String, String, i64);

/// The spans one run must produce, exactly.
pub(crate) struct Expected {
    requests: usize,
    port: i64,
    server_pid: u32,
    client_pid: u32,
    tally: BTreeMap<Key, usize>,
}

impl Expected {
    /// One server and one client span per planned request.
    pub(crate) fn new(requests: usize, port: u16, server_pid: u32, client_pid: u32) -> Self {
        let mut tally = BTreeMap::new();
        for i in 0..requests {
            let ex = http::plan(i);
            for kind in ["server", "client"] {
                let key = (
                    kind.to_owned(),
                    ex.method.to_owned(),
                    ex.path.to_owned(),
                    i64::from(ex.status),
                );
                *tally.entry(key).or_insert(0) += 1;
            }
        }
        Self {
            requests,
            port: i64::from(port),
            server_pid,
            client_pid,
            tally,
        }
    }
}

/// What the spans on stdout amount to.
pub(crate) struct Outcome {
    pub(crate) server_spans: usize,
    pub(crate) client_spans: usize,
    /// The first problem found, if any.
    pub(crate) problem: Option<String>,
}

/// True once stdout holds at least the expected number of spans of each kind.
pub(crate) fn enough(lines: &[String], expected: &Expected) -> bool {
    let (server, client) = count_kinds(lines);
    server >= expected.requests && client >= expected.requests
}

fn count_kinds(lines: &[String]) -> (usize, usize) {
    let mut counts = (0, 0);
    for span in lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        match span["kind"].as_str() {
            Some("server") => counts.0 += 1,
            Some("client") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// Compares every span with the plan: exact counts per (kind, method, path, status), the
/// server port, and the pid of the server or client process.
pub(crate) fn check(lines: &[String], expected: &Expected) -> Outcome {
    let (server_spans, client_spans) = count_kinds(lines);
    let mut problems = Vec::new();
    let mut tally: BTreeMap<Key, usize> = BTreeMap::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        match parse(line, expected) {
            Ok(key) => *tally.entry(key).or_insert(0) += 1,
            Err(e) => problems.push(e),
        }
    }
    for (key, want) in &expected.tally {
        let got = tally.get(key).copied().unwrap_or(0);
        if got != *want {
            problems.push(format!(
                "{} {} {} {}: {got} spans, want {want}",
                key.0, key.1, key.2, key.3
            ));
        }
    }
    for (key, got) in &tally {
        if !expected.tally.contains_key(key) {
            problems.push(format!(
                "unexpected {got}x {} {} {} {}",
                key.0, key.1, key.2, key.3
            ));
        }
    }
    Outcome {
        server_spans,
        client_spans,
        problem: (!problems.is_empty()).then(|| {
            let more = problems.len().saturating_sub(3);
            let mut text = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if more > 0 {
                let _ = write!(text, "; and {more} more");
            }
            text
        }),
    }
}

/// A span line in a few words for a failure report: kind, pid, method, URL, status, times.
pub(crate) fn brief(line: &str) -> String {
    let Ok(span) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let attrs = &span["attributes"];
    let url = attrs["url.path"].as_str().or(attrs["url.full"].as_str());
    format!(
        "{} pid={} {} {} status={} start={} end={} trace={} parent={}",
        span["kind"].as_str().unwrap_or("?"),
        span["pid"],
        attrs["http.request.method"].as_str().unwrap_or("?"),
        url.unwrap_or("?"),
        attrs["http.response.status_code"],
        span["start_unix_nano"],
        span["end_unix_nano"],
        span["trace_id"].as_str().unwrap_or(""),
        span["parent_span_id"].as_str().unwrap_or(""),
    )
}

/// One span line as its key, after checking its port and pid.
fn parse(line: &str, expected: &Expected) -> Result<Key, String> {
    let span: Value =
        serde_json::from_str(line).map_err(|e| format!("stdout line is not JSON ({e}): {line}"))?;
    let attrs = &span["attributes"];
    let kind = span["kind"].as_str().unwrap_or("?").to_owned();
    let method = attrs["http.request.method"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let (path, pid) = match kind.as_str() {
        "server" => (
            attrs["url.path"].as_str().unwrap_or("?").to_owned(),
            expected.server_pid,
        ),
        "client" => (
            attrs["url.full"].as_str().map_or("?", path_of).to_owned(),
            expected.client_pid,
        ),
        other => return Err(format!("span of kind {other:?}: {line}")),
    };
    let status = attrs["http.response.status_code"]
        .as_i64()
        .ok_or_else(|| format!("no integer http.response.status_code: {line}"))?;
    if attrs["server.port"].as_i64() != Some(expected.port) {
        return Err(format!("server.port is not {}: {line}", expected.port));
    }
    if span["pid"].as_u64() != Some(u64::from(pid)) {
        return Err(format!("{kind} span pid is not {pid}: {line}"));
    }
    Ok((kind, method, path, status))
}

/// The path of a URL: after the authority, without the query.
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split('?').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: &str, pid: u32, method: &str, url: &str, status: i64, port: i64) -> String {
        let url_key = if kind == "server" {
            "url.path"
        } else {
            "url.full"
        };
        serde_json::json!({
            "kind": kind, "pid": pid,
            "attributes": {
                "http.request.method": method, url_key: url,
                "http.response.status_code": status, "server.port": port,
            }
        })
        .to_string()
    }

    fn good(requests: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..requests {
            let ex = http::plan(i);
            let status = i64::from(ex.status);
            lines.push(span("server", 10, ex.method, ex.path, status, 8080));
            let full = format!("http://127.0.0.1:8080{}", ex.target);
            lines.push(span("client", 20, ex.method, &full, status, 8080));
        }
        lines
    }

    #[test]
    fn exact_spans_pass() {
        let expected = Expected::new(6, 8080, 10, 20);
        let lines = good(6);
        assert!(enough(&lines, &expected));
        let out = check(&lines, &expected);
        assert_eq!((out.server_spans, out.client_spans), (6, 6));
        assert_eq!(out.problem, None);
    }

    #[test]
    fn missing_extra_and_wrong_spans_fail() {
        let expected = Expected::new(6, 8080, 10, 20);
        let mut lines = good(6);
        lines.pop();
        assert!(!enough(&lines, &expected));
        assert!(
            check(&lines, &expected)
                .problem
                .unwrap()
                .contains("client POST /echo 200: 1 spans, want 2")
        );

        let mut lines = good(6);
        lines.push(lines[0].clone());
        assert!(check(&lines, &expected).problem.is_some());

        let mut lines = good(6);
        lines[0] = span("server", 10, "GET", "/hello", 200, 9999);
        assert!(
            check(&lines, &expected)
                .problem
                .unwrap()
                .contains("server.port")
        );

        let mut lines = good(6);
        lines[1] = span(
            "client",
            99,
            "GET",
            "http://127.0.0.1:8080/hello",
            200,
            8080,
        );
        assert!(check(&lines, &expected).problem.unwrap().contains("pid"));
    }

    #[test]
    fn url_paths() {
        assert_eq!(path_of("http://127.0.0.1:8080/hello?i=3"), "/hello");
        assert_eq!(path_of("http://h/"), "/");
        assert_eq!(path_of("http://h"), "");
    }
}
