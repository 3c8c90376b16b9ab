//! HTTP/1.0 and HTTP/1.1: one [`Http1Connection`] per TCP connection turns the captured
//! segments of both directions into [`HttpExchange`](crate::HttpExchange)s.
//!
//! What it handles: keep-alive and pipelining (responses matched first in first out), messages
//! split anywhere across segments, `Content-Length`, chunked and close-delimited bodies,
//! `Expect: 100-continue` and other interim responses, `HEAD`, 204 and 304, 101 and `CONNECT`
//! tunnels (parsing stops), and the capture window: bodies of known length are skipped over
//! uncaptured gaps by count, a header block cut by the window is parsed as far as it was
//! captured, and the end of a chunked body whose middle was not captured is found from the
//! captured tail of the segment.
//!
//! A header block cut by the window is parsed from its complete captured lines; the head is
//! taken to end in that segment, at the first empty line of the segment's tail when there is
//! one. Where the body then ends cannot always be known (a length header that was not
//! captured, a body in the same write as the cut head): the message then takes every following
//! segment of its direction until one starts a message, and a response also ends when the next
//! request arrives; its body size is reported as unknown unless `Content-Length` was captured.
//! A cut response head never makes a body close-delimited.
//!
//! Nothing is buffered but a partial header block (or chunk line) per direction, bounded by
//! [`Http1Limits::max_head_bytes`], and at most [`Http1Limits::max_pending`] requests waiting
//! for responses. Header fields are not stored: only those the agent needs are copied, once per
//! exchange. Every problem is counted in [`Http1Stats`] as a [`ParseError`], and the parser
//! resynchronises on the next segment that starts a message.

mod chunked;
mod connection;
mod error;
mod head;
mod stream;

#[doc(hidden)]
pub mod fuzzing;

pub use connection::{Http1Connection, Http1Limits};
pub use error::{Http1Stats, ParseError};
pub use head::{looks_like_request, looks_like_response};
