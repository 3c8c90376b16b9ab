//! Settings of one OTLP exporter, with const defaults, validated once into [`ValidSettings`].

use std::{path::PathBuf, time::Duration};

use http::{HeaderName, HeaderValue, Uri};

use crate::export::ExportError;

/// Wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// gzip (`grpc-encoding: gzip` or `Content-Encoding: gzip`).
    Gzip,
}

/// Batching and queueing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// Items (spans; metric snapshots) per request at most.
    pub max_items: usize,
    /// Longest wait before a partial batch is sent (`OTEL_BSP_SCHEDULE_DELAY`).
    pub timeout: Duration,
    /// Memory cap of the queue (estimated bytes, queued plus in flight); the oldest queued
    /// items are dropped past it.
    pub max_queue_bytes: usize,
    /// Items queued at most (`OTEL_BSP_MAX_QUEUE_SIZE`); the oldest are dropped past it.
    pub max_queue_items: usize,
    /// Requests in flight at once.
    pub max_in_flight: usize,
}

impl BatchSettings {
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` default.
    pub const DEFAULT_MAX_ITEMS: usize = 512;
    /// `OTEL_BSP_SCHEDULE_DELAY` default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default memory cap: 64 MiB.
    pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 << 20;
    /// Default item cap: none, only the memory cap bounds the queue.
    pub const DEFAULT_MAX_QUEUE_ITEMS: usize = usize::MAX;
    /// Default requests in flight.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_items: Self::DEFAULT_MAX_ITEMS,
            timeout: Self::DEFAULT_TIMEOUT,
            max_queue_bytes: Self::DEFAULT_MAX_QUEUE_BYTES,
            max_queue_items: Self::DEFAULT_MAX_QUEUE_ITEMS,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Retries of failed attempts: capped exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySettings {
    /// Retry at all.
    pub enabled: bool,
    /// Cap of the first backoff.
    pub initial_backoff: Duration,
    /// Cap of any backoff.
    pub max_backoff: Duration,
    /// Give up on a request once this much time has passed since its first attempt.
    pub max_elapsed: Duration,
}

impl RetrySettings {
    /// Default first backoff cap.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
    /// Default backoff cap (bounds the time to notice a recovered receiver).
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
    /// Default budget per request.
    pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_mins(5);
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            max_elapsed: Self::DEFAULT_MAX_ELAPSED,
        }
    }
}

/// Everything one OTLP exporter needs, as the config module resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Where to send: for `http/protobuf` the full URL (`.../v1/traces`), used verbatim; for
    /// gRPC the origin (`http://collector:4317`). `https://` means TLS.
    pub endpoint: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Extra headers (gRPC metadata), e.g. authentication.
    pub headers: Vec<(String, String)>,
    /// Body compression.
    pub compression: Compression,
    /// Timeout of one attempt (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout: Duration,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate: not supported, [`OtlpSettings::validate`] refuses it.
    pub insecure_skip_verify: bool,
    /// Batching and queueing.
    pub batch: BatchSettings,
    /// Retries.
    pub retry: RetrySettings,
}

impl OtlpSettings {
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Defaults for an endpoint and protocol.
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            headers: Vec::new(),
            compression: Compression::None,
            timeout: Self::DEFAULT_TIMEOUT,
            ca_file: None,
            insecure_skip_verify: false,
            batch: BatchSettings::default(),
            retry: RetrySettings::default(),
        }
    }

    /// Checks every field once; the exporter only takes the result.
    pub fn validate(&self) -> Result<ValidSettings, ExportError> {
        let invalid = |reason| ExportError::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let uri: Uri = self.endpoint.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let bad = || ExportError::InvalidHeader { name: name.clone() };
                Ok((
                    HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                        .map_err(|_| bad())?,
                    HeaderValue::from_str(value.trim()).map_err(|_| bad())?,
                ))
            })
            .collect::<Result<Vec<_>, ExportError>>()?;
        let setting = |option, reason| ExportError::InvalidSetting { option, reason };
        if self.insecure_skip_verify {
            return Err(setting(
                "insecure_skip_verify",
                "not supported; trust the server's CA with ca_file",
            ));
        }
        let b = &self.batch;
        if b.max_items == 0 {
            return Err(setting("max_export_batch_size", "must be at least 1"));
        }
        if b.timeout.is_zero() {
            return Err(setting("schedule_delay", "must be positive"));
        }
        if b.max_queue_bytes < 64 << 10 {
            return Err(setting("max_queue_bytes", "must be at least 64 KiB"));
        }
        if b.max_queue_items == 0 {
            return Err(setting("max_queue_size", "must be at least 1"));
        }
        if b.max_in_flight == 0 {
            return Err(setting("max_in_flight", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(setting("timeout", "must be positive"));
        }
        let r = &self.retry;
        if r.enabled && (r.initial_backoff.is_zero() || r.max_backoff < r.initial_backoff) {
            return Err(setting(
                "backoff",
                "initial backoff must be positive and at most the max backoff",
            ));
        }
        Ok(ValidSettings {
            uri,
            tls,
            protocol: self.protocol,
            headers,
            compression: self.compression,
            timeout: self.timeout,
            ca_file: self.ca_file.clone(),
            batch: self.batch.clone(),
            retry: self.retry.clone(),
        })
    }
}

/// [`OtlpSettings`] after validation.
#[derive(Clone, Debug)]
pub struct ValidSettings {
    pub(super) uri: Uri,
    pub(super) tls: bool,
    pub(super) protocol: Protocol,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) compression: Compression,
    pub(super) timeout: Duration,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) batch: BatchSettings,
    pub(super) retry: RetrySettings,
}

impl ValidSettings {
    /// The endpoint.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}
