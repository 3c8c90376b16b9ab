//! The OBI v1 keys and variables mop recognises but does not implement yet, and the
//! "did you mean" search for misspelt keys.
//!
//! Keys mop implements are the fields of the raw serde structs; this file only lists what
//! OBI has beyond them, so that a copied OBI configuration fails with "not supported by mop
//! yet" instead of "unknown key", and so that nothing OBI users rely on is silently ignored.

use super::error::ConfigError;

/// OBI keys mop does not implement, as paths with list indices written `[]`, and a note.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    // Global properties.
    (
        "executable_path",
        "deprecated in OBI; use `discovery.instrument[].exe_path`",
    ),
    ("target_pids", ""),
    ("log_format", "mop logs text"),
    (
        "enforce_sys_caps",
        "mop always exits when a capability is missing",
    ),
    ("channel_buffer_len", ""),
    ("channel_send_timeout", ""),
    ("channel_send_timeout_panic", ""),
    ("profile_port", ""),
    (
        "internal_metrics",
        "mop's own metrics are on the Prometheus port",
    ),
    ("log_config", "use `mop-agent config print`"),
    ("nodejs", ""),
    ("javaagent", ""),
    (
        "health_check",
        "`/healthz` and `/readyz` are served on the Prometheus port",
    ),
    ("jvm_runtime_metrics", ""),
    ("network", "mop has no network metrics"),
    ("filter", ""),
    ("name_resolver", ""),
    ("stats", ""),
    // discovery
    (
        "discovery.services",
        "deprecated in OBI; use `discovery.instrument`",
    ),
    (
        "discovery.exclude_services",
        "deprecated in OBI; use `discovery.exclude_instrument`",
    ),
    (
        "discovery.default_exclude_services",
        "deprecated in OBI; use `discovery.default_exclude_instrument`",
    ),
    ("discovery.rules", ""),
    ("discovery.survey", ""),
    ("discovery.system_wide", ""),
    (
        "discovery.skip_go_specific_tracers",
        "mop has no Go-specific tracers",
    ),
    ("discovery.bpf_pid_filter_off", ""),
    ("discovery.exclude_otel_instrumented_services", ""),
    (
        "discovery.exclude_otel_instrumented_services_span_metrics",
        "",
    ),
    ("discovery.default_otlp_grpc_port", ""),
    ("discovery.min_process_age", ""),
    ("discovery.route_harvester_timeout", ""),
    ("discovery.disabled_route_harvesters", ""),
    ("discovery.route_harvester_advanced", ""),
    // ebpf
    ("ebpf.bpf_debug", ""),
    ("ebpf.wakeup_len", ""),
    ("ebpf.stats_wakeup_data_bytes", ""),
    ("ebpf.batch_length", ""),
    ("ebpf.batch_timeout", ""),
    ("ebpf.http_request_timeout", ""),
    ("ebpf.override_bpfloop_enabled", ""),
    ("ebpf.traffic_control_backend", ""),
    ("ebpf.disable_black_box_cp", ""),
    ("ebpf.high_request_volume", ""),
    ("ebpf.heuristic_sql_detect", ""),
    ("ebpf.instrument_cuda", ""),
    ("ebpf.protocol_debug_print", ""),
    ("ebpf.redis_db_cache", ""),
    ("ebpf.buffer_sizes.mysql", "mop only parses HTTP and gRPC"),
    ("ebpf.buffer_sizes.kafka", "mop only parses HTTP and gRPC"),
    (
        "ebpf.buffer_sizes.postgres",
        "mop only parses HTTP and gRPC",
    ),
    ("ebpf.buffer_sizes.mssql", "mop only parses HTTP and gRPC"),
    ("ebpf.buffer_sizes.tcp", ""),
    ("ebpf.mysql_prepared_statements_cache_size", ""),
    ("ebpf.postgres_prepared_statements_cache_size", ""),
    ("ebpf.mssql_prepared_statements_cache_size", ""),
    ("ebpf.kafka_topic_uuid_cache_size", ""),
    ("ebpf.mongo_requests_cache_size", ""),
    ("ebpf.couchbase_db_cache_size", ""),
    ("ebpf.payload_extraction", ""),
    ("ebpf.max_transaction_time", ""),
    ("ebpf.dns_request_timeout", ""),
    ("ebpf.log_enricher", ""),
    ("ebpf.bpf_fs_path", ""),
    ("ebpf.force_bpf_map_reader", ""),
    (
        "ebpf.maps_config",
        "see `ebpf.max_connections` and `ebpf.ring_buffer_size`",
    ),
    (
        "ebpf.context_propagation_enabled",
        "deprecated in OBI; use `ebpf.context_propagation`",
    ),
    // discovery selectors
    ("discovery.instrument[].languages", ""),
    ("discovery.instrument[].cmd_args", ""),
    ("discovery.instrument[].target_pids", ""),
    ("discovery.instrument[].containers_only", ""),
    ("discovery.instrument[].container_name", ""),
    ("discovery.instrument[].exports", ""),
    (
        "discovery.instrument[].sampler",
        "use `otel_traces_export.sampler`",
    ),
    ("discovery.instrument[].routes", "use `routes`"),
    ("discovery.instrument[].metrics", "use `metrics.features`"),
    // routes
    (
        "routes.max_path_segment_cardinality",
        "see `routes.max_routes_per_service`",
    ),
    // traces
    (
        "otel_traces_export.instrumentations",
        "mop traces HTTP and gRPC",
    ),
    ("otel_traces_export.backoff_initial_interval", ""),
    ("otel_traces_export.backoff_max_interval", ""),
    ("otel_traces_export.backoff_max_elapsed_time", ""),
    ("otel_traces_export.reporters_cache_len", ""),
    ("otel_traces_export.otel_sdk_log_level", ""),
    // metrics
    (
        "otel_metrics_export.histogram_aggregation",
        "mop exports explicit bucket histograms",
    ),
    ("otel_metrics_export.reporters_cache_len", ""),
    ("otel_metrics_export.otel_sdk_log_level", ""),
    (
        "otel_metrics_export.instrumentations",
        "mop measures HTTP and gRPC",
    ),
    (
        "otel_metrics_export.allow_service_graph_self_references",
        "",
    ),
    ("otel_metrics_export.extra_span_resource_attributes", ""),
    ("otel_metrics_export.buckets.stat_tcp_rtt_histogram", ""),
    // prometheus
    ("prometheus_export.disable_build_info", ""),
    (
        "prometheus_export.instrumentations",
        "mop measures HTTP and gRPC",
    ),
    ("prometheus_export.service_cache_size", ""),
    ("prometheus_export.allow_service_graph_self_references", ""),
    ("prometheus_export.extra_resource_attributes", ""),
    ("prometheus_export.extra_span_resource_attributes", ""),
    ("prometheus_export.exemplar_filter", ""),
    ("prometheus_export.buckets.stat_tcp_rtt_histogram", ""),
    // attributes
    ("attributes.select", ""),
    ("attributes.extra_group_attributes", ""),
    ("attributes.rename_unresolved_hosts", ""),
    ("attributes.rename_unresolved_hosts_outgoing", ""),
    ("attributes.rename_unresolved_hosts_incoming", ""),
    ("attributes.metric_span_names_limit", ""),
    ("attributes.sensitive_query_params", ""),
    ("attributes.host_id.fetch_timeout", ""),
    ("attributes.kubernetes.disable_informers", ""),
    ("attributes.kubernetes.meta_cache_address", ""),
    ("attributes.kubernetes.service_name_template", ""),
    ("attributes.kubernetes.resource_labels", ""),
    ("attributes.kubernetes.meta_source_labels", ""),
    ("attributes.kubernetes.drop_external", ""),
    ("attributes.kubernetes.reconnect_initial_interval", ""),
];

