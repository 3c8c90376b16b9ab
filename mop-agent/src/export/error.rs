//! Errors of the exporters.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// An exporter could not be built, or one export attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an absolute `http://` or `https://` URL.
    #[error("invalid OTLP endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header name or value cannot be sent.
    #[error("invalid OTLP header `{name}`")]
    InvalidHeader {
        /// The header name.
        name: String,
    },
    /// A batch, queue or retry setting is out of range.
    #[error("invalid export setting `{option}`: {reason}")]
    InvalidSetting {
        /// The setting.
        option: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The CA certificate file could not be read or holds no certificate.
    #[error("cannot load CA certificates from {path}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS client could not be configured.
    #[error("cannot configure TLS for the OTLP exporter")]
    Tls {
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The rustls client could not be configured.
    #[error("cannot configure TLS for the OTLP HTTP exporter")]
    TlsConfig {
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The receiver answered with a gRPC error status.
    #[error("OTLP gRPC export failed with {code:?}: {message}")]
    Grpc {
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
        /// The delay the receiver asked for (`google.rpc.RetryInfo`).
        retry_after: Option<Duration>,
    },
    /// The gRPC call failed in the client's transport (connection refused, reset or closed
    /// under the request): tonic reports these as statuses it made itself.
    #[error("OTLP gRPC export could not reach the receiver ({code:?}): {message}")]
    GrpcTransport {
        /// The code tonic gave it (often `Unknown` or `Unavailable`).
        code: tonic::Code,
        /// Tonic's message.
        message: String,
    },
    /// The receiver answered with a non-2xx HTTP status.
    #[error("OTLP HTTP export failed with status {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The delay the receiver asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The HTTP request could not be sent or its answer not read (connection refused, reset).
    #[error("OTLP HTTP export could not reach the receiver")]
    HttpTransport {
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The HTTP answer body could not be read.
    #[error("OTLP HTTP export could not read the answer")]
    HttpBody {
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The receiver's answer is not a valid OTLP response.
    #[error("OTLP answer is not a valid protobuf response")]
    Decode {
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// One attempt took longer than the request timeout.
    #[error("OTLP export attempt timed out after {timeout:?}")]
    Timeout {
        /// The request timeout.
        timeout: Duration,
    },
    /// The Prometheus endpoint could not listen.
    #[error("cannot listen for Prometheus scrapes on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// gRPC codes worth another attempt: the OTLP specification's retryable codes, plus
/// `RESOURCE_EXHAUSTED` (a receiver under pressure; its `RetryInfo` delay is honoured).
const RETRYABLE_GRPC: [tonic::Code; 7] = [
    tonic::Code::Cancelled,
    tonic::Code::DeadlineExceeded,
    tonic::Code::ResourceExhausted,
    tonic::Code::Aborted,
    tonic::Code::OutOfRange,
    tonic::Code::Unavailable,
    tonic::Code::DataLoss,
];

/// HTTP statuses worth another attempt (OTLP/HTTP specification).
const RETRYABLE_HTTP: [u16; 4] = [429, 502, 503, 504];

impl ExportError {
    /// True when the same request may succeed later: transient gRPC codes, HTTP 429/502/503/504,
    /// connection failures and timeouts. Configuration errors and rejections are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Grpc { code, .. } => RETRYABLE_GRPC.contains(code),
            Self::HttpStatus { status, .. } => RETRYABLE_HTTP.contains(status),
            Self::GrpcTransport { .. }
            | Self::HttpTransport { .. }
            | Self::HttpBody { .. }
            | Self::Timeout { .. } => true,
            Self::InvalidEndpoint { .. }
            | Self::InvalidHeader { .. }
            | Self::InvalidSetting { .. }
            | Self::CaFile { .. }
            | Self::Tls { .. }
            | Self::TlsConfig { .. }
            | Self::Decode { .. }
            | Self::Bind { .. } => false,
        }
    }

    /// The delay the receiver asked for before the next attempt, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Grpc { retry_after, .. } | Self::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A gRPC status as an export error, with its `RetryInfo` delay. A status tonic made from a
    /// client-side error (it carries that error as its source) is a transport failure.
    pub fn from_status(status: &tonic::Status) -> Self {
        use std::error::Error as _;
        use tonic_types::StatusExt as _;
        if status.source().is_some() {
            return Self::GrpcTransport {
                code: status.code(),
                message: status.message().to_owned(),
            };
        }
        let retry_after = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay);
        Self::Grpc {
            code: status.code(),
            message: status.message().to_owned(),
            retry_after,
        }
    }
}
