//! OTLP endpoint resolution, protocol choice and headers.

use std::time::Duration;

use super::{error, load};
use crate::config::{Compression, OtlpEndpoint, OtlpProtocol, otlp::parse_header_list};

/// (yaml, variables, expected traces URL, expected metrics URL, expected protocol of both)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    Option<&'static str>,
    OtlpProtocol,
);

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn endpoint_resolution_table() {
    use OtlpProtocol::{Grpc, HttpProtobuf};
    let cases: &[Case] = &[
        ("", &[], None, None, HttpProtobuf),
        // Shared endpoint: signal path appended for HTTP, trailing slash not doubled.
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
            Some("http://c:4318/v1/traces"),
            Some("http://c:4318/v1/metrics"),
            HttpProtobuf,
        ),
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")],
            Some("http://c:4318/v1/traces"),
            Some("http://c:4318/v1/metrics"),
            HttpProtobuf,
        ),
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw/otlp")],
            Some("https://gw/otlp/v1/traces"),
            Some("https://gw/otlp/v1/metrics"),
            HttpProtobuf,
        ),
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw/otlp/")],
            Some("https://gw/otlp/v1/traces"),
            Some("https://gw/otlp/v1/metrics"),
            HttpProtobuf,
        ),
        // Shared endpoint with gRPC (inferred from 4317, or explicit): nothing appended.
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")],
            Some("http://c:4317"),
            Some("http://c:4317"),
            Grpc,
        ),
        (
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:14317/")],
            Some("http://c:14317/"),
            Some("http://c:14317/"),
            Grpc,
        ),
        (
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:9000"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            Some("http://c:9000"),
            Some("http://c:9000"),
            Grpc,
        ),
        // Explicit http/protobuf on 4317 still appends.
        (
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
            Some("http://c:4317/v1/traces"),
            Some("http://c:4317/v1/metrics"),
            HttpProtobuf,
        ),
        // Per-signal endpoints are verbatim (Mimir's path included) and beat the shared one.
        (
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://shared:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "https://mimir/otlp/v1/metrics",
                ),
            ],
            Some("http://shared:4318/v1/traces"),
            Some("https://mimir/otlp/v1/metrics"),
            HttpProtobuf,
        ),
        (
            "otel_traces_export:\n  endpoint: http://tempo:4318\n",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://shared:4318")],
            Some("http://tempo:4318"),
            Some("http://shared:4318/v1/metrics"),
            HttpProtobuf,
        ),
        (
            "otel_traces_export:\n  endpoint: http://from-yaml:4318/x\n",
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://from-env:4318/y",
            )],
            Some("http://from-env:4318/y"),
            None,
            HttpProtobuf,
        ),
        (
            "otel_metrics_export:\n  endpoint: http://mimir:9009/otlp/v1/metrics\n",
            &[],
            None,
            Some("http://mimir:9009/otlp/v1/metrics"),
            HttpProtobuf,
        ),
    ];
    for (yaml, vars, traces, metrics, protocol) in cases {
        let config = load(yaml, vars);
        let case = format!("yaml {yaml:?}, env {vars:?}");
        assert_eq!(
            config.traces.endpoint.as_ref().map(OtlpEndpoint::url),
            *traces,
            "traces, {case}"
        );
        assert_eq!(
            config.metrics.endpoint.as_ref().map(OtlpEndpoint::url),
            *metrics,
            "metrics, {case}"
        );
        if traces.is_some() {
            assert_eq!(config.traces.protocol, *protocol, "traces protocol, {case}");
        }
        if metrics.is_some() {
            assert_eq!(
                config.metrics.protocol, *protocol,
                "metrics protocol, {case}"
            );
        }
    }
}

#[test]
fn protocol_precedence() {
    let yaml = "otel_traces_export:\n  endpoint: http://c:4317\n  protocol: http/protobuf\n";
    assert_eq!(
        load(yaml, &[]).traces.protocol,
        OtlpProtocol::HttpProtobuf,
        "YAML beats inference"
    );
    assert_eq!(
        load(yaml, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
            .traces
            .protocol,
        OtlpProtocol::Grpc
    );
    let both = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
    ];
    assert_eq!(
        load(yaml, &both).traces.protocol,
        OtlpProtocol::HttpProtobuf,
        "per-signal beats shared"
    );
    assert_eq!(
        load(yaml, &both).metrics.protocol,
        OtlpProtocol::Grpc,
        "the shared variable sets metrics too"
    );
}

