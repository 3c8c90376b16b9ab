//! The agent's Prometheus endpoint (`prometheus_export.port`), scraped from the test process
//! (which no test instruments) with a plain HTTP/1.0 GET, its samples looked up by name and
//! labels or by exact series; and the resident memory of a process.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use crate::util;

/// One scrape of `/metrics`: the exposition text and every sample line as `series` (`name` or
/// `name{labels}`) and value as printed.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// The exposition text.
    pub text: String,
    samples: Vec<(String, String)>,
}

impl Scrape {
    /// Parses the text exposition format (comments skipped).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.trim().to_owned()))
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the sample `name` whose labels include every `labels` pair (`None` when
    /// there is no such sample).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.text.lines().find_map(|line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
    }

    /// [`Scrape::value`], panicking (with the text) when the sample is missing.
    pub fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?} on the agent's /metrics:\n{}",
                self.text
            )
        })
    }

    /// The value of one series, exactly as rendered (`mop_events_lost_total`,
    /// `mop_parse_errors_total{protocol="http1"}`).
    pub fn series(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The value of a counter that must be there, as the whole number it is.
    pub fn counter(&self, series: &str) -> u64 {
        let Some((_, printed)) = self.samples.iter().find(|(s, _)| s == series) else {
            panic!("no series {series} in the scrape:\n{self:?}");
        };
        printed
            .parse()
            .unwrap_or_else(|e| panic!("{series} {printed}: not a whole number: {e}"))
    }

    /// The value of a series that must be there.
    pub fn get(&self, series: &str) -> f64 {
        self.series(series)
            .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{self:?}"))
    }

    /// The sum over every series of metric `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| s == name || s.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }

    /// The sum over every series of counter `name` whose labels include every `labels` pair
    /// (whole numbers: a value that is not one is left out).
    pub fn count_with(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.samples
            .iter()
            .filter_map(|(series, value)| {
                let labels = series.strip_prefix(name)?.strip_prefix('{')?;
                wanted
                    .iter()
                    .all(|w| labels.contains(w.as_str()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
            })
            .sum()
    }
}

/// A Prometheus config block for the agent on a free port; returns the YAML and the port.
pub fn config_block() -> (String, u16) {
    let port = util::free_port();
    (format!("prometheus_export:\n  port: {port}\n"), port)
}

/// GET `/metrics` on 127.0.0.1:`port` (waiting, bounded, for the port to accept).
pub fn scrape(port: u16) -> Scrape {
    util::wait_for_port(
        port,
        Duration::from_secs(10),
        "the agent's Prometheus endpoint",
    );
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("connecting to the metrics port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("sending the scrape");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading /metrics: {e}"));
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response from /metrics: {raw:?}"));
    assert!(
        head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"),
        "GET /metrics answered {head:?}"
    );
    Scrape::parse(body)
}

/// Resident and peak resident memory of `pid` in KiB (`VmRSS`, `VmHWM`), `None` once it exited.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_samples_by_labels() {
        let scrape = Scrape::parse(
            "# HELP x y\nmop_parse_errors_total{protocol=\"http1\"} 0\n\
             mop_parse_errors_total{protocol=\"http2\"} 3\nmop_tls_libraries_attached 2\n",
        );
        assert_eq!(
            scrape.value("mop_parse_errors_total", &[("protocol", "http2")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("mop_tls_libraries_attached", &[]), Some(2.0));
        assert_eq!(scrape.value("mop_tls_libraries_attached_x", &[]), None);
    }

    #[test]
    fn parses_samples_and_sums_label_sets() {
        let scrape = Scrape::parse(
            "# HELP mop_events_lost_total x\n# TYPE mop_events_lost_total counter\n\
             mop_events_lost_total 12\n\
             mop_parse_errors_total{protocol=\"http1\"} 3\n\
             mop_parse_errors_total{protocol=\"http2\"} 4\n\
             mop_parse_errors_total_other 100\n",
        );
        assert_eq!(scrape.counter("mop_events_lost_total"), 12);
        assert_eq!(
            scrape.counter("mop_parse_errors_total{protocol=\"http1\"}"),
            3
        );
        assert!((scrape.sum("mop_parse_errors_total") - 7.0).abs() < 1e-9);
        assert!(scrape.series("missing").is_none());
    }

    #[test]
    fn sums_the_series_with_given_labels() {
        let scrape = Scrape::parse(
            "x_count{service_name=\"a\",code=\"200\"} 3\n\
             x_count{service_name=\"a\",code=\"404\"} 4\n\
             x_count{service_name=\"b\",code=\"200\"} 5\n\
             x_count_other{service_name=\"a\"} 100\n",
        );
        assert_eq!(scrape.count_with("x_count", &[("service_name", "a")]), 7);
        assert_eq!(scrape.count_with("x_count", &[("code", "200")]), 8);
        assert_eq!(scrape.count_with("x_count", &[("service_name", "c")]), 0);
    }
}
