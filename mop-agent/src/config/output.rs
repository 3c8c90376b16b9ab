//! Local outputs: the Prometheus scrape endpoint (`prometheus_export`,
//! `OTEL_EBPF_PROMETHEUS_*`) and the stdout span printer (`trace_printer`,
//! `OTEL_EBPF_TRACE_PRINTER`).

use std::time::Duration;

use serde::Deserialize;

use super::{
    export::{Buckets, DEFAULT_METRICS_TTL, MAX_TTL, RawBuckets, buckets, buckets_node},
    value::{self, Bad, Ctx, Parsed},
    yaml::{Node, map, text},
};

/// The Prometheus scrape endpoint, present when a port is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusConfig {
    /// TCP port; `/healthz` and `/readyz` are served there too.
    pub port: u16,
    /// Path of the metrics page (default `/metrics`).
    pub path: String,
    /// Series not updated for this long are dropped (default 5 min).
    pub ttl: Duration,
    /// Histogram bounds for this exporter.
    pub buckets: Buckets,
}

/// Spans written to stdout (`trace_printer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracePrinter {
    /// Nothing printed (default).
    Disabled,
    /// One line of text per span.
    Text,
    /// One JSON object per span per line.
    Json,
}

impl TracePrinter {
    const CHOICES: &[(&str, Self)] = &[
        ("disabled", Self::Disabled),
        ("text", Self::Text),
        ("json", Self::Json),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("disabled", |(n, _)| n)
    }
}

fn prometheus_path(node: &Node) -> Parsed<String> {
    let s = value::string(node)?;
    if s.starts_with('/') && s != "/healthz" && s != "/readyz" && !s.contains(char::is_whitespace) {
        Ok(s)
    } else {
        Err(Bad::Invalid(
            "a path starting with `/`, other than /healthz and /readyz".to_owned(),
        ))
    }
}

/// `prometheus_export` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrometheus {
    port: Option<Node>,
    path: Option<Node>,
    ttl: Option<Node>,
    buckets: RawBuckets,
    pub(super) features: Option<Node>,
}

/// Validates `prometheus_export`; `None` when no port (or port 0) is set.
pub(super) fn build_prometheus(raw: &RawPrometheus, ctx: &mut Ctx<'_>) -> Option<PrometheusConfig> {
    let port = ctx.get(
        "prometheus_export.port",
        raw.port.as_ref(),
        &["OTEL_EBPF_PROMETHEUS_PORT"],
        value::integer(0, 65_535),
    );
    let path = ctx
        .get(
            "prometheus_export.path",
            raw.path.as_ref(),
            &["OTEL_EBPF_PROMETHEUS_PATH"],
            prometheus_path,
        )
        .unwrap_or_else(|| "/metrics".to_owned());
    let ttl = ctx
        .get(
            "prometheus_export.ttl",
            raw.ttl.as_ref(),
            &["OTEL_EBPF_PROMETHEUS_TTL"],
            value::duration(Duration::from_secs(1), MAX_TTL),
        )
        .unwrap_or(DEFAULT_METRICS_TTL);
    let buckets = buckets(&raw.buckets, "prometheus_export", ctx);
    let port = port.filter(|p| *p != 0)? as u16;
    Some(PrometheusConfig {
        port,
        path,
        ttl,
        buckets,
    })
}

/// Validates `trace_printer` / `OTEL_EBPF_TRACE_PRINTER`.
pub(super) fn build_printer(node: Option<&Node>, ctx: &mut Ctx<'_>) -> TracePrinter {
    ctx.get(
        "trace_printer",
        node,
        &["OTEL_EBPF_TRACE_PRINTER"],
        value::choice(TracePrinter::CHOICES, &["json_indent", "counter"]),
    )
    .unwrap_or(TracePrinter::Disabled)
}

impl PrometheusConfig {
    /// The effective `prometheus_export` section.
    pub(super) fn to_node(&self) -> Node {
        map([
            ("port", Some(Node::Int(self.port.into()))),
            ("path", Some(text(self.path.clone()))),
            ("ttl", Some(text(value::format_duration(self.ttl)))),
            ("buckets", Some(buckets_node(&self.buckets))),
        ])
    }
}
