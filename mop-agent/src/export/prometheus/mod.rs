//! The Prometheus endpoint: `/metrics` (or the configured path) in `OpenMetrics` or Prometheus
//! text, `/healthz` (200 while serving) and `/readyz` (200 once the agent is ready, 503 before).

mod render;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
pub use render::{Format, label_name, render};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    export::ExportError,
    metrics::RedMetrics,
    telemetry::{ProcessStats, SelfMetrics},
};

/// Binds the listening socket (before anything is spawned, so a busy port fails start-up).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ExportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ExportError::Bind { addr, source })
}

/// The endpoint's state.
#[derive(Clone, Debug)]
pub struct Server {
    path: String,
    red: Option<Arc<RedMetrics>>,
    self_metrics: Arc<SelfMetrics>,
    ready: watch::Receiver<bool>,
}

impl Server {
    /// A server rendering `red` (if any) and `self_metrics` at `path`; `ready` drives `/readyz`.
    pub fn new(
        path: String,
        red: Option<Arc<RedMetrics>>,
        self_metrics: Arc<SelfMetrics>,
        ready: watch::Receiver<bool>,
    ) -> Self {
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Self {
            path,
            red,
            self_metrics,
            ready,
        }
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route(&self.path.clone(), get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }

    /// Serves on `listener` until `cancel` fires.
    pub async fn serve(self, listener: TcpListener, cancel: CancellationToken) {
        let addr = listener.local_addr().ok();
        tracing::info!(?addr, path = %self.path, "Serving Prometheus metrics.");
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "The Prometheus endpoint stopped.");
        }
    }
}

async fn metrics(State(server): State<Server>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let snapshot = server.red.as_ref().map(|red| red.snapshot());
    let process = ProcessStats::read();
    let body = render(
        format,
        snapshot.as_ref(),
        &server.self_metrics,
        process.as_ref(),
    );
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn readyz(State(server): State<Server>) -> Response {
    if *server.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
