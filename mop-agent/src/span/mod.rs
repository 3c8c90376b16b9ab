//! Span assembly: turns protocol exchanges into spans with trace context and a resource.

pub mod assembler;
pub mod clock;
pub mod context;
pub mod ids;
pub mod linker;
pub mod model;
pub mod sampler;
pub mod stage;

pub use model::{
    AttrValue, RpcAttributes, ServiceResource, Span, SpanAttributes, SpanId, SpanKind, SpanStatus,
    TraceId,
};
