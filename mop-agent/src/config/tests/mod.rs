//! Unit tests of the configuration module; they panic on failure and never touch the process
//! environment (every test passes its own variables).

mod endpoints;
mod errors;
mod matchers;
mod values;

use std::collections::HashMap;

use super::{Config, ConfigError};

/// A fake environment from `NAME=value` pairs.
pub(super) fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Loads YAML with the given variables, panicking on errors.
pub(super) fn load(yaml: &str, vars: &[(&str, &str)]) -> Config {
    match Config::from_yaml_str(yaml, &env(vars)) {
        Ok(config) => config,
        Err(e) => panic!("unexpected config error:\n{e}"),
    }
}

/// Loads YAML that must fail and returns every error message.
pub(super) fn errors(yaml: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match Config::from_yaml_str(yaml, &env(vars)) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Loads YAML that must fail with exactly one error, and returns its message.
pub(super) fn error(yaml: &str, vars: &[(&str, &str)]) -> String {
    let all = errors(yaml, vars);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn multiple_errors_are_all_reported_and_listed() {
    let e =
        Config::from_yaml_str("log_level: loud\nshutdown_timeout: soon\n", &env(&[])).unwrap_err();
    assert!(matches!(e, ConfigError::Multiple(ref v) if v.len() == 2));
    assert_eq!(
        e.to_string(),
        "2 configuration errors:\n  `log_level`: invalid value `loud`: expected one of debug, info, warn, error\n  \
         `shutdown_timeout`: invalid value `soon`: expected a duration with a unit (ns, us, ms, s, m, h) from 1ms to 1h"
    );
}

#[test]
fn load_reads_the_file_named_by_the_environment() {
    let dir = std::env::temp_dir().join(format!("mop-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("obi.yaml");
    std::fs::write(&file, "log_level: debug\n").unwrap();
    let path = file.to_str().unwrap();
    let config = Config::load(None, &env(&[("OTEL_EBPF_CONFIG_PATH", path)])).unwrap();
    assert_eq!(config.log_level, super::LogLevel::Debug);
    let missing = Config::load(Some(&dir.join("missing.yaml")), &env(&[])).unwrap_err();
    assert!(
        missing.to_string().starts_with("cannot read config file "),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn print_round_trips_defaults() {
    let config = Config::default();
    assert_eq!(load(&config.to_yaml(true), &[]), config);
}

#[test]
fn print_round_trips_a_full_config_with_env() {
    let yaml = r#"
log_level: warn
shutdown_timeout: 30s
service_namespace: shop
trace_printer: json
discovery:
  instrument:
    - open_ports: 80,443,8000-8999
      name: web
      namespace: shop
    - exe_path: "*/python3*"
      k8s_namespace: "prod-*"
      k8s_pod_labels:
        app: "checkout*"
      k8s_pod_annotations:
        obi.instrument: "true"
  exclude_instrument:
    - k8s_deployment_name: "{canary,test}-*"
  default_exclude_instrument: []
  poll_interval: 500ms
  skip_self: false
ebpf:
  buffer_sizes:
    http: 1024
  context_propagation: headers,tcp
  track_request_headers: false
  capture_path: kprobe
  ring_buffer_size: 64MiB
  max_connections: 131072
routes:
  patterns: ['/users/{id}', '/users/:id/cart', '/static/*']
  ignored_patterns: [/healthz]
  ignore_mode: traces
  unmatched: path
  wildcard_char: "_"
  max_routes_per_service: 50
otel_traces_export:
  endpoint: https://tempo.example:4317
  headers:
    authorization: Bearer abc
  timeout: 3s
  compression: gzip
  ca_file: /etc/ssl/ca.pem
  sampler:
    name: parentbased_traceidratio
    arg: "0.25"
  batch_timeout: 2s
  max_export_batch_size: 256
  max_queue_size: 1024
  queue_memory_cap: 32MiB
otel_metrics_export:
  interval: 15s
  ttl: 10m
  buckets:
    duration_histogram: [0.1, 0.5, 1.5]
prometheus_export:
  port: 9400
  path: /prom
  ttl: 1m
  buckets:
    request_size_histogram: [0, 100, 1000]
attributes:
  kubernetes:
    enable: true
    cluster_name: east
    kubeconfig_path: /root/.kube/config
    informers_resync_period: 1h
    meta_restrict_local_node: true
  instance_id:
    dns: false
    override_hostname: node-1
  host_id:
    override: host-abc
"#;
    let vars = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=a%20b"),
        ("OTEL_SERVICE_NAME", "override"),
        ("OTEL_EBPF_OPEN_PORT", "9090"),
        ("OTEL_EBPF_AUTO_TARGET_EXE", "*/java"),
    ];
    let config = load(yaml, &vars);
    let printed = config.to_yaml(true);
    assert_eq!(load(&printed, &[]), config, "printed:\n{printed}");
    assert!(config.to_yaml(false).contains("<redacted>"));
    assert!(!config.to_yaml(false).contains("Bearer abc"));
}
