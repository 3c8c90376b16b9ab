//! The OTLP exporters: `otel_traces_export` (batching; the sampler is in `sampler`),
//! `otel_metrics_export`, histogram buckets and the top-level `metrics.features`.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    error::Origin,
    otlp::{self, CommonNodes, Compression, OtlpCommon, OtlpEndpoint, OtlpProtocol, Signal},
    output::RawPrometheus,
    sampler::{self, RawSampler, SamplerConfig},
    value::{self, Bad, Ctx, Parsed},
    yaml::{Node, map, text},
};

const TRACES: Signal = Signal {
    section: "otel_traces_export",
    env: "TRACES",
    path: "/v1/traces",
};
const METRICS: Signal = Signal {
    section: "otel_metrics_export",
    env: "METRICS",
    path: "/v1/metrics",
};

/// Default histogram bounds for durations, in seconds (OpenTelemetry HTTP semantic conventions).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Default histogram bounds for body sizes, in bytes (OBI's defaults).
pub const DEFAULT_SIZE_BUCKETS: &[f64] = &[
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
/// Default series expiry for both metric exporters (OBI's default).
pub const DEFAULT_METRICS_TTL: Duration = Duration::from_mins(5);
pub(super) const MAX_TTL: Duration = Duration::from_hours(168);

/// The OTLP trace exporter, validated; disabled when `endpoint` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracesExportConfig {
    /// Resolved endpoint (see `config::otlp` for the rules).
    pub endpoint: Option<OtlpEndpoint>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Extra request headers / gRPC metadata.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout (default 10 s).
    pub timeout: Duration,
    /// Body compression.
    pub compression: Option<Compression>,
    /// Batching of spans before export.
    pub batch: BatchConfig,
    /// Memory the span queue may use before new spans are dropped (default 64 MiB).
    pub queue_memory_cap_bytes: u64,
    /// PEM file of CAs to trust.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
}

/// Span batching, as the OpenTelemetry batch span processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Longest wait before a partial batch is sent (`OTEL_BSP_SCHEDULE_DELAY`, default 5 s).
    pub schedule_delay: Duration,
    /// Most spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_export_batch_size: usize,
    /// Most spans waiting to be exported (`OTEL_BSP_MAX_QUEUE_SIZE`, default 4096 as in OBI).
    pub max_queue_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_secs(5),
            max_export_batch_size: 512,
            max_queue_size: 4096,
        }
    }
}

/// The OTLP metric exporter, validated; disabled when `endpoint` is `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsExportConfig {
    /// Resolved endpoint.
    pub endpoint: Option<OtlpEndpoint>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Extra request headers / gRPC metadata.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Body compression.
    pub compression: Option<Compression>,
    /// PEM file of CAs to trust.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Time between pushes (default 60 s).
    pub interval: Duration,
    /// Series not updated for this long are dropped (default 5 min).
    pub ttl: Duration,
    /// Histogram bounds.
    pub buckets: Buckets,
    /// Which metric groups are produced (shared with Prometheus).
    pub features: MetricFeatures,
}

/// Histogram bucket bounds (OBI's `buckets` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets {
    /// Request and call durations, seconds.
    pub duration_histogram: Vec<f64>,
    /// Request body sizes, bytes.
    pub request_size_histogram: Vec<f64>,
    /// Response body sizes, bytes.
    pub response_size_histogram: Vec<f64>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            duration_histogram: DEFAULT_DURATION_BUCKETS.to_vec(),
            request_size_histogram: DEFAULT_SIZE_BUCKETS.to_vec(),
            response_size_histogram: DEFAULT_SIZE_BUCKETS.to_vec(),
        }
    }
}

/// Metric groups (OBI's `metrics.features`); mop implements `application` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricFeatures {
    /// HTTP/RPC duration and body-size histograms.
    pub application: bool,
}

fn features(node: &Node) -> Parsed<MetricFeatures> {
    let mut out = MetricFeatures { application: false };
    for f in value::string_list(node)? {
        match f.to_ascii_lowercase().as_str() {
            "application" => out.application = true,
            "all"
            | "*"
            | "network"
            | "network_inter_zone"
            | "network_flow_packets"
            | "application_span"
            | "application_span_otel"
            | "application_span_sizes"
            | "application_host"
            | "application_runtime"
            | "application_jvm"
            | "application_service_graph"
            | "stats"
            | "stats_tcp_rtt"
            | "stats_tcp_failed_connections"
            | "stats_tcp_retransmits"
            | "stats_tcp_io"
            | "ebpf" => {
                return Err(Bad::Unsupported("application".to_owned()));
            }
            _ => {
                return Err(Bad::Invalid(
                    "a list of metric groups: application".to_owned(),
                ));
            }
        }
    }
    Ok(out)
}

/// `otel_traces_export` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTraces {
    endpoint: Option<Node>,
    protocol: Option<Node>,
    headers: Option<Node>,
    timeout: Option<Node>,
    compression: Option<Node>,
    ca_file: Option<Node>,
    insecure_skip_verify: Option<Node>,
    sampler: RawSampler,
    batch_timeout: Option<Node>,
    max_export_batch_size: Option<Node>,
    max_queue_size: Option<Node>,
    queue_memory_cap: Option<Node>,
}

