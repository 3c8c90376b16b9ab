//! [`ExportSettings`] from the validated [`Config`].

use std::{net::SocketAddr, time::Duration};

use super::{
    DEFAULT_CHANNEL_CAPACITY, ExportSettings, MetricsPushSettings, PrometheusSettings,
    otlp::{BatchSettings, Compression, OtlpSettings, Protocol},
    printer::PrinterFormat,
};
use crate::{
    config::{
        Config, TracePrinter,
        export::Buckets,
        otlp::{Compression as ConfigCompression, OtlpEndpoint, OtlpProtocol},
    },
    metrics::{DEFAULT_MAX_SERIES, DEFAULT_MAX_SERIES_PER_SERVICE, MetricsSettings},
};

fn protocol(p: OtlpProtocol) -> Protocol {
    match p {
        OtlpProtocol::Grpc => Protocol::Grpc,
        OtlpProtocol::HttpProtobuf => Protocol::HttpProtobuf,
    }
}

fn compression(c: Option<ConfigCompression>) -> Compression {
    match c {
        Some(ConfigCompression::Gzip) => Compression::Gzip,
        None => Compression::None,
    }
}

fn red(buckets: &Buckets, ttl: Duration) -> MetricsSettings {
    MetricsSettings {
        duration_buckets: buckets.duration_histogram.clone(),
        request_size_buckets: buckets.request_size_histogram.clone(),
        response_size_buckets: buckets.response_size_histogram.clone(),
        max_series_per_service: DEFAULT_MAX_SERIES_PER_SERVICE,
        max_series: DEFAULT_MAX_SERIES,
        ttl,
    }
}

fn otlp(
    endpoint: &OtlpEndpoint,
    p: OtlpProtocol,
    headers: &[(String, String)],
    timeout: Duration,
    c: Option<ConfigCompression>,
    ca_file: Option<&std::path::Path>,
    insecure_skip_verify: bool,
) -> OtlpSettings {
    let mut s = OtlpSettings::new(endpoint.to_string(), protocol(p));
    s.headers = headers.to_vec();
    s.timeout = timeout;
    s.compression = compression(c);
    s.ca_file = ca_file.map(ToOwned::to_owned);
    s.insecure_skip_verify = insecure_skip_verify;
    s
}

impl ExportSettings {
    /// The exporters the configuration asks for. (Settings the exporters cannot honour, like
    /// `insecure_skip_verify`, fail in [`super::Exporters::start`].)
    pub fn from_config(config: &Config) -> Self {
        let t = &config.traces;
        let traces = match &t.endpoint {
            Some(endpoint) => {
                let batch = BatchSettings {
                    max_items: t.batch.max_export_batch_size,
                    timeout: t.batch.schedule_delay,
                    max_queue_bytes: usize::try_from(t.queue_memory_cap_bytes)
                        .unwrap_or(usize::MAX),
                    max_queue_items: t.batch.max_queue_size,
                    ..BatchSettings::default()
                };
                let mut s = otlp(
                    endpoint,
                    t.protocol,
                    &t.headers,
                    t.timeout,
                    t.compression,
                    t.ca_file.as_deref(),
                    t.insecure_skip_verify,
                );
                s.batch = batch;
                Some(s)
            }
            None => None,
        };
        let m = &config.metrics;
        let application = m.features.application;
        let metrics = match &m.endpoint {
            Some(endpoint) if application => {
                let otlp = otlp(
                    endpoint,
                    m.protocol,
                    &m.headers,
                    m.timeout,
                    m.compression,
                    m.ca_file.as_deref(),
                    m.insecure_skip_verify,
                );
                Some(MetricsPushSettings {
                    otlp,
                    interval: m.interval,
                    red: red(&m.buckets, m.ttl),
                })
            }
            _ => None,
        };
        let prometheus = config.prometheus.as_ref().map(|p| PrometheusSettings {
            addr: SocketAddr::from(([0, 0, 0, 0], p.port)),
            path: p.path.clone(),
            red: application.then(|| red(&p.buckets, p.ttl)),
        });
        let printer = match config.trace_printer {
            TracePrinter::Disabled => None,
            TracePrinter::Text => Some(PrinterFormat::Text),
            TracePrinter::Json => Some(PrinterFormat::Json),
        };
        Self {
            printer,
            traces,
            metrics,
            prometheus,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_yaml_str(yaml, &|k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn defaults_start_nothing() {
        let s = ExportSettings::from_config(&load("{}", &[]));
        assert_eq!(s.printer, None);
        assert_eq!(s.traces, None);
        assert_eq!(s.metrics, None);
        assert_eq!(s.prometheus, None);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn shared_endpoint_and_environment_map_to_both_exporters() {
        let config = load(
            "trace_printer: json\nprometheus_export:\n  port: 9400\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ],
        );
        let s = ExportSettings::from_config(&config);
        assert_eq!(s.printer, Some(PrinterFormat::Json));
        let t = s.traces.unwrap();
        assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.headers, [("a".to_owned(), "b".to_owned())]);
        assert_eq!(t.batch.timeout, Duration::from_millis(250));
        assert_eq!(t.batch.max_queue_bytes, 64 << 20);
        t.validate().unwrap();
        let m = s.metrics.unwrap();
        assert_eq!(m.otlp.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(m.interval, Duration::from_secs(1));
        assert_eq!(
            m.red.duration_buckets,
            crate::metrics::DEFAULT_DURATION_BUCKETS
        );
        let p = s.prometheus.unwrap();
        assert_eq!(p.addr, SocketAddr::from(([0, 0, 0, 0], 9400)));
        assert_eq!(p.path, "/metrics");
        assert_eq!(
            p.red.as_ref(),
            Some(&m.red),
            "same buckets: one shared aggregator"
        );
    }

    #[test]
    fn a_per_signal_endpoint_is_used_verbatim() {
        let config = load(
            "",
            &[
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://mimir:8080/otlp/v1/metrics",
                ),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ],
        );
        let s = ExportSettings::from_config(&config);
        assert_eq!(
            s.metrics.unwrap().otlp.endpoint,
            "http://mimir:8080/otlp/v1/metrics"
        );
        assert_eq!(s.traces, None);
    }

    #[test]
    fn insecure_skip_verify_is_carried_and_refused_at_start() {
        let config = load(
            "otel_traces_export:\n  insecure_skip_verify: true\n",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")],
        );
        let traces = ExportSettings::from_config(&config).traces.unwrap();
        assert!(traces.insecure_skip_verify);
        assert!(matches!(
            traces.validate(),
            Err(crate::export::ExportError::InvalidSetting {
                option: "insecure_skip_verify",
                ..
            })
        ));
    }
}
