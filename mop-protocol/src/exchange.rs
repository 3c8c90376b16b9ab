//! A completed request/response pair: what the span stage turns into one span.

/// Which end of the exchange the instrumented process was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process received the request and sent the response (span kind SERVER).
    Server,
    /// The process sent the request and received the response (span kind CLIENT).
    Client,
}

/// The HTTP version of an exchange (`network.protocol.version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2 (including gRPC).
    Http2,
}

impl HttpVersion {
    /// The value of `network.protocol.version`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// Trace-context headers found on a request, kept verbatim for the span stage to validate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// B3 single header `b3`.
    pub b3: Option<String>,
    /// B3 multi header `X-B3-TraceId`.
    pub x_b3_traceid: Option<String>,
    /// B3 multi header `X-B3-SpanId`.
    pub x_b3_spanid: Option<String>,
    /// B3 multi header `X-B3-ParentSpanId`.
    pub x_b3_parentspanid: Option<String>,
    /// B3 multi header `X-B3-Sampled`.
    pub x_b3_sampled: Option<String>,
}

impl TraceHeaders {
    /// True when no trace-context header was seen.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One HTTP request and its response, as parsed from one connection.
///
/// Timestamps are `CLOCK_MONOTONIC` nanoseconds from the kernel; the span stage converts them
/// to wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags on what the capture missed, read by name"
)]
pub struct HttpExchange {
    /// Server when the request arrived on the connection, client when it was sent.
    pub role: Role,
    /// HTTP version from the request line (or the connection preface for HTTP/2).
    pub version: HttpVersion,
    /// Request method, as sent (`GET`, `POST`, ...). Empty when an HTTP/2 `:method` could not
    /// be decoded (`request_head_truncated` is then set).
    pub method: String,
    /// Request target as sent: origin form (`/a/b?q=1`) or absolute form for proxies; for
    /// HTTP/2 the `:path`. Empty when an HTTP/2 `:path` could not be decoded.
    pub target: String,
    /// `Host` header (or `:authority`), when captured.
    pub host: Option<String>,
    /// Response status code; `None` when the connection ended before a response was seen
    /// (`response_start_ns` is then 0), or when the capture window cut the status line
    /// (`response_head_truncated` is then set).
    pub status: Option<u16>,
    /// Request body bytes (from `Content-Length`, or counted for chunked bodies): the bytes
    /// that passed when the connection closed inside the body. 0 when
    /// `request_body_size_unknown` is set.
    pub request_body_size: u64,
    /// Response body bytes (from `Content-Length`, or counted), as for `request_body_size`.
    pub response_body_size: u64,
    /// Trace-context headers of the request.
    pub trace_headers: TraceHeaders,
    /// `content-type` of the request, when captured (tells gRPC from plain HTTP/2).
    pub content_type: Option<String>,
    /// Entry of the syscall that carried the first request byte.
    pub request_start_ns: u64,
    /// Exit of the syscall that carried the first request byte: when a server had the request
    /// in hand (the entry of a blocking read is when it began waiting, not when bytes came).
    pub request_first_exit_ns: u64,
    /// Exit of the syscall that carried the last request byte.
    pub request_end_ns: u64,
    /// Entry of the syscall that carried the first byte of the final (non-1xx) response; 0 when
    /// no response was seen.
    pub response_start_ns: u64,
    /// Exit of the syscall that carried the last response byte. When no response was seen
    /// (`status` is `None` and `response_start_ns` is 0), the time the parser stopped waiting:
    /// the connection's close, or the segment that pushed the request out of a full queue.
    pub response_end_ns: u64,
    /// Thread that handled the request: the reader for a server, the writer for a client.
    pub request_tid: u32,
    /// True when part of the request head was not captured (headers may be missing, and a
    /// body size of 0 may only mean that its framing header was not captured). For HTTP/2: some
    /// field of the request's header block could not be decoded (not captured, or encoded
    /// against HPACK state the parser lost); the fields it keeps that were not known are `None`,
    /// and `method` and `target` are empty.
    pub request_head_truncated: bool,
    /// True when the capture window cut the request line inside the target: `target` is only
    /// its prefix, and `version` (then 1.1) was not seen.
    pub request_target_truncated: bool,
    /// True when part of the response head was not captured (its headers may be missing). For
    /// HTTP/2: some field of the response's header blocks (headers or trailers) could not be
    /// decoded, or response frames may have been missed; unknown fields are `None`.
    pub response_head_truncated: bool,
    /// True when the request body's size could not be known (its chunk framing or its start
    /// was lost in uncaptured bytes); `request_body_size` is then 0.
    pub request_body_size_unknown: bool,
    /// Same as `request_body_size_unknown`, for the response body.
    pub response_body_size_unknown: bool,
    /// HTTP/2 stream id; 0 for HTTP/1.
    pub stream_id: u32,
    /// Identifies the request within its connection, from the moment it starts (see
    /// [`RequestStart`]): HTTP/1 request order, the HTTP/2 stream id.
    pub seq: u64,
    /// gRPC status (`grpc-status` of the trailers or of a trailers-only response; or, when the
    /// server reset the stream without one, the status gRPC maps that reset to). `None` when
    /// not gRPC, not seen, or not decodable; always `None` for HTTP/1.
    pub grpc_status: Option<u32>,
    /// `grpc-message`, only when the parser was asked to keep it.
    pub grpc_message: Option<String>,
    /// HTTP/2 `RST_STREAM` error code when the stream was reset before its response ended (the
    /// status is then what was seen before the reset).
    pub reset_code: Option<u32>,
}

impl HttpExchange {
    /// True for a gRPC call: an HTTP/2 exchange whose `content-type` is `application/grpc*`.
    pub fn is_grpc(&self) -> bool {
        self.version == HttpVersion::Http2
            && self
                .content_type
                .as_deref()
                .is_some_and(crate::http2::grpc::is_grpc_content_type)
    }
}

/// A request that just began (its head was parsed): what trace context needs to know before
/// the exchange completes, so that a call made while serving it can become its child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestStart {
    /// The request's [`HttpExchange::seq`].
    pub seq: u64,
    /// Server (request read) or client (request written).
    pub role: Role,
    /// The thread that read or wrote the request head.
    pub tid: u32,
    /// Entry of the syscall with the first request byte.
    pub request_start_ns: u64,
    /// Exit of that syscall.
    pub request_first_exit_ns: u64,
    /// HTTP/2 stream id (0 for HTTP/1).
    pub stream_id: u32,
    /// The request's trace-context headers.
    pub trace_headers: TraceHeaders,
}

impl RequestStart {
    /// The start marker of a request as parsed so far.
    pub fn of(x: &HttpExchange) -> Self {
        Self {
            seq: x.seq,
            role: x.role,
            tid: x.request_tid,
            request_start_ns: x.request_start_ns,
            request_first_exit_ns: x.request_first_exit_ns,
            stream_id: x.stream_id,
            trace_headers: x.trace_headers.clone(),
        }
    }
}