/// `otel_metrics_export` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    endpoint: Option<Node>,
    protocol: Option<Node>,
    headers: Option<Node>,
    timeout: Option<Node>,
    compression: Option<Node>,
    ca_file: Option<Node>,
    insecure_skip_verify: Option<Node>,
    interval: Option<Node>,
    ttl: Option<Node>,
    buckets: RawBuckets,
    features: Option<Node>,
}

/// `buckets` as written (both exporters).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[expect(clippy::struct_field_names, reason = "OBI's key names")]
pub(super) struct RawBuckets {
    duration_histogram: Option<Node>,
    request_size_histogram: Option<Node>,
    response_size_histogram: Option<Node>,
}

/// Top-level `metrics` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetricsCommon {
    features: Option<Node>,
}

pub(super) fn buckets(raw: &RawBuckets, section: &str, ctx: &mut Ctx<'_>) -> Buckets {
    let d = Buckets::default();
    let mut get = |name: &str, node: Option<&Node>, default: Vec<f64>| {
        ctx.yaml(&format!("{section}.buckets.{name}"), node, value::buckets)
            .unwrap_or(default)
    };
    Buckets {
        duration_histogram: get(
            "duration_histogram",
            raw.duration_histogram.as_ref(),
            d.duration_histogram,
        ),
        request_size_histogram: get(
            "request_size_histogram",
            raw.request_size_histogram.as_ref(),
            d.request_size_histogram,
        ),
        response_size_histogram: get(
            "response_size_histogram",
            raw.response_size_histogram.as_ref(),
            d.response_size_histogram,
        ),
    }
}

/// Validates `otel_traces_export` and the trace exporter variables; also returns the sampler.
pub(super) fn build_traces(
    raw: &RawTraces,
    ctx: &mut Ctx<'_>,
) -> (TracesExportConfig, SamplerConfig) {
    let nodes = CommonNodes {
        endpoint: raw.endpoint.as_ref(),
        protocol: raw.protocol.as_ref(),
        headers: raw.headers.as_ref(),
        timeout: raw.timeout.as_ref(),
        compression: raw.compression.as_ref(),
        ca_file: raw.ca_file.as_ref(),
        insecure_skip_verify: raw.insecure_skip_verify.as_ref(),
    };
    let OtlpCommon {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        ca_file,
        insecure_skip_verify,
    } = otlp::build(&TRACES, &nodes, ctx);
    let d = BatchConfig::default();
    let size = value::integer(1, 1 << 20);
    let delay = ctx
        .env(
            &["OTEL_EBPF_OTLP_TRACES_BATCH_TIMEOUT"],
            value::duration(Duration::from_millis(1), Duration::from_hours(1)),
        )
        .or_else(|| {
            ctx.env(
                &["OTEL_BSP_SCHEDULE_DELAY"],
                value::millis(Duration::from_millis(1), Duration::from_hours(1)),
            )
        });
    let yaml_delay = ctx.yaml(
        "otel_traces_export.batch_timeout",
        raw.batch_timeout.as_ref(),
        value::duration(Duration::from_millis(1), Duration::from_hours(1)),
    );
    let batch = BatchConfig {
        schedule_delay: delay.or(yaml_delay).unwrap_or(d.schedule_delay),
        max_export_batch_size: ctx
            .get(
                "otel_traces_export.max_export_batch_size",
                raw.max_export_batch_size.as_ref(),
                &["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
                &size,
            )
            .map_or(d.max_export_batch_size, |n| n as usize),
        max_queue_size: ctx
            .get(
                "otel_traces_export.max_queue_size",
                raw.max_queue_size.as_ref(),
                &[
                    "OTEL_EBPF_OTLP_TRACES_MAX_QUEUE_SIZE",
                    "OTEL_BSP_MAX_QUEUE_SIZE",
                ],
                &size,
            )
            .map_or(d.max_queue_size, |n| n as usize),
    };
    if batch.max_export_batch_size > batch.max_queue_size {
        ctx.invalid(
            Origin::Key("otel_traces_export.max_export_batch_size".to_owned()),
            batch.max_export_batch_size.to_string(),
            format!("at most max_queue_size ({})", batch.max_queue_size),
        );
    }
    let traces = TracesExportConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        batch,
        queue_memory_cap_bytes: ctx
            .yaml(
                "otel_traces_export.queue_memory_cap",
                raw.queue_memory_cap.as_ref(),
                value::byte_size(1 << 20, 16 << 30),
            )
            .unwrap_or(64 << 20),
        ca_file,
        insecure_skip_verify,
    };
    (traces, sampler::build(&raw.sampler, ctx))
}

