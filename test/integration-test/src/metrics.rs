//! The agent's self-metrics, scraped from its Prometheus endpoint, and the resident memory of a
//! process.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// One scrape of `/metrics`: every sample line as `series` (`name` or `name{labels}`) and value
/// as printed.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
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
        Self { samples }
    }

    /// The value of one series, exactly as rendered (`mop_events_lost_total`,
    /// `mop_parse_errors_total{protocol="http1"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
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
        self.value(series)
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
}

/// `GET /metrics` on 127.0.0.1:`port` (HTTP/1.0, so the body ends at the close).
pub fn scrape(port: u16) -> Scrape {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the agent's metrics port {port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("sending the scrape");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("reading the scrape: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
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
        assert!(scrape.value("missing").is_none());
    }
}
