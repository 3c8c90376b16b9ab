//! Assembling and running the pipeline: load and attach, start every stage, report ready,
//! and on SIGINT/SIGTERM stop capturing, drain, flush and detach.

use std::{sync::Arc, time::Duration};

use mop_protocol::http1::Http1Limits;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    capture::{
        CaptureError, CapturePathKind, LoadSettings,
        conntrack::ConnTracker,
        loader,
        stage::{CaptureStage, StageSettings},
    },
    config::{Config, ebpf::CapturePath},
    discovery::{
        self, DiscoveryOutputs, Scanner,
        identity::IdentityContext,
        kube::{KubeEnvironment, KubeError},
        procfs::ProcFs,
    },
    export::{ExportSettings, Exporters},
    span::{assembler::Assembler, clock::WallClock, ids::IdGenerator, stage::SpanStage},
    telemetry::SelfMetrics,
};

/// Capacity of the channel from capture to span assembly (exchanges).
const EXCHANGE_QUEUE: usize = 16_384;
/// How often the capture stage polls the ring buffer between kernel wake-ups.
const RING_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Connections silent this long are dropped from the userspace tracker.
const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_mins(5);

/// Why the agent stopped with an error.
#[derive(Debug, Error)]
pub enum AgentError {
    /// Capture could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// An exporter could not start.
    #[error("starting exporters: {0}")]
    Export(#[from] crate::export::ExportError),
    /// Kubernetes metadata is required (`attributes.kubernetes.enable: true`) but unavailable.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// Waiting for signals failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A stage's task panicked or was aborted.
    #[error("stage {stage} failed: {source}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The load-time settings of the capture stage.
fn load_settings(config: &Config) -> LoadSettings {
    let ring = config.ebpf.ring_buffer_size;
    LoadSettings {
        capture_bytes: config.ebpf.buffer_size,
        // HPACK needs whole header blocks: HTTP/2 connections get the largest window.
        http2_capture_bytes: mop_common::MAX_CAPTURE_BYTES as u32,
        ring_buffer_bytes: ring,
        // Wake the reader early only when an eighth of the ring is unread; otherwise the
        // reader's poll tick collects records in batches.
        wakeup_bytes: ring / 8,
        max_connections: config.ebpf.max_connections,
        forced_path: match config.ebpf.capture_path {
            CapturePath::Auto => None,
            CapturePath::Tracepoint => Some(CapturePathKind::Syscalls),
            CapturePath::Kprobe => Some(CapturePathKind::Kprobe),
            CapturePath::Fentry => Some(CapturePathKind::Fentry),
        },
        // Watching execs only helps selectors that can match a program as it starts.
        watch_exec: config
            .discovery
            .instrument
            .iter()
            .any(|s| s.exe_path.is_some() && s.open_ports.is_none()),
    }
}

/// The kernel's host name (in a Pod not on the host network: the Pod's name).
fn kernel_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

/// The host name resources carry: the configured override, else the kernel's.
fn host_name(config: &Config) -> String {
    config
        .attributes
        .instance_id
        .override_hostname
        .clone()
        .or_else(kernel_host_name)
        .unwrap_or_else(|| "localhost".to_owned())
}

/// What the Kubernetes module needs from the environment.
// TODO(config): `KUBERNETES_SERVICE_HOST`/`_PORT` and `KUBE_NODE_NAME` belong in
// `config::attributes::KubeConfig`; read here until they are.
fn kube_environment() -> KubeEnvironment {
    KubeEnvironment::from_env(|name| std::env::var(name).ok(), kernel_host_name())
}

/// The discovery scanner, with Kubernetes metadata when it is on, and the metadata watcher.
async fn scanner(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<(Scanner, Option<tokio::task::JoinHandle<()>>), AgentError> {
    let kube = discovery::kube::start(
        &config.attributes.kubernetes,
        &config.discovery,
        &kube_environment(),
        cancel.clone(),
    )
    .await?;
    let scanner = Scanner::new(
        ProcFs::host(),
        config.discovery.clone(),
        IdentityContext {
            host_name: host_name(config),
            service_name_override: config.service_name.clone(),
        },
    );
    Ok(match kube {
        Some(kube) => (scanner.with_kube(kube.discovery), Some(kube.watcher)),
        None => (scanner, None),
    })
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let metrics = Arc::new(SelfMetrics::default());
    let loaded = loader::load(&load_settings(&config))?;
    metrics.set_probes_attached(loaded.probes.attached);
    metrics.set_capture_path(loaded.probes.path.as_str());
    tracing::info!(
        path = loaded.probes.path.as_str(),
        programs = loaded.probes.attached,
        buffer_size = config.ebpf.buffer_size,
        "Capture attached."
    );

    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let export_cancel = CancellationToken::new();
    let (sink, exporters) = Exporters::start(
        ExportSettings::from_config(&config),
        Arc::clone(&metrics),
        ready_rx,
        export_cancel.clone(),
    )
    .await?;
    let (exchange_tx, exchange_rx) = mpsc::channel(EXCHANGE_QUEUE);
    let (exec_tx, exec_rx) = mpsc::channel(1024);
    let (capture_ctl_tx, capture_ctl_rx) = mpsc::channel(1024);
    let (span_ctl_tx, span_ctl_rx) = mpsc::channel(1024);

    let capture_cancel = CancellationToken::new();
    let capture = CaptureStage::new(
        (loaded.ring, loaded.counters),
        ConnTracker::new(config.ebpf.max_connections as usize, Http1Limits::default()),
        (exchange_tx, exec_tx),
        capture_ctl_rx,
        Arc::clone(&metrics),
        StageSettings {
            poll_interval: RING_POLL_INTERVAL,
            idle_timeout: CONNECTION_IDLE_TIMEOUT,
        },
    );
    let capture = tokio::spawn(capture.run(capture_cancel.clone()));

    let spans = SpanStage::new(
        Assembler::new(
            IdGenerator::from_entropy(),
            WallClock::measure(),
            config.routes.clone(),
        ),
        exchange_rx,
        span_ctl_rx,
        Arc::clone(&metrics),
    );
    let spans = tokio::spawn(spans.run(move |span| sink.send(span)));

    let discovery_cancel = CancellationToken::new();
    let (scanner, kube_watcher) = scanner(&config, &discovery_cancel).await?;
    let (first_pass_tx, first_pass_rx) = oneshot::channel();
    let discovery = tokio::spawn(discovery::run(
        scanner,
        DiscoveryOutputs {
            pids: loaded.pids,
            spans: span_ctl_tx,
            capture: capture_ctl_tx,
            metrics: Arc::clone(&metrics),
        },
        exec_rx,
        first_pass_tx,
        discovery_cancel.clone(),
    ));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signals)?;
    let mut first_pass = std::pin::pin!(first_pass_rx);
    let mut ready = false;
    loop {
        tokio::select! {
            _ = &mut first_pass, if !ready => {
                ready = true;
                ready_tx.send_replace(true);
                tracing::info!(
                    processes = metrics.instrumented_processes(),
                    "Agent ready: probes attached and first discovery pass done."
                );
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }

    tracing::info!("Shutting down: stopping capture, flushing exporters.");
    discovery_cancel.cancel();
    discovery.await.map_err(|source| AgentError::Stage {
        stage: "discovery",
        source,
    })?;
    if let Some(watcher) = kube_watcher {
        watcher.await.map_err(|source| AgentError::Stage {
            stage: "kubernetes metadata",
            source,
        })?;
    }
    capture_cancel.cancel();
    let captured = capture.await.map_err(|source| AgentError::Stage {
        stage: "capture",
        source,
    })?;
    spans.await.map_err(|source| AgentError::Stage {
        stage: "span",
        source,
    })?;
    exporters.shutdown().await;
    // Dropping the probes detaches every program and frees the maps.
    drop(loaded.probes);
    captured?;
    tracing::info!(
        events = metrics.events_read(),
        lost = metrics.events_lost(),
        spans = metrics.spans_produced(),
        "Stopped."
    );
    Ok(())
}
