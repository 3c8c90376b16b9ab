//! HTTP/2 (RFC 9113) and gRPC: one [`Http2Connection`] per TCP connection turns the captured
//! segments of both directions into [`HttpExchange`](crate::HttpExchange)s, one per stream.
//!
//! Frames are found across any split of the byte streams: a frame header or payload may span
//! segments, a segment may hold many frames, and uncaptured bytes (the kernel's capture window,
//! or DATA payloads it skips on purpose) are skipped by count. DATA payloads are never needed:
//! their sizes come from frame headers. Header blocks (HEADERS or `PUSH_PROMISE`, then
//! CONTINUATION) are decoded as they arrive by a per-direction [`hpack::Decoder`]; only the
//! fields the agent needs are kept, once per block.
//!
//! # What is lost when bytes are not captured
//!
//! - Inside a DATA payload: nothing (the body size is counted from the frame header).
//! - Inside a header block: the fields after the gap are unknown and the direction's HPACK table
//!   is forgotten (see [`hpack`] for why later blocks stay right): the exchange gets
//!   `request_head_truncated` / `response_head_truncated` and the unknown fields stay `None`
//!   (or empty, for `method` and `target`), never a wrong value.
//! - Inside a frame header: frame sync is lost for that direction until a segment starts with
//!   plausible frames that tile it ([`ParseError::LostSync`]); the HPACK table is forgotten
//!   and open streams get the `*_unknown` / `*_truncated` flags.
//! - The connection's start (the agent joined later): the same as a lost frame header.
//!
//! gRPC is told apart by its `content-type` ([`grpc::is_grpc_content_type`]); its status is the
//! `grpc-status` of the trailers or of a trailers-only response.
//!
//! # Driving it from a connection tracker
//!
//! - Prior knowledge (h2c, or HTTP/2 inside TLS): when a direction's first captured bytes pass
//!   [`looks_like_preface`], use [`Http2Connection::new`] for the connection and feed it every
//!   segment, the first one included.
//! - `Upgrade: h2c`: the connection starts as HTTP/1.1. When
//!   [`Http1Connection`](crate::http1::Http1Connection) reports a tunnel after a segment and has
//!   just emitted an exchange with status 101, take that exchange out of the output (it is not a
//!   span of its own), build [`Http2Connection::from_h2c_upgrade`] with it, and feed it that same
//!   segment again, then everything after. If the client's next bytes are not the preface (a
//!   WebSocket upgrade, say), the parser gives the 101 exchange back unchanged, counts
//!   [`ParseError::InvalidPreface`], and ignores the rest.
//! - A connection found already open: [`Http2Connection::new`] as well; it finds frames at the
//!   start of a segment, and reports what it can decode without the HPACK state it missed.

mod connection;
mod core;
mod error;
mod fields;
mod frame;
pub mod grpc;
pub mod hpack;
mod reader;

#[doc(hidden)]
pub mod fuzzing;

pub use connection::{Http2Connection, Http2Limits};
pub use error::{Http2Stats, ParseError};
pub use frame::{PREFACE, looks_like_frames, looks_like_preface};
