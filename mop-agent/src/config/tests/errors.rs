//! Every error path, asserting the exact message.

use super::{error, errors};

#[test]
fn unknown_keys_name_the_full_path_and_a_near_match() {
    assert_eq!(
        error("otel_traces_export:\n  protocl: grpc\n", &[]),
        "unknown key `otel_traces_export.protocl` (did you mean `otel_traces_export.protocol`?)"
    );
    assert_eq!(
        error(
            "discovery:\n  instrument:\n    - open_ports: 80\n      exe_pth: x\n",
            &[]
        ),
        "unknown key `discovery.instrument[0].exe_pth` (did you mean `discovery.instrument[0].exe_path`?)"
    );
    assert_eq!(
        error("lgo_level: info\n", &[]),
        "unknown key `lgo_level` (did you mean `log_level`?)"
    );
    assert_eq!(error("frobnicate: 1\n", &[]), "unknown key `frobnicate`");
    assert_eq!(
        error("ebpf:\n  buffer_sizes:\n    htp: 512\n", &[]),
        "unknown key `ebpf.buffer_sizes.htp` (did you mean `ebpf.buffer_sizes.http`?)"
    );
}

#[test]
fn all_unknown_keys_are_reported_not_just_the_first() {
    let all = errors("a: 1\nb: 2\nroutes:\n  c: 3\n", &[]);
    assert_eq!(
        all,
        [
            "unknown key `a`",
            "unknown key `b`",
            "unknown key `routes.c`"
        ]
    );
}

