//! The tower stack of an OTLP exporter: concurrency limit, retry, per-attempt timeout (which
//! also measures and counts attempts), and the gRPC or HTTP/protobuf transport.

use std::{
    fmt,
    future::Future,
    io::Write as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_client::MetricsServiceClient,
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_client::TraceServiceClient,
    },
};
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message as _;
use tonic::{codec::CompressionEncoding, metadata::MetadataMap, transport::Channel};
use tower::{ServiceBuilder, limit::ConcurrencyLimit, retry::Retry};

use super::{
    config::{Compression, Protocol, ValidSettings},
    encode,
    retry::{Deadline, RetryPolicy},
};
use crate::{
    export::ExportError,
    span::model::Span,
    telemetry::{ExportHandle, Signal},
};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What one exporter carries: traces or metrics. The exporter, its queue and its transports are
/// generic over it.
pub trait OtlpSignal: Send + Sync + 'static {
    /// What is queued: a span, or one service's metrics of one collection.
    type Item: Send + Sync + 'static;
    /// The export request message.
    type Request: prost::Message + Clone + Default + Send + Sync + 'static;
    /// The export response message.
    type Response: prost::Message + Default + Send + 'static;
    /// The `signal` label.
    const SIGNAL: Signal;

    /// One request from a batch of items.
    fn encode(items: &[Self::Item]) -> Self::Request;
    /// The items a receiver counts (spans, data points) in one queued item.
    fn item_count(item: &Self::Item) -> u64;
    /// Estimated memory of one queued item.
    fn item_bytes(item: &Self::Item) -> usize;
    /// `partial_success` of a response: rejected items and the message.
    fn rejected(response: &Self::Response) -> (u64, String);
    /// Sends a request with the generated tonic client.
    fn grpc_export(
        channel: Channel,
        compression: Compression,
        request: tonic::Request<Self::Request>,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send;
}

/// Spans (`TraceService/Export`).
#[derive(Debug)]
pub enum Traces {}

impl OtlpSignal for Traces {
    type Item = Arc<Span>;
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    const SIGNAL: Signal = Signal::Traces;

    fn encode(items: &[Arc<Span>]) -> ExportTraceServiceRequest {
        encode::traces_request(items)
    }

    fn item_count(_: &Arc<Span>) -> u64 {
        1
    }

    fn item_bytes(item: &Arc<Span>) -> usize {
        encode::estimated_span_bytes(item)
    }

    fn rejected(response: &ExportTraceServiceResponse) -> (u64, String) {
        response
            .partial_success
            .as_ref()
            .map_or((0, String::new()), |p| {
                (
                    p.rejected_spans.max(0).cast_unsigned(),
                    p.error_message.clone(),
                )
            })
    }

    async fn grpc_export(
        channel: Channel,
        compression: Compression,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let mut client = TraceServiceClient::new(channel);
        if compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        Ok(client.export(request).await?.into_inner())
    }
}

/// Metrics (`MetricsService/Export`); a queued item is one service's `ResourceMetrics`.
#[derive(Debug)]
pub enum Metrics {}

impl OtlpSignal for Metrics {
    type Item = ResourceMetrics;
    type Request = ExportMetricsServiceRequest;
    type Response = ExportMetricsServiceResponse;
    const SIGNAL: Signal = Signal::Metrics;

    fn encode(items: &[ResourceMetrics]) -> ExportMetricsServiceRequest {
        encode::metrics_request(items.to_vec())
    }

    fn item_count(item: &ResourceMetrics) -> u64 {
        encode::data_points(item) as u64
    }

    fn item_bytes(item: &ResourceMetrics) -> usize {
        2 * item.encoded_len() + 256
    }

    fn rejected(response: &ExportMetricsServiceResponse) -> (u64, String) {
        response
            .partial_success
            .as_ref()
            .map_or((0, String::new()), |p| {
                (
                    p.rejected_data_points.max(0).cast_unsigned(),
                    p.error_message.clone(),
                )
            })
    }

