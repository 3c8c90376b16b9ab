//! Defaults, environment overrides and value formats.

use std::time::Duration;

use super::{env, load};
use crate::config::{
    CapturePath, Config, ContextPropagation, KubeEnable, LogLevel, OtlpProtocol, SamplerConfig,
    TracePrinter, UnmatchedRoutes,
    value::{format_bytes, format_duration, parse_duration},
    yaml::substitute_env,
};

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.service_name, None);
    assert!(c.discovery.instrument.is_empty() && c.discovery.exclude_instrument.is_empty());
    assert_eq!(c.discovery.default_exclude_instrument.len(), 2);
    assert!(
        c.discovery.default_exclude_instrument[0]
            .exe_path
            .as_ref()
            .unwrap()
            .matches("/usr/bin/mop-agent")
    );
    assert!(
        c.discovery.default_exclude_instrument[0]
            .exe_path
            .as_ref()
            .unwrap()
            .matches("/otelcol-contrib")
    );
    assert!(
        c.discovery.default_exclude_instrument[1]
            .k8s_namespace
            .as_ref()
            .unwrap()
            .matches("kube-system")
    );
    assert_eq!(c.discovery.poll_interval, Duration::from_secs(1));
    assert!(c.discovery.skip_self);
    assert_eq!(c.ebpf.buffer_size, 256);
    assert_eq!(c.ebpf.capture_path, CapturePath::Auto);
    assert_eq!(c.ebpf.context_propagation, ContextPropagation::Disabled);
    assert!(c.ebpf.track_request_headers);
    assert_eq!(c.ebpf.ring_buffer_size, 16 << 20);
    assert_eq!(c.ebpf.max_connections, 65_536);
    assert_eq!(c.routes.unmatched, UnmatchedRoutes::Heuristic);
    assert_eq!(c.routes.wildcard_char, '*');
    assert_eq!(c.traces.endpoint, None);
    assert_eq!(c.traces.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(c.traces.timeout, Duration::from_secs(10));
    assert_eq!(c.traces.compression, None);
    assert_eq!(c.traces.batch.schedule_delay, Duration::from_secs(5));
    assert_eq!(c.traces.batch.max_export_batch_size, 512);
    assert_eq!(c.traces.batch.max_queue_size, 4096);
    assert_eq!(c.traces.queue_memory_cap_bytes, 64 << 20);
    assert_eq!(c.metrics.interval, Duration::from_mins(1));
    assert_eq!(c.metrics.ttl, Duration::from_mins(5));
    assert_eq!(
        c.metrics.buckets.duration_histogram,
        [
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
        ]
    );
    assert_eq!(
        c.metrics.buckets.request_size_histogram[..3],
        [0.0, 32.0, 64.0]
    );
    assert!(c.metrics.features.application);
    assert_eq!(c.prometheus, None);
    assert_eq!(c.trace_printer, TracePrinter::Disabled);
    assert_eq!(c.attributes.kubernetes.enable, KubeEnable::Autodetect);
    assert_eq!(
        c.attributes.kubernetes.informers_sync_timeout,
        Duration::from_secs(30)
    );
    assert!(c.attributes.instance_id.dns);
    assert_eq!(c.sampler, SamplerConfig::ParentBasedAlwaysOn);
    assert_eq!(load("", &[]), c);
    assert_eq!(load("# only a comment\n", &[]), c);
    assert_eq!(
        load("discovery:\nroutes: ~\n", &[]),
        c,
        "empty sections are defaults"
    );
}

