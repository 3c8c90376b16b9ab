//! Series keys (the attribute set of one time series) and explicit-bucket histograms.

use std::sync::Arc;

use crate::span::model::{AttrValue, Span, SpanKind};

/// `http.route` of the series that takes everything past a service's series cap.
pub const OVERFLOW_ROUTE: &str = "/**overflow**";

/// Methods the HTTP semantic conventions name; any other becomes `_OTHER` (bounded labels).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A group of instruments that share one attribute set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// HTTP requests served: duration and body sizes.
    HttpServer,
    /// HTTP requests sent: duration and body sizes.
    HttpClient,
    /// gRPC calls served: duration.
    RpcServer,
    /// gRPC calls made: duration.
    RpcClient,
}

impl Family {
    /// The family a span is measured in.
    pub fn of(span: &Span) -> Self {
        match (span.kind, span.attributes.rpc.is_some()) {
            (SpanKind::Server, false) => Self::HttpServer,
            (SpanKind::Client, false) => Self::HttpClient,
            (SpanKind::Server, true) => Self::RpcServer,
            (SpanKind::Client, true) => Self::RpcClient,
        }
    }

    /// The instruments of the family, duration first.
    pub const fn instruments(self) -> &'static [Instrument] {
        match self {
            Self::HttpServer => &[
                Instrument::HttpServerDuration,
                Instrument::HttpServerRequestBodySize,
                Instrument::HttpServerResponseBodySize,
            ],
            Self::HttpClient => &[
                Instrument::HttpClientDuration,
                Instrument::HttpClientRequestBodySize,
                Instrument::HttpClientResponseBodySize,
            ],
            Self::RpcServer => &[Instrument::RpcServerDuration],
            Self::RpcClient => &[Instrument::RpcClientDuration],
        }
    }
}

/// What a histogram measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Span duration, seconds.
    Duration,
    /// `http.request.body.size`, bytes.
    RequestBodySize,
    /// `http.response.body.size`, bytes.
    ResponseBodySize,
}

/// One histogram instrument of the semantic conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instrument {
    /// `http.server.request.duration`.
    HttpServerDuration,
    /// `http.client.request.duration`.
    HttpClientDuration,
    /// `rpc.server.call.duration`.
    RpcServerDuration,
    /// `rpc.client.call.duration`.
    RpcClientDuration,
    /// `http.server.request.body.size`.
    HttpServerRequestBodySize,
    /// `http.server.response.body.size`.
    HttpServerResponseBodySize,
    /// `http.client.request.body.size`.
    HttpClientRequestBodySize,
    /// `http.client.response.body.size`.
    HttpClientResponseBodySize,
}

impl Instrument {
    /// Every instrument, in output order.
    pub const ALL: [Self; 8] = [
        Self::HttpServerDuration,
        Self::HttpClientDuration,
        Self::RpcServerDuration,
        Self::RpcClientDuration,
        Self::HttpServerRequestBodySize,
        Self::HttpServerResponseBodySize,
        Self::HttpClientRequestBodySize,
        Self::HttpClientResponseBodySize,
    ];