/// OBI environment variables mop does not implement; setting one is an error.
const UNSUPPORTED_ENV: &[(&str, &str)] = &[
    ("OTEL_EBPF_AUTO_TARGET_LANGUAGE", ""),
    ("OTEL_EBPF_TARGET_PID", ""),
    (
        "OTEL_EBPF_EXECUTABLE_PATH",
        "deprecated in OBI; use OTEL_EBPF_AUTO_TARGET_EXE",
    ),
    ("OTEL_EBPF_LOG_FORMAT", "mop logs text"),
    (
        "OTEL_EBPF_ENFORCE_SYS_CAPS",
        "mop always exits when a capability is missing",
    ),
    ("OTEL_EBPF_SKIP_GO_SPECIFIC_TRACERS", ""),
    ("OTEL_EBPF_EXCLUDE_OTEL_INSTRUMENTED_SERVICES", ""),
    ("OTEL_EBPF_SYSTEM_WIDE", ""),
    ("OTEL_EBPF_BPF_WAKEUP_LEN", ""),
    ("OTEL_EBPF_BPF_BATCH_LENGTH", ""),
    ("OTEL_EBPF_BPF_BATCH_TIMEOUT", ""),
    ("OTEL_EBPF_BPF_HTTP_REQUEST_TIMEOUT", ""),
    ("OTEL_EBPF_BPF_TC_BACKEND", ""),
    ("OTEL_EBPF_BPF_HIGH_REQUEST_VOLUME", ""),
    ("OTEL_EBPF_BPF_DEBUG", ""),
    (
        "OTEL_EBPF_BPF_BUFFER_SIZE_MYSQL",
        "mop only parses HTTP and gRPC",
    ),
    (
        "OTEL_EBPF_BPF_BUFFER_SIZE_KAFKA",
        "mop only parses HTTP and gRPC",
    ),
    (
        "OTEL_EBPF_BPF_BUFFER_SIZE_POSTGRES",
        "mop only parses HTTP and gRPC",
    ),
    (
        "OTEL_EBPF_BPF_BUFFER_SIZE_MSSQL",
        "mop only parses HTTP and gRPC",
    ),
    ("OTEL_EBPF_BPF_BUFFER_SIZE_TCP", ""),
    (
        "OTEL_EBPF_TRACES_INSTRUMENTATIONS",
        "mop traces HTTP and gRPC",
    ),
    (
        "OTEL_EBPF_METRICS_INSTRUMENTATIONS",
        "mop measures HTTP and gRPC",
    ),
    (
        "OTEL_EBPF_PROMETHEUS_INSTRUMENTATIONS",
        "mop measures HTTP and gRPC",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "mop exports explicit bucket histograms",
    ),
    ("OTEL_EBPF_PROMETHEUS_EXTRA_RESOURCE_ATTRIBUTES", ""),
    ("OTEL_EBPF_PROMETHEUS_EXEMPLAR_FILTER", ""),
    ("OTEL_EBPF_NAME_RESOLVER_SOURCES", ""),
    ("OTEL_EBPF_NETWORK_METRICS", "mop has no network metrics"),
    (
        "OTEL_EBPF_HEALTH_CHECK_PORT",
        "`/healthz` and `/readyz` are served on the Prometheus port",
    ),
    ("OTEL_EBPF_KUBE_DISABLE_INFORMERS", ""),
    ("OTEL_EBPF_KUBE_META_CACHE_ADDRESS", ""),
    ("OTEL_EBPF_SERVICE_NAME_TEMPLATE", ""),
    (
        "OTEL_EXPORTER_OTLP_INSECURE",
        "use an http:// endpoint for plaintext",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
        "use an http:// endpoint for plaintext",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
        "use an http:// endpoint for plaintext",
    ),
    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", ""),
    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", ""),
    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", ""),
    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", ""),
    ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", ""),
    ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", ""),
];

