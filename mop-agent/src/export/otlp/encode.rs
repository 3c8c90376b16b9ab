//! Spans and metric snapshots to `opentelemetry-proto` messages.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric,
    },
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Status, span::SpanKind as ProtoKind, status::StatusCode,
    },
};

use crate::{
    metrics::{Instrument, MetricsSnapshot, ServiceSnapshot},
    span::model::{AttrValue, ServiceResource, Span, SpanKind, SpanStatus},
};

/// Instrumentation scope name of everything the agent exports.
pub const SCOPE_NAME: &str = "mop-agent";

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

fn any_value(value: &AttrValue) -> AnyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
    };
    AnyValue { value: Some(value) }
}

fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(any_value(value)),
        ..KeyValue::default()
    }
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    key_value(key, &AttrValue::Str(value.to_owned()))
}

/// The OTLP resource of a service: `service.*` first, then the other attributes.
pub fn resource(r: &ServiceResource) -> Resource {
    let mut attributes = Vec::with_capacity(r.attributes.len() + 3);
    attributes.push(str_kv("service.name", &r.service_name));
    if let Some(ns) = &r.service_namespace {
        attributes.push(str_kv("service.namespace", ns));
    }
    attributes.push(str_kv("service.instance.id", &r.service_instance_id));
    attributes.extend(r.attributes.iter().map(|(k, v)| key_value(k, v)));
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// One span as an OTLP span.
pub fn span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let kind = match s.kind {
        SpanKind::Server => ProtoKind::Server,
        SpanKind::Client => ProtoKind::Client,
    };
    let status = match s.status {
        SpanStatus::Unset => Status::default(),
        SpanStatus::Error => Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        },
    };
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone().unwrap_or_default(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: u32::from(s.trace_flags),
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.end_unix_nano,
        attributes: s
            .attributes
            .key_values()
            .iter()
            .map(|(k, v)| key_value(k, v))
            .collect(),
        status: Some(status),
        ..opentelemetry_proto::tonic::trace::v1::Span::default()
    }
}

/// A trace export request: one `ResourceSpans` per distinct resource (same `Arc` or equal
/// contents), in order of first appearance, each with one `mop-agent` scope.
pub fn traces_request(spans: &[Arc<Span>]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<ServiceResource>, Vec<_>)> = Vec::new();
    for s in spans {
        let found = groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &s.resource))
            .or_else(|| groups.iter().position(|(r, _)| **r == s.resource));
        let proto = span(s);
        match found {
            Some(i) => groups[i].1.push(proto),
            None => groups.push((&s.resource, vec![proto])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(r, spans)| ResourceSpans {
                resource: Some(resource(r)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// One `ResourceMetrics` per service of a snapshot: a histogram metric per instrument that
/// has data points, cumulative, with explicit bounds.
pub fn resource_metrics(snapshot: &MetricsSnapshot) -> Vec<ResourceMetrics> {
    snapshot
        .services
        .iter()
        .map(|service| ResourceMetrics {
            resource: Some(resource(&service.resource)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: Instrument::ALL
                    .iter()
                    .filter_map(|i| histogram_metric(*i, service, snapshot.time_unix_nano))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect()
}

fn histogram_metric(
    instrument: Instrument,
    service: &ServiceSnapshot,
    time_unix_nano: u64,
) -> Option<Metric> {
    let data_points: Vec<HistogramDataPoint> = service
        .series
        .iter()
        .filter(|s| s.key.family == instrument.family())
        .filter_map(|s| {
            let h = s.histogram(instrument.measure())?;
            Some(HistogramDataPoint {
                attributes: s
                    .key
                    .attributes()
                    .iter()
                    .map(|(k, v)| key_value(k, v))
                    .collect(),
                start_time_unix_nano: s.start_unix_nano,
                time_unix_nano,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.bucket_counts.clone(),
                explicit_bounds: h.bounds.to_vec(),
                min: (h.count > 0).then_some(h.min),
                max: (h.count > 0).then_some(h.max),
                ..HistogramDataPoint::default()
            })
        })
        .collect();
    if data_points.is_empty() {
        return None;
    }
    Some(Metric {
        name: instrument.name().to_owned(),
        description: instrument.description().to_owned(),
        unit: instrument.unit().to_owned(),
        data: Some(metric::Data::Histogram(
            opentelemetry_proto::tonic::metrics::v1::Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            },
        )),
        ..Metric::default()
    })
}

/// A metrics export request from queued `ResourceMetrics`.
pub fn metrics_request(resource_metrics: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics }
}

/// Histogram data points in a `ResourceMetrics` (what `rejected_data_points` counts).
pub fn data_points(rm: &ResourceMetrics) -> usize {
    rm.scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        })
        .sum()
}

/// Rough heap size of a span once queued and encoded (for the queue's memory cap): the span
/// struct plus its strings plus the encoded attributes.
pub fn estimated_span_bytes(s: &Span) -> usize {
    let a = &s.attributes;
    let strings = [
        &a.url_path,
        &a.url_query,
        &a.url_full,
        &a.http_route,
        &a.server_address,
    ]
    .iter()
    .map(|s| s.as_ref().map_or(0, String::len))
    .sum::<usize>()
        + a.http_request_method.len()
        + s.name.len()
        + s.trace_state.as_ref().map_or(0, String::len)
        + a.rpc
            .as_ref()
            .map_or(0, |r| r.service.len() + r.method.len());
    std::mem::size_of::<Span>() + std::mem::size_of::<Arc<Span>>() + 2 * strings + 256
}