#[test]
fn scheme_decides_tls() {
    let config = load(
        "otel_traces_export:\n  endpoint: https://c:4317\notel_metrics_export:\n  endpoint: http://c:4317\n",
        &[],
    );
    let traces = config.traces.endpoint.unwrap();
    let metrics = config.metrics.endpoint.unwrap();
    assert!(traces.is_tls());
    assert!(!metrics.is_tls());
    assert_eq!(
        (traces.host(), traces.port(), traces.path()),
        ("c", 4317, "")
    );
    let default_port = OtlpEndpoint::parse("https://[::1]/otlp").unwrap();
    assert_eq!(
        (
            default_port.host(),
            default_port.port(),
            default_port.path()
        ),
        ("[::1]", 443, "/otlp")
    );
    assert_eq!(OtlpEndpoint::parse("HTTP://c").unwrap().url(), "http://c");
}

#[test]
fn header_lists() {
    let ok = |s: &str| parse_header_list(s).unwrap();
    assert_eq!(ok(""), Vec::<(String, String)>::new());
    assert_eq!(ok("a=1"), [("a".to_owned(), "1".to_owned())]);
    assert_eq!(
        ok(" api-key = se%20cret , x-b=c=d,"),
        [
            ("api-key".to_owned(), "se cret".to_owned()),
            ("x-b".to_owned(), "c=d".to_owned())
        ]
    );
    assert_eq!(
        ok("authorization=Basic%20dXNlcjpwYXNz"),
        [("authorization".to_owned(), "Basic dXNlcjpwYXNz".to_owned())]
    );
    assert_eq!(parse_header_list("a").unwrap_err(), "`a` has no `=`");
    assert_eq!(parse_header_list("=v").unwrap_err(), "bad header name ``");
    assert_eq!(
        parse_header_list("a b=v").unwrap_err(),
        "bad header name `a b`"
    );
    assert_eq!(
        parse_header_list("a=%zz").unwrap_err(),
        "bad percent escape in `%zz`"
    );
    assert_eq!(
        parse_header_list("a=x%0Ay").unwrap_err(),
        "control character in the value of `a`"
    );
}

#[test]
fn headers_merge_yaml_then_shared_then_signal_variables() {
    let yaml = "otel_traces_export:\n  headers:\n    Authorization: from-yaml\n    x-team: core\n";
    let vars = [
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=shared,x-org=o"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-org=traces"),
    ];
    let config = load(yaml, &vars);
    let h: Vec<(&str, &str)> = config
        .traces
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        h,
        [
            ("x-team", "core"),
            ("authorization", "shared"),
            ("x-org", "traces")
        ]
    );
    let m: Vec<(&str, &str)> = config
        .metrics
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(m, [("authorization", "shared"), ("x-org", "o")]);
    assert_eq!(
        load("otel_metrics_export:\n  headers: a=1,b=2\n", &[])
            .metrics
            .headers
            .len(),
        2,
        "string form in YAML"
    );
}

#[test]
fn timeout_compression_certificate() {
    let config = load(
        "otel_traces_export:\n  timeout: 2s\n  compression: gzip\notel_metrics_export:\n  timeout: 2s\n",
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "700"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EBPF_INSECURE_SKIP_VERIFY", "true"),
        ],
    );
    assert_eq!(config.traces.timeout, Duration::from_secs(5));
    assert_eq!(config.metrics.timeout, Duration::from_millis(700));
    assert_eq!(config.traces.compression, Some(Compression::Gzip));
    assert_eq!(config.metrics.compression, Some(Compression::Gzip));
    assert_eq!(
        config.metrics.ca_file.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert!(config.traces.insecure_skip_verify && config.metrics.insecure_skip_verify);
    assert_eq!(
        load("", &[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")])
            .traces
            .compression,
        None
    );
    assert_eq!(
        error("", &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
        "environment variable OTEL_EXPORTER_OTLP_COMPRESSION: invalid value `zstd`: expected one of gzip, none"
    );
}
