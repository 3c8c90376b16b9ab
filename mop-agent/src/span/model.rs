//! The span record every exporter consumes: one per HTTP request or gRPC call.

use std::{net::IpAddr, sync::Arc};

/// A W3C trace id (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// A W3C span id (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Lower-case hex, as in `traceparent` and the JSON printer.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// Lower-case hex, as in `traceparent` and the JSON printer.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// OpenTelemetry span kind; the agent only makes these two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// The instrumented process served the request.
    Server,
    /// The instrumented process sent the request.
    Client,
}

impl SpanKind {
    /// `server` or `client`, as the printers write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// Span status per the HTTP and RPC semantic conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    /// No error (the default; OpenTelemetry's `Unset`).
    Unset,
    /// 5xx on a server, 4xx/5xx on a client, a gRPC error status.
    Error,
}

/// The resource of an instrumented process: who produced the span.
///
/// Shared by every span of the process, so it is reference counted and built once per process
/// by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceResource {
    /// `service.name`.
    pub service_name: String,
    /// `service.namespace`, when known.
    pub service_namespace: Option<String>,
    /// `service.instance.id`.
    pub service_instance_id: String,
    /// Every other resource attribute (`host.name`, `process.pid`, `process.executable.name`,
    /// `telemetry.sdk.name`, `k8s.*`, and the target's `OTEL_RESOURCE_ATTRIBUTES`), sorted by key.
    pub attributes: Vec<(String, AttrValue)>,
}

/// An attribute value: the OpenTelemetry types the agent emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer (status codes, ports, sizes, pids are integers, never strings).
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// gRPC attributes of a span (`rpc.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcAttributes {
    /// `rpc.service`: the fully qualified service, e.g. `helloworld.Greeter`.
    pub service: String,
    /// `rpc.method`.
    pub method: String,
    /// `rpc.grpc.status_code`; `None` when no status was seen.
    pub grpc_status_code: Option<i64>,
}

/// The attributes of a span, typed, so that metrics can aggregate on them without parsing.
///
/// Exporters turn them into OpenTelemetry key/values with [`SpanAttributes::key_values`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SpanAttributes {
    /// `http.request.method`.
    pub http_request_method: String,
    /// `url.path` (server spans), without the query string.
    pub url_path: Option<String>,
    /// `url.query` (server spans), without the `?`.
    pub url_query: Option<String>,
    /// `url.full` (client spans).
    pub url_full: Option<String>,
    /// `url.scheme`: `http`, or `https` when the plaintext was read at the TLS library.
    pub url_scheme: &'static str,
    /// `http.route`, when a route is known.
    pub http_route: Option<String>,
    /// `http.response.status_code`, when a response was seen.
    pub http_response_status_code: Option<i64>,
    /// `server.address`.
    pub server_address: Option<String>,
    /// `server.port`.
    pub server_port: Option<i64>,
    /// `client.address` (server spans).
    pub client_address: Option<IpAddr>,
    /// `network.protocol.version`: `1.0`, `1.1` or `2`.
    pub network_protocol_version: &'static str,
    /// `http.request.body.size`; `None` when the body's framing was not captured (a chunked
    /// body whose chunk sizes fell outside the capture window): left out, never guessed.
    pub http_request_body_size: Option<i64>,
    /// `http.response.body.size`; `None` when unknown, as above.
    pub http_response_body_size: Option<i64>,
    /// gRPC attributes, for gRPC calls.
    pub rpc: Option<RpcAttributes>,
}

impl SpanAttributes {
    /// The attributes as OpenTelemetry key/values, in a stable order, leaving out unknowns.
    ///
    /// gRPC spans carry the RPC attributes and the connection's, not the HTTP ones.
    pub fn key_values(&self) -> Vec<(&'static str, AttrValue)> {
        let mut kv = Vec::with_capacity(16);
        if let Some(rpc) = &self.rpc {
            kv.push(("rpc.system", AttrValue::Str("grpc".to_owned())));
            kv.push(("rpc.service", AttrValue::Str(rpc.service.clone())));
            kv.push(("rpc.method", AttrValue::Str(rpc.method.clone())));
            if let Some(code) = rpc.grpc_status_code {
                kv.push(("rpc.grpc.status_code", AttrValue::Int(code)));
            }
        } else {
            self.http_key_values(&mut kv);
        }
        if let Some(addr) = &self.server_address {
            kv.push(("server.address", AttrValue::Str(addr.clone())));
        }
        if let Some(port) = self.server_port {
            kv.push(("server.port", AttrValue::Int(port)));
        }
        if let Some(addr) = self.client_address {
            kv.push(("client.address", AttrValue::Str(addr.to_string())));
        }
        kv.push((
            "network.protocol.version",
            AttrValue::Str(self.network_protocol_version.to_owned()),
        ));
        if self.rpc.is_none() {
            if let Some(size) = self.http_request_body_size {
                kv.push(("http.request.body.size", AttrValue::Int(size)));
            }
            if let Some(size) = self.http_response_body_size {
                kv.push(("http.response.body.size", AttrValue::Int(size)));
            }
        }
        kv
    }

    /// The HTTP request and response attributes.
    fn http_key_values(&self, kv: &mut Vec<(&'static str, AttrValue)>) {
        if !self.http_request_method.is_empty() {
            kv.push((
                "http.request.method",
                AttrValue::Str(self.http_request_method.clone()),
            ));
        }
        kv.push(("url.scheme", AttrValue::Str(self.url_scheme.to_owned())));
        let strings = [
            ("url.path", &self.url_path),
            ("url.query", &self.url_query),
            ("url.full", &self.url_full),
            ("http.route", &self.http_route),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                kv.push((key, AttrValue::Str(v.clone())));
            }
        }
        if let Some(code) = self.http_response_status_code {
            kv.push(("http.response.status_code", AttrValue::Int(code)));
        }
    }
}

/// One finished span, ready for the exporters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// Trace id: from an incoming `traceparent`, a linked parent span, or freshly generated.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace flags (bit 0: sampled).
    pub trace_flags: u8,
    /// W3C `tracestate`, kept verbatim.
    pub trace_state: Option<String>,
    /// Server or client.
    pub kind: SpanKind,
    /// `{method} {route}`, `{method}`, or `{package.Service}/{Method}` for gRPC.
    pub name: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Error or unset.
    pub status: SpanStatus,
    /// The instrumented process (host PID namespace).
    pub pid: u32,
    /// The process's resource.
    pub resource: Arc<ServiceResource>,
    /// The span's attributes.
    pub attributes: SpanAttributes,
    /// Which signals this span feeds (`routes.ignored_patterns` with `ignore_mode` can keep a
    /// request out of traces or out of metrics).
    pub signals: Signals,
}

/// Which signals a span feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// Exported as a trace span (printers and OTLP traces).
    pub traces: bool,
    /// Counted in the RED metrics.
    pub metrics: bool,
}

impl Signals {
    /// Both signals (the normal case).
    pub const ALL: Self = Self {
        traces: true,
        metrics: true,
    };
}

impl Span {
    /// Duration in seconds, as the duration histograms record it.
    #[expect(
        clippy::cast_precision_loss,
        reason = "durations are far below 2^52 ns"
    )]
    pub fn duration_seconds(&self) -> f64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano) as f64 / 1e9
    }

    /// True when the span is sampled (W3C flag bit 0).
    pub fn is_sampled(&self) -> bool {
        self.trace_flags & 1 == 1
    }
}
