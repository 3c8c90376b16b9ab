//! HTTP/2 and gRPC.

pub mod hpack;