/// The "not supported" or "unknown" error for a key that no raw struct accepts.
pub(super) fn unknown_key(path: &str, known: &[&str]) -> ConfigError {
    let normalized = normalize(path);
    for (unsupported, note) in UNSUPPORTED_KEYS {
        let inside = normalized
            .strip_prefix(unsupported)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        let selector = normalized.starts_with("discovery.exclude_instrument[]")
            || normalized.starts_with("discovery.default_exclude_instrument[]");
        let as_selector = selector
            && normalized
                .split_once("[]")
                .map(|(_, rest)| format!("discovery.instrument[]{rest}"))
                .is_some_and(|n| n == *unsupported);
        if inside || as_selector {
            return ConfigError::UnsupportedKey {
                key: path.to_owned(),
                note,
            };
        }
    }
    let leaf = path.rsplit('.').next().unwrap_or(path);
    ConfigError::UnknownKey {
        key: path.to_owned(),
        suggestion: suggest(leaf, known).map(|s| match path.rsplit_once('.') {
            Some((parent, _)) => format!("{parent}.{s}"),
            None => s.to_owned(),
        }),
    }
}

/// Errors for every unsupported OBI variable that is set.
pub(super) fn unsupported_env(env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigError> {
    UNSUPPORTED_ENV
        .iter()
        .filter(|(var, _)| env(var).is_some_and(|v| !v.is_empty()))
        .map(|(var, note)| ConfigError::UnsupportedEnv {
            var: (*var).to_owned(),
            note,
        })
        .collect()
}

/// `discovery.instrument[3].languages` -> `discovery.instrument[].languages`.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The known key closest to `key`, if it is close enough to be a likely typo.
pub(super) fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len().max(key.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars, two rows.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