#[test]
fn environment_overrides_the_file() {
    let yaml = "log_level: error\ntrace_printer: text\nshutdown_timeout: 1s\nprometheus_export:\n  port: 9000\n  path: /m\n\
                ebpf:\n  context_propagation: tcp\n  buffer_sizes:\n    http: 128\nattributes:\n  kubernetes:\n    enable: false\n";
    let vars = [
        ("OTEL_EBPF_LOG_LEVEL", "Debug"),
        ("OTEL_EBPF_TRACE_PRINTER", "json"),
        ("OTEL_EBPF_SHUTDOWN_TIMEOUT", "30s"),
        ("OTEL_EBPF_PROMETHEUS_PORT", "9400"),
        ("OTEL_EBPF_BPF_CONTEXT_PROPAGATION", "headers"),
        ("OTEL_EBPF_BPF_BUFFER_SIZE_HTTP", "0"),
        ("OTEL_EBPF_KUBE_METADATA_ENABLE", "true"),
        ("OTEL_EBPF_METRICS_INTERVAL", "10s"),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "200"),
    ];
    let c = load(yaml, &vars);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.trace_printer, TracePrinter::Json);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    let prom = c.prometheus.unwrap();
    assert_eq!((prom.port, prom.path.as_str()), (9400, "/m"));
    assert_eq!(c.ebpf.context_propagation, ContextPropagation::Headers);
    assert_eq!(c.ebpf.buffer_size, 256);
    assert_eq!(c.attributes.kubernetes.enable, KubeEnable::True);
    assert_eq!(c.metrics.interval, Duration::from_secs(10));
    assert_eq!(c.sampler, SamplerConfig::TraceIdRatio(0.5));
    assert_eq!(c.traces.batch.schedule_delay, Duration::from_millis(250));
    assert_eq!(
        (
            c.traces.batch.max_export_batch_size,
            c.traces.batch.max_queue_size
        ),
        (100, 200)
    );
    let empty_is_unset = load("log_level: warn\n", &[("OTEL_EBPF_LOG_LEVEL", "")]);
    assert_eq!(empty_is_unset.log_level, LogLevel::Warn);
}

#[test]
fn metric_interval_sources() {
    assert_eq!(
        load("", &[("OTEL_METRIC_EXPORT_INTERVAL", "15000")])
            .metrics
            .interval,
        Duration::from_secs(15)
    );
    let yaml = "otel_metrics_export:\n  interval: 30s\n";
    assert_eq!(load(yaml, &[]).metrics.interval, Duration::from_secs(30));
    assert_eq!(
        load(yaml, &[("OTEL_METRIC_EXPORT_INTERVAL", "5000")])
            .metrics
            .interval,
        Duration::from_secs(5)
    );
    let both = [
        ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
        ("OTEL_EBPF_METRICS_INTERVAL", "2s"),
    ];
    assert_eq!(load(yaml, &both).metrics.interval, Duration::from_secs(2));
}

#[test]
fn discovery_from_environment_adds_one_selector() {
    let c = load(
        "discovery:\n  instrument:\n    - k8s_namespace: shop\n",
        &[("OTEL_EBPF_OPEN_PORT", "80,8000-8999")],
    );
    assert_eq!(c.discovery.instrument.len(), 2);
    let added = &c.discovery.instrument[1];
    assert!(added.open_ports.as_ref().unwrap().contains(8080));
    assert_eq!(added.exe_path, None);
    let both = load(
        "",
        &[
            ("OTEL_EBPF_OPEN_PORT", "443"),
            ("OTEL_EBPF_AUTO_TARGET_EXE", "*/nginx"),
        ],
    );
    assert_eq!(
        both.discovery.instrument.len(),
        1,
        "both variables make one selector (a process must match both)"
    );
    assert!(
        both.discovery.instrument[0]
            .exe_path
            .as_ref()
            .unwrap()
            .matches("/usr/sbin/nginx")
    );
    let go_alias = load("", &[("OTEL_GO_AUTO_TARGET_EXE", "*/server")]);
    assert!(
        go_alias.discovery.instrument[0]
            .exe_path
            .as_ref()
            .unwrap()
            .matches("/app/server")
    );
    let yaml_open_port = load("open_port: 8080\n", &[]);
    assert!(
        yaml_open_port.discovery.instrument[0]
            .open_ports
            .as_ref()
            .unwrap()
            .contains(8080)
    );
}

#[test]
fn selectors_and_default_excludes() {
    let c = load(
        "discovery:\n  instrument:\n    - open_ports: 8443\n      name: api\n      k8s_pod_labels:\n        app: 'web-*'\n  \
         default_exclude_instrument:\n",
        &[],
    );
    let s = &c.discovery.instrument[0];
    assert_eq!(s.name.as_deref(), Some("api"));
    assert!(s.uses_kubernetes());
    assert!(s.k8s_pod_labels["app"].matches("web-1"));
    assert!(
        c.discovery.default_exclude_instrument.is_empty(),
        "an explicit empty value clears the defaults"
    );
}

#[test]
fn service_name_sources() {
    assert_eq!(
        load("service_name: yaml\n", &[]).service_name.as_deref(),
        Some("yaml")
    );
    assert_eq!(
        load("service_name: yaml\n", &[("OTEL_EBPF_SERVICE_NAME", "obi")])
            .service_name
            .as_deref(),
        Some("obi")
    );
    let both = [
        ("OTEL_EBPF_SERVICE_NAME", "obi"),
        ("OTEL_SERVICE_NAME", "otel"),
    ];
    assert_eq!(load("", &both).service_name.as_deref(), Some("otel"));
}

