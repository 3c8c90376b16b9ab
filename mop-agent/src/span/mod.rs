//! Span assembly: turns protocol exchanges into spans with trace context and a resource.

pub mod model;

pub use model::{
    AttrValue, RpcAttributes, ServiceResource, Span, SpanAttributes, SpanId, SpanKind,
    SpanStatus, TraceId,
};
