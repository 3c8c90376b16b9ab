//! The agent's Prometheus endpoint (`prometheus_export.port`), scraped from the test process
//! (which no test instruments) with a plain HTTP/1.0 GET, and its samples looked up by name and
//! labels.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use crate::util;

/// One scrape of `/metrics`.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// The exposition text.
    pub text: String,
}

impl Scrape {
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
    Scrape {
        text: body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_samples_by_labels() {
        let scrape = Scrape {
            text: "# HELP x y\nmop_parse_errors_total{protocol=\"http1\"} 0\n\
                   mop_parse_errors_total{protocol=\"http2\"} 3\nmop_tls_libraries_attached 2\n"
                .to_owned(),
        };
        assert_eq!(
            scrape.value("mop_parse_errors_total", &[("protocol", "http2")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("mop_tls_libraries_attached", &[]), Some(2.0));
        assert_eq!(scrape.value("mop_tls_libraries_attached_x", &[]), None);
    }
}