/// Validates the metric feature list: `OTEL_EBPF_METRICS_FEATURES`, then `metrics.features`,
/// then OBI's deprecated per-exporter `features` keys.
pub(super) fn build_features(
    common: &RawMetricsCommon,
    otel: &RawMetrics,
    prom: &RawPrometheus,
    ctx: &mut Ctx<'_>,
) -> MetricFeatures {
    let deprecated_otel = ctx.yaml(
        "otel_metrics_export.features",
        otel.features.as_ref(),
        features,
    );
    let deprecated_prom = ctx.yaml(
        "prometheus_export.features",
        prom.features.as_ref(),
        features,
    );
    ctx.get(
        "metrics.features",
        common.features.as_ref(),
        &["OTEL_EBPF_METRICS_FEATURES"],
        features,
    )
    .or(deprecated_otel)
    .or(deprecated_prom)
    .unwrap_or(MetricFeatures { application: true })
}

/// Validates `otel_metrics_export` and the metric exporter variables.
pub(super) fn build_metrics(
    raw: &RawMetrics,
    features: MetricFeatures,
    ctx: &mut Ctx<'_>,
) -> MetricsExportConfig {
    let nodes = CommonNodes {
        endpoint: raw.endpoint.as_ref(),
        protocol: raw.protocol.as_ref(),
        headers: raw.headers.as_ref(),
        timeout: raw.timeout.as_ref(),
        compression: raw.compression.as_ref(),
        ca_file: raw.ca_file.as_ref(),
        insecure_skip_verify: raw.insecure_skip_verify.as_ref(),
    };
    let OtlpCommon {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        ca_file,
        insecure_skip_verify,
    } = otlp::build(&METRICS, &nodes, ctx);
    let range = (Duration::from_millis(100), Duration::from_hours(24));
    let yaml_interval = ctx.yaml(
        "otel_metrics_export.interval",
        raw.interval.as_ref(),
        value::duration(range.0, range.1),
    );
    let env_interval = ctx
        .env(
            &["OTEL_EBPF_METRICS_INTERVAL"],
            value::duration(range.0, range.1),
        )
        .or_else(|| {
            ctx.env(
                &["OTEL_METRIC_EXPORT_INTERVAL"],
                value::millis(range.0, range.1),
            )
        });
    MetricsExportConfig {
        endpoint,
        protocol,
        headers,
        timeout,
        compression,
        ca_file,
        insecure_skip_verify,
        interval: env_interval
            .or(yaml_interval)
            .unwrap_or(Duration::from_mins(1)),
        ttl: ctx
            .get(
                "otel_metrics_export.ttl",
                raw.ttl.as_ref(),
                &["OTEL_EBPF_METRICS_TTL"],
                value::duration(Duration::from_secs(1), MAX_TTL),
            )
            .unwrap_or(DEFAULT_METRICS_TTL),
        buckets: buckets(&raw.buckets, "otel_metrics_export", ctx),
        features,
    }
}

pub(super) fn buckets_node(b: &Buckets) -> Node {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only integral values below 2^53 become integers"
    )]
    let number = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 9e15 {
            Node::Int(x as i128)
        } else {
            Node::Float(x)
        }
    };
    let list = |v: &[f64]| Some(Node::Seq(v.iter().map(|x| number(*x)).collect()));
    map([
        ("duration_histogram", list(&b.duration_histogram)),
        ("request_size_histogram", list(&b.request_size_histogram)),
        ("response_size_histogram", list(&b.response_size_histogram)),
    ])
}

impl TracesExportConfig {
    /// The effective `otel_traces_export` section, with the sampler.
    pub(super) fn to_node(&self, sampler: SamplerConfig, secrets: bool) -> Node {
        let common = OtlpCommon {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            headers: self.headers.clone(),
            timeout: self.timeout,
            compression: self.compression,
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        let (name, arg) = sampler.name_and_arg();
        otlp::section_node(
            &common,
            secrets,
            vec![
                (
                    "sampler",
                    Some(map([
                        ("name", Some(text(name))),
                        ("arg", arg.map(|a| text(a.to_string()))),
                    ])),
                ),
                (
                    "batch_timeout",
                    Some(text(value::format_duration(self.batch.schedule_delay))),
                ),
                (
                    "max_export_batch_size",
                    Some(Node::Int(self.batch.max_export_batch_size as i128)),
                ),
                (
                    "max_queue_size",
                    Some(Node::Int(self.batch.max_queue_size as i128)),
                ),
                (
                    "queue_memory_cap",
                    Some(text(value::format_bytes(self.queue_memory_cap_bytes))),
                ),
            ],
        )
    }
}

impl MetricsExportConfig {
    /// The effective `otel_metrics_export` section.
    pub(super) fn to_node(&self, secrets: bool) -> Node {
        let common = OtlpCommon {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            headers: self.headers.clone(),
            timeout: self.timeout,
            compression: self.compression,
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        otlp::section_node(
            &common,
            secrets,
            vec![
                (
                    "interval",
                    Some(text(value::format_duration(self.interval))),
                ),
                ("ttl", Some(text(value::format_duration(self.ttl)))),
                ("buckets", Some(buckets_node(&self.buckets))),
            ],
        )
    }
}

impl MetricFeatures {
    /// The effective top-level `metrics` section.
    pub(super) fn to_node(self) -> Node {
        let list = if self.application {
            vec![text("application")]
        } else {
            Vec::new()
        };
        map([("features", Some(Node::Seq(list)))])
    }
}