    async fn grpc_export(
        channel: Channel,
        compression: Compression,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<ExportMetricsServiceResponse, tonic::Status> {
        let mut client = MetricsServiceClient::new(channel);
        if compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        Ok(client.export(request).await?.into_inner())
    }
}

/// One batch on its way: the encoded request (shared between attempts) and retry state.
pub struct ExportRequest<S: OtlpSignal> {
    /// The message.
    pub payload: Arc<S::Request>,
    /// Items (spans, data points) in it.
    pub items: u64,
    /// Retries so far.
    pub retries: u32,
    /// When the first attempt started.
    pub first_attempt: Instant,
}

impl<S: OtlpSignal> Clone for ExportRequest<S> {
    fn clone(&self) -> Self {
        Self {
            payload: Arc::clone(&self.payload),
            items: self.items,
            retries: self.retries,
            first_attempt: self.first_attempt,
        }
    }
}

impl<S: OtlpSignal> fmt::Debug for ExportRequest<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportRequest")
            .field("items", &self.items)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// What the receiver answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportResponse {
    /// Items rejected (`partial_success`).
    pub rejected: u64,
    /// The receiver's message about them.
    pub message: String,
}

/// The wire: a tonic channel or a hyper client. Always ready (the concurrency limit above it
/// decides readiness); cheap to clone.
#[expect(
    clippy::large_enum_variant,
    reason = "one per exporter, cloned per request anyway"
)]
pub enum Transport<S: OtlpSignal> {
    /// OTLP/gRPC.
    Grpc {
        /// Lazily connected; reconnects by itself.
        channel: Channel,
        /// Headers as metadata.
        metadata: MetadataMap,
        /// Request compression.
        compression: Compression,
        /// The per-attempt timeout, also sent as `grpc-timeout`.
        timeout: Duration,
        /// The signal.
        signal: std::marker::PhantomData<fn() -> S>,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        /// The client (plain and TLS connections).
        client: Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Full<Bytes>,
        >,
        /// The full URL, used verbatim.
        uri: Uri,
        /// Headers of every request.
        headers: HeaderMap,
        /// Request compression.
        compression: Compression,
    },
}

impl<S: OtlpSignal> Clone for Transport<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Grpc {
                channel,
                metadata,
                compression,
                timeout,
                signal,
            } => Self::Grpc {
                channel: channel.clone(),
                metadata: metadata.clone(),
                compression: *compression,
                timeout: *timeout,
                signal: *signal,
            },
            Self::Http {
                client,
                uri,
                headers,
                compression,
            } => Self::Http {
                client: client.clone(),
                uri: uri.clone(),
                headers: headers.clone(),
                compression: *compression,
            },
        }
    }
}

impl<S: OtlpSignal> Transport<S> {
    /// Builds the transport; nothing connects until the first request.
    pub fn new(settings: &ValidSettings) -> Result<Self, ExportError> {
        match settings.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from(settings.uri.clone())
                    .connect_timeout(settings.timeout)
                    .tcp_nodelay(true);
                if settings.tls {
                    let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                    if let Some(path) = &settings.ca_file {
                        let pem = std::fs::read(path).map_err(|source| ExportError::CaFile {
                            path: path.clone(),
                            source,
                        })?;
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|source| ExportError::Tls { source })?;
                }
                let mut headers = HeaderMap::new();
                for (name, value) in &settings.headers {
                    headers.append(name.clone(), value.clone());
                }
                Ok(Self::Grpc {
                    channel: endpoint.connect_lazy(),
                    metadata: MetadataMap::from_headers(headers),
                    compression: settings.compression,
                    timeout: settings.timeout,
                    signal: std::marker::PhantomData,
                })
            }
            Protocol::HttpProtobuf => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                headers.insert(
                    header::USER_AGENT,
                    HeaderValue::from_static(concat!("mop-agent/", env!("CARGO_PKG_VERSION"))),
                );
                if settings.compression == Compression::Gzip {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                for (name, value) in &settings.headers {
                    headers.append(name.clone(), value.clone());
                }
                let tls = super::tls::client_config(settings.ca_file.as_deref())?;
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .build();
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_mins(1))
                    .build(connector);
                Ok(Self::Http {
                    client,
                    uri: settings.uri.clone(),
                    headers,
                    compression: settings.compression,
                })
            }
        }
    }
}

