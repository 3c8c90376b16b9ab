//! The agent's configuration: OBI's v1 YAML keys and `OTEL_EBPF_*` / `OTEL_*` variables, read
//! here and nowhere else, validated completely before anything attaches.
//!
//! [`Config::load`] reads the file named by `--config` or `OTEL_EBPF_CONFIG_PATH`, replaces
//! `${VAR}` references in it (as OBI does), parses it into one raw serde struct per component
//! (each denying unknown fields), applies the environment on top (variables override the
//! file) and converts everything into validated types. Every problem found is reported, each
//! naming the key path or variable, the value and what is accepted.
//!
//! One submodule per pipeline stage: [`discovery`], [`ebpf`], [`routes`], [`export`] (with
//! the OTLP rules in [`otlp`]) and [`attributes`]; [`cli`] holds `mop-agent config`.

pub mod attributes;
pub mod cli;
pub mod discovery;
pub mod ebpf;
pub mod error;
pub mod export;
pub mod glob;
mod keys;
pub mod otlp;
pub mod output;
pub mod routes;
pub mod sampler;
mod value;
mod yaml;

#[cfg(test)]
mod tests;

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use self::{
    attributes::{AttributesConfig, InstanceIdConfig, KubeConfig, KubeEnable},
    discovery::{DiscoveryConfig, PortSet, Selector},
    ebpf::{CapturePath, ContextPropagation, EbpfConfig},
    error::{ConfigError, Origin},
    export::{BatchConfig, Buckets, MetricFeatures, MetricsExportConfig, TracesExportConfig},
    glob::Glob,
    otlp::{Compression, OtlpEndpoint, OtlpProtocol},
    output::{PrometheusConfig, TracePrinter},
    routes::{IgnoreMode, RoutePattern, RoutesConfig, UnmatchedRoutes},
    sampler::SamplerConfig,
};
use self::{
    value::Ctx,
    yaml::{Node, map, text},
};

/// `OTEL_EBPF_CONFIG_PATH`: the configuration file when `--config` is not given.
pub const ENV_CONFIG_PATH: &str = "OTEL_EBPF_CONFIG_PATH";
/// Default of `shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole validated configuration; what every stage of the agent is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Log verbosity (`log_level`, `OTEL_EBPF_LOG_LEVEL`; default info).
    pub log_level: LogLevel,
    /// Bound on the flush at SIGINT/SIGTERM (`shutdown_timeout`, `OTEL_EBPF_SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// Service name for every instrumented process (`OTEL_SERVICE_NAME`, then
    /// `OTEL_EBPF_SERVICE_NAME`, then OBI's deprecated `service_name` key).
    pub service_name: Option<String>,
    /// Service namespace for every instrumented process (`service_namespace`,
    /// `OTEL_EBPF_SERVICE_NAMESPACE`).
    pub service_namespace: Option<String>,
    /// Which processes to instrument.
    pub discovery: DiscoveryConfig,
    /// Kernel-side capture settings.
    pub ebpf: EbpfConfig,
    /// `http.route` derivation.
    pub routes: RoutesConfig,
    /// OTLP traces.
    pub traces: TracesExportConfig,
    /// OTLP metrics.
    pub metrics: MetricsExportConfig,
    /// Prometheus scrape endpoint; `None` without a port.
    pub prometheus: Option<PrometheusConfig>,
    /// Spans on stdout.
    pub trace_printer: TracePrinter,
    /// Resource decoration.
    pub attributes: AttributesConfig,
    /// Trace sampling.
    pub sampler: SamplerConfig,
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Default.
    Info,
    /// Problems that do not stop the agent.
    Warn,
    /// Problems only.
    Error,
}

impl LogLevel {
    const CHOICES: &[(&str, Self)] = &[
        ("debug", Self::Debug),
        ("info", Self::Info),
        ("warn", Self::Warn),
        ("error", Self::Error),
    ];

    /// OBI's spelling (`DEBUG`, `INFO`, `WARN`, `ERROR`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    /// The matching `tracing` level, for the log subscriber.
    pub fn to_tracing(self) -> tracing::Level {
        match self {
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warn => tracing::Level::WARN,
            Self::Error => tracing::Level::ERROR,
        }
    }
}