    /// The OpenTelemetry metric name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::HttpServerDuration => "http.server.request.duration",
            Self::HttpClientDuration => "http.client.request.duration",
            Self::RpcServerDuration => "rpc.server.call.duration",
            Self::RpcClientDuration => "rpc.client.call.duration",
            Self::HttpServerRequestBodySize => "http.server.request.body.size",
            Self::HttpServerResponseBodySize => "http.server.response.body.size",
            Self::HttpClientRequestBodySize => "http.client.request.body.size",
            Self::HttpClientResponseBodySize => "http.client.response.body.size",
        }
    }

    /// The Prometheus family name (unit suffix included, no `_bucket`).
    pub const fn prometheus_name(self) -> &'static str {
        match self {
            Self::HttpServerDuration => "http_server_request_duration_seconds",
            Self::HttpClientDuration => "http_client_request_duration_seconds",
            Self::RpcServerDuration => "rpc_server_call_duration_seconds",
            Self::RpcClientDuration => "rpc_client_call_duration_seconds",
            Self::HttpServerRequestBodySize => "http_server_request_body_size_bytes",
            Self::HttpServerResponseBodySize => "http_server_response_body_size_bytes",
            Self::HttpClientRequestBodySize => "http_client_request_body_size_bytes",
            Self::HttpClientResponseBodySize => "http_client_response_body_size_bytes",
        }
    }

    /// UCUM unit, as OTLP carries it.
    pub const fn unit(self) -> &'static str {
        match self.measure() {
            Measure::Duration => "s",
            Measure::RequestBodySize | Measure::ResponseBodySize => "By",
        }
    }

    /// The Prometheus/OpenMetrics unit word.
    pub const fn prometheus_unit(self) -> &'static str {
        match self.measure() {
            Measure::Duration => "seconds",
            Measure::RequestBodySize | Measure::ResponseBodySize => "bytes",
        }
    }

    /// What the instrument measures.
    pub const fn measure(self) -> Measure {
        match self {
            Self::HttpServerDuration
            | Self::HttpClientDuration
            | Self::RpcServerDuration
            | Self::RpcClientDuration => Measure::Duration,
            Self::HttpServerRequestBodySize | Self::HttpClientRequestBodySize => {
                Measure::RequestBodySize
            }
            Self::HttpServerResponseBodySize | Self::HttpClientResponseBodySize => {
                Measure::ResponseBodySize
            }
        }
    }

    /// The family whose series carry this instrument.
    pub const fn family(self) -> Family {
        match self {
            Self::HttpServerDuration
            | Self::HttpServerRequestBodySize
            | Self::HttpServerResponseBodySize => Family::HttpServer,
            Self::HttpClientDuration
            | Self::HttpClientRequestBodySize
            | Self::HttpClientResponseBodySize => Family::HttpClient,
            Self::RpcServerDuration => Family::RpcServer,
            Self::RpcClientDuration => Family::RpcClient,
        }
    }

    /// One-line description (Prometheus `HELP`, OTLP `description`).
    pub const fn description(self) -> &'static str {
        match self {
            Self::HttpServerDuration => "Duration of HTTP server requests.",
            Self::HttpClientDuration => "Duration of HTTP client requests.",
            Self::RpcServerDuration => "Duration of RPCs served.",
            Self::RpcClientDuration => "Duration of RPCs made.",
            Self::HttpServerRequestBodySize => "Size of HTTP server request bodies.",
            Self::HttpServerResponseBodySize => "Size of HTTP server response bodies.",
            Self::HttpClientRequestBodySize => "Size of HTTP client request bodies.",
            Self::HttpClientResponseBodySize => "Size of HTTP client response bodies.",
        }
    }
}

/// The attribute set of one series: typed, so that keying it costs no formatting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The instrument family.
    pub family: Family,
    /// `http.request.method` (HTTP families), normalised to the known methods or `_OTHER`.
    pub method: Option<&'static str>,
    /// `url.scheme` (HTTP server): `http` or `https`.
    pub scheme: Option<&'static str>,
    /// `http.response.status_code` (HTTP families).
    pub status_code: Option<i64>,
    /// `http.route` (HTTP server), or [`OVERFLOW_ROUTE`].
    pub route: Option<String>,
    /// `server.address` (client families).
    pub server_address: Option<String>,
    /// `server.port` (client families).
    pub server_port: Option<i64>,
    /// `rpc.service` (RPC families).
    pub rpc_service: Option<String>,
    /// `rpc.method` (RPC families).
    pub rpc_method: Option<String>,
    /// `rpc.grpc.status_code` (RPC families).
    pub grpc_status_code: Option<i64>,
    /// True for the overflow series (`otel.metric.overflow`).
    pub overflow: bool,
}