#[test]
fn obi_keys_mop_lacks_are_unsupported_not_unknown() {
    assert_eq!(
        error(
            "otel_metrics_export:\n  histogram_aggregation: base2_exponential_bucket_histogram\n",
            &[]
        ),
        "`otel_metrics_export.histogram_aggregation` is not supported by mop yet (mop exports explicit bucket histograms)"
    );
    assert_eq!(
        error("network:\n  enable: true\n", &[]),
        "`network` is not supported by mop yet (mop has no network metrics)"
    );
    assert_eq!(
        error(
            "discovery:\n  exclude_instrument:\n    - exe_path: x\n      languages: go\n",
            &[]
        ),
        "`discovery.exclude_instrument[0].languages` is not supported by mop yet"
    );
    assert_eq!(
        error("ebpf:\n  payload_extraction:\n    http: {}\n", &[]),
        "`ebpf.payload_extraction` is not supported by mop yet"
    );
    assert_eq!(
        error("discovery:\n  services:\n    - open_ports: 80\n", &[]),
        "`discovery.services` is not supported by mop yet (deprecated in OBI; use `discovery.instrument`)"
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    assert_eq!(
        error("prometheus_export: 5\n", &[]),
        "`prometheus_export`: expected a mapping, found an integer `5`"
    );
    assert_eq!(
        error("discovery:\n  instrument: {open_ports: 80}\n", &[]),
        "`discovery.instrument`: expected a list, found a mapping `{open_ports: 80}`"
    );
    assert_eq!(
        error("otel_traces_export:\n  protocol: [grpc]\n", &[]),
        "`otel_traces_export.protocol`: expected one of grpc, http/protobuf, found a list `[grpc]`"
    );
    assert_eq!(
        error(
            "otel_metrics_export:\n  buckets:\n    duration_histogram: 1\n",
            &[]
        ),
        "`otel_metrics_export.buckets.duration_histogram`: expected a non-empty list of strictly increasing finite numbers, found an integer `1`"
    );
}

#[test]
fn bad_port_sets() {
    let expected = |v: &str, why: &str| {
        format!(
            "`discovery.instrument[0].open_ports`: invalid value `{v}`: expected a comma-separated list of ports \
             (1-65535) and ranges, like 80,443,8000-8999 (bad entry `{why}`: ports are 1-65535 and ranges are written low-high)"
        )
    };
    for (yaml, v, why) in [
        ("80-70", "80-70", "80-70"),
        ("70000", "70000", "70000"),
        ("0", "0", "0"),
        ("'80,http'", "80,http", "http"),
        ("'80,'", "80,", ""),
    ] {
        assert_eq!(
            error(
                &format!("discovery:\n  instrument:\n    - open_ports: {yaml}\n"),
                &[]
            ),
            expected(v, why)
        );
    }
}

#[test]
fn bad_endpoints() {
    let e = |url: &str| {
        error(
            &format!("otel_traces_export:\n  endpoint: \"{url}\"\n"),
            &[],
        )
    };
    assert_eq!(
        e("collector:4317"),
        "`otel_traces_export.endpoint`: invalid value `collector:4317`: expected an http:// or https:// URL (not an absolute URL)"
    );
    assert_eq!(
        e("ftp://collector"),
        "`otel_traces_export.endpoint`: invalid value `ftp://collector`: expected an http:// or https:// URL (scheme `ftp` is not http or https)"
    );
    assert_eq!(
        e("http://collector:99999"),
        "`otel_traces_export.endpoint`: invalid value `http://collector:99999`: expected an http:// or https:// URL (bad port `99999`)"
    );
    assert_eq!(
        e("http://user:pw@collector"),
        "`otel_traces_export.endpoint`: invalid value `http://user:pw@collector`: expected an http:// or https:// URL \
         (credentials in the URL are not supported; use headers)"
    );
    assert_eq!(
        e("http:///v1/traces"),
        "`otel_traces_export.endpoint`: invalid value `http:///v1/traces`: expected an http:// or https:// URL (bad host ``)"
    );
    assert_eq!(
        e("unix:///var/run/otel.sock"),
        "`otel_traces_export.endpoint`: value `unix:///var/run/otel.sock` is not supported by mop yet (supported: http:// and https:// URLs)"
    );
}

#[test]
fn bad_durations() {
    let expected = |v: &str| {
        format!(
            "`shutdown_timeout`: invalid value `{v}`: expected a duration with a unit (ns, us, ms, s, m, h) from 1ms to 1h"
        )
    };
    for v in ["5", "5 parsecs", "-5s", "2h", "1.5", "s", "5s3"] {
        assert_eq!(
            error(&format!("shutdown_timeout: \"{v}\"\n"), &[]),
            expected(v),
            "{v}"
        );
    }
    assert_eq!(error("shutdown_timeout: 5\n", &[]), expected("5"));
}

#[test]
fn bad_enum_values() {
    assert_eq!(
        error("otel_traces_export:\n  protocol: thrift\n", &[]),
        "`otel_traces_export.protocol`: invalid value `thrift`: expected one of grpc, http/protobuf"
    );
    assert_eq!(
        error("otel_metrics_export:\n  protocol: http/json\n", &[]),
        "`otel_metrics_export.protocol`: value `http/json` is not supported by mop yet (supported: grpc, http/protobuf)"
    );
    assert_eq!(
        error("trace_printer: counter\n", &[]),
        "`trace_printer`: value `counter` is not supported by mop yet (supported: disabled, text, json)"
    );
    assert_eq!(
        error("log_level: verbose\n", &[]),
        "`log_level`: invalid value `verbose`: expected one of debug, info, warn, error"
    );
    assert_eq!(
        error("routes:\n  unmatched: low-cardinality\n", &[]),
        "`routes.unmatched`: value `low-cardinality` is not supported by mop yet (supported: heuristic, path, wildcard, unset)"
    );
    assert_eq!(
        error("ebpf:\n  context_propagation: ip\n", &[]),
        "`ebpf.context_propagation`: invalid value `ip`: expected all, disabled, headers, tcp or headers,tcp (`ip` has no effect in OBI any more; use tcp)"
    );
    assert_eq!(
        error("ebpf:\n  capture_path: uprobe\n", &[]),
        "`ebpf.capture_path`: invalid value `uprobe`: expected one of auto, fentry, kprobe, tracepoint"
    );
    assert_eq!(
        error("attributes:\n  kubernetes:\n    enable: maybe\n", &[]),
        "`attributes.kubernetes.enable`: invalid value `maybe`: expected one of autodetect, true, false"
    );
    assert_eq!(
        error("otel_traces_export:\n  sampler:\n    name: xray\n", &[]),
        "`otel_traces_export.sampler.name`: value `xray` is not supported by mop yet (supported: parentbased_always_on, \
         parentbased_always_off, parentbased_traceidratio, always_on, always_off, traceidratio)"
    );
    assert_eq!(
        error("metrics:\n  features: [application, network]\n", &[]),
        "`metrics.features`: value `[application, network]` is not supported by mop yet (supported: application)"
    );
    assert_eq!(
        error("discovery:\n  skip_self: yes\n", &[]),
        "`discovery.skip_self`: invalid value `yes`: expected true or false"
    );
}

#[test]
fn out_of_range_values() {
    assert_eq!(
        error("ebpf:\n  buffer_sizes:\n    http: 9000\n", &[]),
        "`ebpf.buffer_sizes.http`: value `9000` is not supported by mop yet (supported: up to 4096 bytes)"
    );
    assert_eq!(
        error("ebpf:\n  buffer_sizes:\n    http: 32\n", &[]),
        "`ebpf.buffer_sizes.http`: invalid value `32`: expected 0 (the default, 256) or 64 to 4096 bytes"
    );
    assert_eq!(
        error("ebpf:\n  ring_buffer_size: 3MiB\n", &[]),
        "`ebpf.ring_buffer_size`: invalid value `3MiB`: expected a power of two from 64KiB to 1GiB"
    );
    assert_eq!(
        error("prometheus_export:\n  port: 70000\n", &[]),
        "`prometheus_export.port`: invalid value `70000`: expected an integer from 0 to 65535"
    );
    assert_eq!(
        error("prometheus_export:\n  port: 9400\n  path: /healthz\n", &[]),
        "`prometheus_export.path`: invalid value `/healthz`: expected a path starting with `/`, other than /healthz and /readyz"
    );
    assert_eq!(
        error(
            "otel_traces_export:\n  sampler:\n    name: traceidratio\n    arg: 1.5\n",
            &[]
        ),
        "`otel_traces_export.sampler.arg`: invalid value `1.5`: expected a ratio from 0 to 1"
    );
    assert_eq!(
        error("otel_traces_export:\n  max_export_batch_size: 5000\n", &[]),
        "`otel_traces_export.max_export_batch_size`: invalid value `5000`: expected at most max_queue_size (4096)"
    );
    assert_eq!(
        error(
            "otel_metrics_export:\n  buckets:\n    duration_histogram: [1, 0.5]\n",
            &[]
        ),
        "`otel_metrics_export.buckets.duration_histogram`: invalid value `[1, 0.5]`: expected a non-empty list of strictly increasing finite numbers"
    );
    assert_eq!(
        error("routes:\n  wildcard_char: ab\n", &[]),
        "`routes.wildcard_char`: invalid value `ab`: expected a single character other than `/`"
    );
}

#[test]
fn bad_selectors_globs_and_patterns() {
    assert_eq!(
        error("discovery:\n  instrument:\n    - name: lonely\n", &[]),
        "`discovery.instrument[0]`: invalid value `{name: lonely}`: expected a selector with at least one of open_ports, \
         exe_path, k8s_* (name and namespace only rename)"
    );
    assert_eq!(
        error(
            "discovery:\n  instrument:\n    - exe_path: \"*[abc\"\n",
            &[]
        ),
        "`discovery.instrument[0].exe_path`: invalid value `*[abc`: expected a glob pattern (unclosed `[`)"
    );
    assert_eq!(
        error(
            "discovery:\n  instrument:\n    - k8s_namespace: \"{a,b\"\n",
            &[]
        ),
        "`discovery.instrument[0].k8s_namespace`: invalid value `{a,b`: expected a glob pattern (unclosed `{`)"
    );
    assert_eq!(
        errors("routes:\n  patterns: ['/users/{id', 'users']\n", &[]),
        [
            "`routes.patterns[0]`: invalid value `/users/{id`: expected a route pattern like /users/{id} or /users/:id (unclosed `{` in `{id`)",
            "`routes.patterns[1]`: invalid value `users`: expected a route pattern like /users/{id} or /users/:id (must start with `/`)",
        ]
    );
}

#[test]
fn bad_environment_variables_name_the_variable() {
    assert_eq!(
        error("", &[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]),
        "environment variable OTEL_EXPORTER_OTLP_PROTOCOL: invalid value `thrift`: expected one of grpc, http/protobuf"
    );
    assert_eq!(
        error("", &[("OTEL_EBPF_OPEN_PORT", "80-70")]),
        "environment variable OTEL_EBPF_OPEN_PORT: invalid value `80-70`: expected a comma-separated list of ports (1-65535) \
         and ranges, like 80,443,8000-8999 (bad entry `80-70`: ports are 1-65535 and ranges are written low-high)"
    );
    assert_eq!(
        error("", &[("OTEL_METRIC_EXPORT_INTERVAL", "1m")]),
        "environment variable OTEL_METRIC_EXPORT_INTERVAL: invalid value `1m`: expected an integer number of milliseconds from 100 to 86400000"
    );
    assert_eq!(
        error("", &[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue")]),
        "environment variable OTEL_EXPORTER_OTLP_TRACES_HEADERS: invalid value `novalue`: expected a mapping of header names \
         to values, or `k=v,k2=v2` (`novalue` has no `=`)"
    );
    assert_eq!(
        error("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317")]),
        "environment variable OTEL_EXPORTER_OTLP_ENDPOINT: invalid value `localhost:4317`: expected an http:// or https:// URL (not an absolute URL)"
    );
    assert_eq!(
        error("", &[("OTEL_EBPF_LOG_LEVEL", "trace")]),
        "environment variable OTEL_EBPF_LOG_LEVEL: invalid value `trace`: expected one of debug, info, warn, error"
    );
    assert_eq!(
        error("", &[("OTEL_EBPF_AUTO_TARGET_EXE", "[x")]),
        "environment variable OTEL_EBPF_AUTO_TARGET_EXE: invalid value `[x`: expected a glob pattern (unclosed `[`)"
    );
}

#[test]
fn a_bad_file_value_is_reported_even_when_a_variable_overrides_it() {
    assert_eq!(
        error("log_level: loud\n", &[("OTEL_EBPF_LOG_LEVEL", "debug")]),
        "`log_level`: invalid value `loud`: expected one of debug, info, warn, error"
    );
}

#[test]
fn unsupported_obi_variables_are_rejected() {
    assert_eq!(
        error("", &[("OTEL_EBPF_BPF_WAKEUP_LEN", "10")]),
        "environment variable OTEL_EBPF_BPF_WAKEUP_LEN is not supported by mop yet"
    );
    assert_eq!(
        error("", &[("OTEL_EXPORTER_OTLP_INSECURE", "true")]),
        "environment variable OTEL_EXPORTER_OTLP_INSECURE is not supported by mop yet (use an http:// endpoint for plaintext)"
    );
}

#[test]
fn malformed_yaml() {
    let e = error("discovery:\n  instrument: [\n", &[]);
    assert!(e.starts_with("invalid yaml: "), "{e}");
    assert_eq!(
        error("- a\n- b\n", &[]),
        "invalid yaml: the top level must be a mapping of keys, found a list"
    );
    let dup = error("log_level: info\nlog_level: debug\n", &[]);
    assert!(
        dup.starts_with("invalid yaml: ") && dup.contains("log_level"),
        "{dup}"
    );
}