/// The whole file as written: one raw struct per component.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    log_level: Option<Node>,
    shutdown_timeout: Option<Node>,
    trace_printer: Option<Node>,
    service_name: Option<Node>,
    service_namespace: Option<Node>,
    open_port: Option<Node>,
    discovery: discovery::RawDiscovery,
    ebpf: ebpf::RawEbpf,
    routes: routes::RawRoutes,
    otel_traces_export: export::RawTraces,
    otel_metrics_export: export::RawMetrics,
    prometheus_export: output::RawPrometheus,
    metrics: export::RawMetricsCommon,
    attributes: attributes::RawAttributes,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_yaml_str("", &|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// Loads the file at `path` (or `OTEL_EBPF_CONFIG_PATH`, or none: defaults) with the
    /// environment given by `env` on top.
    pub fn load(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = path.map(Path::to_path_buf).or_else(|| {
            env(ENV_CONFIG_PATH)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let text = match path {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::ReadFile { path, source })?,
            None => String::new(),
        };
        Self::from_yaml_str(&text, env)
    }

    /// Validates YAML text with the environment given by `env` on top.
    pub fn from_yaml_str(
        text: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let env: &dyn Fn(&str) -> Option<String> = env;
        let node = yaml::parse(&yaml::substitute_env(text, env))?;
        if !matches!(node, Node::Map(_)) {
            return Err(ConfigError::Yaml {
                message: format!(
                    "the top level must be a mapping of keys, found {}",
                    node.kind()
                ),
            });
        }
        let errors = RefCell::new(Vec::new());
        let raw: RawConfig = yaml::from_node(&node, "", &errors).unwrap_or_default();
        let mut ctx = Ctx::new(env);
        ctx.errors = errors.into_inner();
        ctx.errors.extend(keys::unsupported_env(env));
        let config = build(raw, &mut ctx);
        // Shared variables (OTEL_EXPORTER_OTLP_*) are checked once per signal: report once.
        let mut seen = std::collections::HashSet::new();
        ctx.errors.retain(|e| seen.insert(e.to_string()));
        ConfigError::from_list(ctx.errors).map_or(Ok(config), Err)
    }

    /// The effective configuration as YAML in OBI's key names, defaults included; it loads
    /// back to an equal `Config`. Header values are `<redacted>` unless `show_secrets`.
    pub fn to_yaml(&self, show_secrets: bool) -> String {
        let node = map([
            ("log_level", Some(text(self.log_level.as_str()))),
            (
                "shutdown_timeout",
                Some(text(value::format_duration(self.shutdown_timeout))),
            ),
            ("service_name", self.service_name.clone().map(text)),
            (
                "service_namespace",
                self.service_namespace.clone().map(text),
            ),
            ("trace_printer", Some(text(self.trace_printer.as_str()))),
            ("discovery", Some(self.discovery.to_node())),
            ("ebpf", Some(self.ebpf.to_node())),
            ("routes", Some(self.routes.to_node())),
            (
                "otel_traces_export",
                Some(self.traces.to_node(self.sampler, show_secrets)),
            ),
            (
                "otel_metrics_export",
                Some(self.metrics.to_node(show_secrets)),
            ),
            ("metrics", Some(self.metrics.features.to_node())),
            (
                "prometheus_export",
                self.prometheus.as_ref().map(PrometheusConfig::to_node),
            ),
            ("attributes", Some(self.attributes.to_node())),
        ]);
        serde_saphyr::to_string(&node).expect("a node tree always serializes")
    }
}

fn build(raw: RawConfig, ctx: &mut Ctx<'_>) -> Config {
    let log_level = ctx
        .get(
            "log_level",
            raw.log_level.as_ref(),
            &["OTEL_EBPF_LOG_LEVEL"],
            value::choice(LogLevel::CHOICES, &[]),
        )
        .unwrap_or(LogLevel::Info);
    let shutdown_timeout = ctx
        .get(
            "shutdown_timeout",
            raw.shutdown_timeout.as_ref(),
            &["OTEL_EBPF_SHUTDOWN_TIMEOUT"],
            value::duration(Duration::from_millis(1), Duration::from_hours(1)),
        )
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let service_name = ctx.get(
        "service_name",
        raw.service_name.as_ref(),
        &["OTEL_SERVICE_NAME", "OTEL_EBPF_SERVICE_NAME"],
        value::string,
    );
    let service_namespace = ctx.get(
        "service_namespace",
        raw.service_namespace.as_ref(),
        &["OTEL_EBPF_SERVICE_NAMESPACE"],
        value::string,
    );
    let (traces, sampler) = export::build_traces(&raw.otel_traces_export, ctx);
    let features = export::build_features(
        &raw.metrics,
        &raw.otel_metrics_export,
        &raw.prometheus_export,
        ctx,
    );
    Config {
        log_level,
        shutdown_timeout,
        service_name,
        service_namespace,
        discovery: discovery::build(raw.discovery, raw.open_port.as_ref(), ctx),
        ebpf: ebpf::build(&raw.ebpf, ctx),
        routes: routes::build(&raw.routes, ctx),
        traces,
        metrics: export::build_metrics(&raw.otel_metrics_export, features, ctx),
        prometheus: output::build_prometheus(&raw.prometheus_export, ctx),
        trace_printer: output::build_printer(raw.trace_printer.as_ref(), ctx),
        attributes: attributes::build(&raw.attributes, ctx),
        sampler,
    }
}