#[test]
fn samplers() {
    let s = |name: &str, arg: Option<&str>| {
        let mut vars = vec![("OTEL_TRACES_SAMPLER", name)];
        vars.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
        load("", &vars).sampler
    };
    assert_eq!(s("always_on", None), SamplerConfig::AlwaysOn);
    assert_eq!(
        s("always_off", Some("junk ignored")),
        SamplerConfig::AlwaysOff
    );
    assert_eq!(
        s("parentbased_always_off", None),
        SamplerConfig::ParentBasedAlwaysOff
    );
    assert_eq!(s("traceidratio", None), SamplerConfig::TraceIdRatio(1.0));
    assert_eq!(
        s("parentbased_traceidratio", Some("0.1")),
        SamplerConfig::ParentBasedTraceIdRatio(0.1)
    );
    let yaml = load(
        "otel_traces_export:\n  sampler:\n    name: traceidratio\n    arg: '0.25'\n",
        &[],
    );
    assert_eq!(yaml.sampler, SamplerConfig::TraceIdRatio(0.25));
}

#[test]
fn enums_accept_obi_spellings() {
    assert_eq!(load("log_level: DEBUG\n", &[]).log_level, LogLevel::Debug);
    assert_eq!(load("log_level: Warn\n", &[]).log_level, LogLevel::Warn);
    for (v, want) in [
        ("all", ContextPropagation::All),
        ("headers,tcp", ContextPropagation::All),
        ("tcp, headers", ContextPropagation::All),
        ("http", ContextPropagation::Headers),
        ("tcp", ContextPropagation::Tcp),
        ("disabled", ContextPropagation::Disabled),
        ("''", ContextPropagation::Disabled),
    ] {
        assert_eq!(
            load(&format!("ebpf:\n  context_propagation: {v}\n"), &[])
                .ebpf
                .context_propagation,
            want,
            "{v}"
        );
    }
    assert_eq!(
        load("attributes:\n  kubernetes:\n    enable: true\n", &[])
            .attributes
            .kubernetes
            .enable,
        KubeEnable::True
    );
    assert_eq!(
        load("routes:\n  unmatched: ''\n", &[]).routes.unmatched,
        UnmatchedRoutes::Wildcard
    );
    assert_eq!(
        load("prometheus_export:\n  port: 0\n", &[]).prometheus,
        None,
        "port 0 disables Prometheus"
    );
    assert!(
        !load("metrics:\n  features: []\n", &[])
            .metrics
            .features
            .application
    );
    assert!(
        load("otel_metrics_export:\n  features: [application]\n", &[])
            .metrics
            .features
            .application
    );
}

#[test]
fn durations_and_sizes() {
    for (s, ms) in [
        ("0", 0),
        ("5s", 5000),
        ("500ms", 500),
        ("1m30s", 90_000),
        ("1.5s", 1500),
        ("2h", 7_200_000),
        ("1h1m1s1ms", 3_661_001),
    ] {
        assert_eq!(parse_duration(s), Some(Duration::from_millis(ms)), "{s}");
    }
    assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
    assert_eq!(parse_duration("10ns"), Some(Duration::from_nanos(10)));
    for bad in ["", "5", "s", "-1s", "5d", "1..5s", ".s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    assert_eq!(format_duration(Duration::from_mins(5)), "5m");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_bytes(16 << 20), "16MiB");
    assert_eq!(format_bytes(1000), "1000");
    assert_eq!(
        load("ebpf:\n  ring_buffer_size: 1048576\n", &[])
            .ebpf
            .ring_buffer_size,
        1 << 20
    );
}

#[test]
fn file_references_to_variables_are_replaced() {
    let e = env(&[("EP", "http://c:4318"), ("EMPTY", "")]);
    assert_eq!(substitute_env("a: ${EP}", &e), "a: http://c:4318");
    assert_eq!(substitute_env("a: ${env:EP}/x", &e), "a: http://c:4318/x");
    assert_eq!(
        substitute_env("a: ${MISSING:-dflt} ${EMPTY:-d2}", &e),
        "a: dflt d2"
    );
    assert_eq!(substitute_env("a: $${EP}", &e), "a: ${EP}");
    assert_eq!(
        substitute_env("a: ${not valid} ${", &e),
        "a: ${not valid} ${"
    );
    let c = load(
        "otel_traces_export:\n  endpoint: ${EP}\n",
        &[("EP", "http://c:4318")],
    );
    assert_eq!(c.traces.endpoint.unwrap().url(), "http://c:4318");
}