impl SeriesKey {
    /// The series a span is recorded in.
    pub fn of(span: &Span) -> Self {
        let family = Family::of(span);
        let a = &span.attributes;
        let mut key = Self::empty(family);
        let client = matches!(family, Family::HttpClient | Family::RpcClient);
        if client {
            key.server_address.clone_from(&a.server_address);
            key.server_port = a.server_port;
        }
        if let Some(rpc) = &a.rpc {
            key.rpc_service = Some(rpc.service.clone());
            key.rpc_method = Some(rpc.method.clone());
            key.grpc_status_code = rpc.grpc_status_code;
        } else {
            key.method = Some(normalize_method(&a.http_request_method));
            key.status_code = a.http_response_status_code;
            if family == Family::HttpServer {
                key.route.clone_from(&a.http_route);
                key.scheme = Some(if a.url_scheme == "https" {
                    "https"
                } else {
                    "http"
                });
            }
        }
        key
    }

    /// The overflow series of a family.
    pub fn overflow(family: Family) -> Self {
        let mut key = Self::empty(family);
        key.overflow = true;
        match family {
            Family::HttpServer | Family::HttpClient => key.route = Some(OVERFLOW_ROUTE.to_owned()),
            Family::RpcServer | Family::RpcClient => {
                key.rpc_method = Some(OVERFLOW_ROUTE.to_owned());
            }
        }
        key
    }

    fn empty(family: Family) -> Self {
        Self {
            family,
            method: None,
            scheme: None,
            status_code: None,
            route: None,
            server_address: None,
            server_port: None,
            rpc_service: None,
            rpc_method: None,
            grpc_status_code: None,
            overflow: false,
        }
    }

    /// The attributes with their OpenTelemetry names, unknown ones left out, in a stable order.
    pub fn attributes(&self) -> Vec<(&'static str, AttrValue)> {
        let mut kv = Vec::with_capacity(6);
        if let Some(m) = self.method {
            kv.push(("http.request.method", AttrValue::Str(m.to_owned())));
        }
        if let Some(scheme) = self.scheme {
            kv.push(("url.scheme", AttrValue::Str(scheme.to_owned())));
        }
        if let Some(code) = self.status_code {
            kv.push(("http.response.status_code", AttrValue::Int(code)));
        }
        if let Some(route) = &self.route {
            kv.push(("http.route", AttrValue::Str(route.clone())));
        }
        if matches!(self.family, Family::RpcServer | Family::RpcClient) {
            kv.push(("rpc.system", AttrValue::Str("grpc".to_owned())));
        }
        if let Some(s) = &self.rpc_service {
            kv.push(("rpc.service", AttrValue::Str(s.clone())));
        }
        if let Some(m) = &self.rpc_method {
            kv.push(("rpc.method", AttrValue::Str(m.clone())));
        }
        if let Some(code) = self.grpc_status_code {
            kv.push(("rpc.grpc.status_code", AttrValue::Int(code)));
        }
        if let Some(addr) = &self.server_address {
            kv.push(("server.address", AttrValue::Str(addr.clone())));
        }
        if let Some(port) = self.server_port {
            kv.push(("server.port", AttrValue::Int(port)));
        }
        if self.overflow {
            kv.push(("otel.metric.overflow", AttrValue::Bool(true)));
        }
        kv
    }
}

fn normalize_method(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("_OTHER")
}

/// An explicit-bucket histogram; bucket `i` counts values in `(bounds[i-1], bounds[i]]`, the last
/// bucket everything above the last bound (as in OTLP and Prometheus).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds, strictly increasing.
    pub bounds: Arc<[f64]>,
    /// Per-bucket (not cumulative) counts, `bounds.len() + 1` of them.
    pub bucket_counts: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
    /// Smallest observation (meaningless while `count` is 0).
    pub min: f64,
    /// Largest observation (meaningless while `count` is 0).
    pub max: f64,
}

impl Histogram {
    /// An empty histogram with these bounds.
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let bucket_counts = vec![0; bounds.len() + 1];
        Self {
            bounds,
            bucket_counts,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Records one observation.
    pub fn record(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.bucket_counts[bucket] += 1;
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Counts per bucket, cumulative (Prometheus `le` buckets, `+Inf` last).
    pub fn cumulative_counts(&self) -> Vec<u64> {
        let mut total = 0;
        self.bucket_counts
            .iter()
            .map(|c| {
                total += c;
                total
            })
            .collect()
    }
}
