//! mop's protocol stage: per-connection parsers fed with the bytes the kernel side captured.
//!
//! The parsers are synchronous and runtime-free. A connection's parser is owned by one task and
//! fed one [`Segment`] per captured syscall; it emits one [`HttpExchange`] per completed
//! request/response pair. Bytes the kernel did not capture arrive as a gap of known length, so a
//! parser can skip bodies it never saw and resynchronise on the next message.

// A dev-dependency for the benchmarks only; unit tests see it too.
#[cfg(test)]
use criterion as _;

pub mod exchange;
pub mod http1;
pub mod http2;
pub mod segment;

pub use exchange::{HttpExchange, HttpVersion, RequestStart, Role, TraceHeaders};
pub use segment::{Direction, Segment};