impl<S: OtlpSignal> tower::Service<ExportRequest<S>> for Transport<S> {
    type Response = ExportResponse;
    type Error = ExportError;
    type Future = BoxFuture<Result<ExportResponse, ExportError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ExportError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ExportRequest<S>) -> Self::Future {
        match self.clone() {
            Self::Grpc {
                channel,
                metadata,
                compression,
                timeout,
                ..
            } => Box::pin(async move {
                let mut request = tonic::Request::new((*req.payload).clone());
                *request.metadata_mut() = metadata;
                request.set_timeout(timeout);
                let response = S::grpc_export(channel, compression, request)
                    .await
                    .map_err(|status| ExportError::from_status(&status))?;
                let (rejected, message) = S::rejected(&response);
                Ok(ExportResponse { rejected, message })
            }),
            Self::Http {
                client,
                uri,
                headers,
                compression,
            } => Box::pin(async move {
                let mut body = req.payload.encode_to_vec();
                if compression == Compression::Gzip {
                    body = gzip(&body);
                }
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default();
                *request.headers_mut() = headers;
                let response = client
                    .request(request)
                    .await
                    .map_err(|source| ExportError::HttpTransport { source })?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| super::retry::parse_retry_after(v, SystemTime::now()));
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|source| ExportError::HttpBody { source })?
                    .to_bytes();
                if !status.is_success() {
                    return Err(ExportError::HttpStatus {
                        status: status.as_u16(),
                        retry_after,
                    });
                }
                let response =
                    S::Response::decode(body).map_err(|source| ExportError::Decode { source })?;
                let (rejected, message) = S::rejected(&response);
                Ok(ExportResponse { rejected, message })
            }),
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// One attempt: bounded by the request timeout, timed, and counted (errors, latency).
pub struct Attempt<T> {
    inner: T,
    timeout: Duration,
    stats: ExportHandle,
}

impl<T: Clone> Clone for Attempt<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            timeout: self.timeout,
            stats: self.stats.clone(),
        }
    }
}

impl<S, T> tower::Service<ExportRequest<S>> for Attempt<T>
where
    S: OtlpSignal,
    T: tower::Service<ExportRequest<S>, Response = ExportResponse, Error = ExportError>,
    T::Future: Send + 'static,
{
    type Response = ExportResponse;
    type Error = ExportError;
    type Future = BoxFuture<Result<ExportResponse, ExportError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExportError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ExportRequest<S>) -> Self::Future {
        let timeout = self.timeout;
        let stats = self.stats.clone();
        let future = self.inner.call(req);
        Box::pin(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Err(ExportError::Timeout { timeout }),
            };
            stats.observe_duration(started.elapsed());
            if let Err(error) = &result {
                stats.inc_errors();
                tracing::debug!(
                    exporter = stats.exporter().as_str(),
                    signal = stats.signal().as_str(),
                    %error,
                    "OTLP export attempt failed."
                );
            }
            result
        })
    }
}

/// The whole stack.
pub type Stack<S> = ConcurrencyLimit<Retry<RetryPolicy, Attempt<Transport<S>>>>;

/// Builds the stack: at most `max_in_flight` requests, each retried per the policy, each
/// attempt bounded by the timeout.
pub fn stack<S: OtlpSignal>(
    settings: &ValidSettings,
    stats: ExportHandle,
    deadline: Deadline,
) -> Result<Stack<S>, ExportError> {
    let transport = Transport::<S>::new(settings)?;
    let policy = RetryPolicy::new(settings.retry.clone(), stats.clone(), deadline);
    Ok(ServiceBuilder::new()
        .concurrency_limit(settings.batch.max_in_flight)
        .retry(policy)
        .service(Attempt {
            inner: transport,
            timeout: settings.timeout,
            stats,
        }))
}
