//! Synthetic spans for tests, benchmarks and the export outage bench: deterministic ids and
//! attributes derived from a sequence number.

use std::{net::IpAddr, sync::Arc};

use crate::span::model::{
    AttrValue, RpcAttributes, ServiceResource, Signals, Span, SpanAttributes, SpanId, SpanKind,
    SpanStatus, TraceId,
};

/// A resource like discovery builds for a process.
pub fn resource(service_name: &str, pid: u32) -> Arc<ServiceResource> {
    Arc::new(ServiceResource {
        service_name: service_name.to_owned(),
        service_namespace: Some("mop-test".to_owned()),
        service_instance_id: format!("host-1:{pid}"),
        attributes: vec![
            ("host.name".to_owned(), AttrValue::Str("host-1".to_owned())),
            (
                "process.executable.name".to_owned(),
                AttrValue::Str(service_name.to_owned()),
            ),
            ("process.pid".to_owned(), AttrValue::Int(i64::from(pid))),
            (
                "telemetry.sdk.name".to_owned(),
                AttrValue::Str("mop-agent".to_owned()),
            ),
        ],
    })
}

/// The trace id of synthetic span `seq`: unique per `seq`, never all zeros.
pub fn trace_id(seq: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&0x6d6f_7000_0000_0001_u64.to_be_bytes());
    id[8..].copy_from_slice(&seq.to_be_bytes());
    TraceId(id)
}

/// The span id of synthetic span `seq`: unique per `seq`, never all zeros.
pub fn span_id(seq: u64) -> SpanId {
    SpanId((seq | (1 << 63)).to_be_bytes())
}

/// An HTTP server span: `GET /users/{id}`, status 200 (500 when `seq % 10 == 9`), 10 ms plus
/// `seq % 7` ms, a parent span for odd `seq`.
pub fn http_server_span(seq: u64, resource: &Arc<ServiceResource>) -> Span {
    let status = if seq % 10 == 9 { 500 } else { 200 };
    let start = 1_700_000_000_000_000_000 + seq * 1_000_000;
    Span {
        trace_id: trace_id(seq),
        span_id: span_id(seq),
        parent_span_id: (seq % 2 == 1).then(|| SpanId((seq ^ 0xffff).to_be_bytes())),
        trace_flags: 1,
        trace_state: None,
        kind: SpanKind::Server,
        name: "GET /users/{id}".to_owned(),
        start_unix_nano: start,
        end_unix_nano: start + 10_000_000 + (seq % 7) * 1_000_000,
        status: if status >= 500 {
            SpanStatus::Error
        } else {
            SpanStatus::Unset
        },
        pid: 4242,
        resource: Arc::clone(resource),
        attributes: SpanAttributes {
            http_request_method: "GET".to_owned(),
            url_path: Some(format!("/users/{seq}")),
            url_query: Some("verbose=1".to_owned()),
            url_full: None,
            url_scheme: "http",
            http_route: Some("/users/{id}".to_owned()),
            http_response_status_code: Some(status),
            server_address: Some("127.0.0.1".to_owned()),
            server_port: Some(8080),
            client_address: Some(IpAddr::from([127, 0, 0, 1])),
            network_protocol_version: "1.1",
            http_request_body_size: Some(0),
            http_response_body_size: Some(100 + (seq % 3).cast_signed() * 1000),
            rpc: None,
        },
        signals: Signals::ALL,
    }
}

/// A gRPC client span: `helloworld.Greeter/SayHello`, status 0 (14 when `seq % 5 == 4`).
pub fn grpc_client_span(seq: u64, resource: &Arc<ServiceResource>) -> Span {
    let code = if seq % 5 == 4 { 14 } else { 0 };
    let start = 1_700_000_000_000_000_000 + seq * 1_000_000;
    Span {
        trace_id: trace_id(seq),
        span_id: span_id(seq),
        parent_span_id: None,
        trace_flags: 1,
        trace_state: None,
        kind: SpanKind::Client,
        name: "helloworld.Greeter/SayHello".to_owned(),
        start_unix_nano: start,
        end_unix_nano: start + 2_000_000,
        status: if code == 0 {
            SpanStatus::Unset
        } else {
            SpanStatus::Error
        },
        pid: 4243,
        resource: Arc::clone(resource),
        attributes: SpanAttributes {
            http_request_method: "POST".to_owned(),
            url_path: None,
            url_query: None,
            url_full: Some("http://127.0.0.1:50051/helloworld.Greeter/SayHello".to_owned()),
            url_scheme: "http",
            http_route: None,
            http_response_status_code: Some(200),
            server_address: Some("127.0.0.1".to_owned()),
            server_port: Some(50051),
            client_address: None,
            network_protocol_version: "2",
            http_request_body_size: Some(12),
            http_response_body_size: Some(17),
            rpc: Some(RpcAttributes {
                service: "helloworld.Greeter".to_owned(),
                method: "SayHello".to_owned(),
                grpc_status_code: Some(code),
            }),
        },
        signals: Signals::ALL,
    }
}
