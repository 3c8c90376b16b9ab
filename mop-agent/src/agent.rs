//! Assembling and running the pipeline: load and attach, start every stage, report ready,
//! and on SIGINT/SIGTERM stop capturing, drain, flush and detach.

use std::{sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    capture::{
        CaptureError, CapturePathKind, LoadSettings, Loaded, Probes,
        conntrack::ConnTracker,
        loader,
        parser::ParserLimits,
        stage::{CaptureStage, StageSettings},
        tls::TlsProbes,
    },
    config::{
        Config,
        ebpf::{CapturePath, ContextPropagation},
    },
    discovery::{
        self, DiscoveryOutputs, Scanner,
        identity::IdentityContext,
        kube::{KubeEnvironment, KubeError},
        procfs::ProcFs,
    },
    export::{ExportSettings, Exporters, SpanSink},
    span::{
        assembler::Assembler, clock::WallClock, ids::IdGenerator, linker::Linker, sampler::Sampler,
        stage::SpanStage,
    },
    telemetry::SelfMetrics,
};

/// Capacity of the channel from capture to span assembly (exchanges).
const EXCHANGE_QUEUE: usize = 16_384;
/// Capacity of the control channels between discovery, capture and span assembly.
const CONTROL_QUEUE: usize = 1024;
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
    /// Kubernetes metadata was required but could not start.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// An exporter could not start.
    #[error("starting exporters: {0}")]
    Export(#[from] crate::export::ExportError),
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
        tcp_context: tcp_context(config.ebpf.context_propagation),
    }
}

/// Whether trace context travels in TCP options; says so when part of the setting cannot
/// be honoured (mop does not rewrite HTTP headers in flight).
fn tcp_context(setting: ContextPropagation) -> bool {
    match setting {
        ContextPropagation::Tcp => true,
        ContextPropagation::All => {
            tracing::warn!(
                "ebpf.context_propagation: all: mop carries trace context in TCP options only; \
                 it does not inject HTTP headers"
            );
            true
        }
        ContextPropagation::Headers => {
            tracing::warn!(
                "ebpf.context_propagation: headers: mop does not inject HTTP headers; use tcp \
                 to carry trace context between nodes"
            );
            false
        }
        ContextPropagation::Disabled => false,
    }
}

/// The kernel's host name (the agent's UTS namespace: the node, with hostPID/hostNetwork).
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

/// What the Kubernetes module needs from the environment (read by `config`).
fn kube_environment(config: &Config) -> KubeEnvironment {
    KubeEnvironment::new(
        &config.attributes.kubernetes.environment,
        kernel_host_name(),
    )
}

/// The discovery scanner, with Kubernetes metadata when it is on, and the metadata watcher.
async fn scanner(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<(Scanner, Option<JoinHandle<()>>), AgentError> {
    let kube = discovery::kube::start(
        &config.attributes.kubernetes,
        &config.discovery,
        &kube_environment(config),
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

/// The running stages, in pipeline order, and what stops them.
struct Running {
    metrics: Arc<SelfMetrics>,
    discovery: JoinHandle<Probes>,
    discovery_cancel: CancellationToken,
    kube_watcher: Option<JoinHandle<()>>,
    capture: JoinHandle<Result<(), CaptureError>>,
    capture_cancel: CancellationToken,
    spans: JoinHandle<()>,
    exporters: Exporters,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AgentError> {
    // Privileges and BTF first: without them nothing else is worth starting (and the one
    // line that says so is all the user sees).
    loader::preflight(matches!(
        config.ebpf.context_propagation,
        ContextPropagation::Tcp | ContextPropagation::All
    ))?;
    let metrics = Arc::new(SelfMetrics::default());
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    // Exporters first: a setting they refuse (or a port they cannot bind) fails the start
    // before any program is attached.
    let (sink, exporters) = Exporters::start(
        ExportSettings::from_config(&config),
        Arc::clone(&metrics),
        ready_rx,
        CancellationToken::new(),
    )
    .await?;
    // Then Kubernetes metadata (`enable: true` without an API server fails here).
    let discovery_cancel = CancellationToken::new();
    let (scanner, kube_watcher) = match scanner(&config, &discovery_cancel).await {
        Ok(s) => s,
        Err(e) => {
            exporters.shutdown().await;
            return Err(e);
        }
    };
    let loaded = match loader::load(&load_settings(&config)) {
        Ok(loaded) => loaded,
        Err(e) => {
            discovery_cancel.cancel();
            exporters.shutdown().await;
            return Err(e.into());
        }
    };
    let (path, attached) = (loaded.probes.path, loaded.probes.attached);
    metrics.set_probes_attached(attached);
    metrics.set_capture_path(path.as_str());
    for r in &loaded.probes.refused {
        tracing::info!(
            path = r.path.as_str(),
            reason = r.reason.as_str(),
            detail = %r.detail,
            "Capture path refused."
        );
    }
    metrics.set_capture_path_refused(
        loaded
            .probes
            .refused
            .iter()
            .map(|r| (r.path.as_str(), r.reason.as_str()))
            .collect(),
    );
    tracing::info!(
        path = path.as_str(),
        programs = attached,
        buffer_size = config.ebpf.buffer_size,
        "Capture attached."
    );
    crate::capture::privileges::drop_and_log();
    let (first_pass_tx, first_pass_rx) = oneshot::channel();
    let running = start(
        &config,
        loaded,
        metrics,
        (sink, exporters),
        (scanner, kube_watcher, discovery_cancel),
        first_pass_tx,
    );
    wait_for_signal(first_pass_rx, &ready_tx, &running.metrics).await?;
    stop(running).await
}

/// Spawns every stage after the exporters, from span assembly back to discovery (consumers
/// before producers).
fn start(
    config: &Config,
    loaded: Loaded,
    metrics: Arc<SelfMetrics>,
    (sink, exporters): (SpanSink, Exporters),
    (scanner, kube_watcher, discovery_cancel): (Scanner, Option<JoinHandle<()>>, CancellationToken),
    first_pass: oneshot::Sender<()>,
) -> Running {
    let (exchange_tx, exchange_rx) = mpsc::channel(EXCHANGE_QUEUE);
    let (exec_tx, exec_rx) = mpsc::channel(CONTROL_QUEUE);
    let (capture_ctl_tx, capture_ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (span_ctl_tx, span_ctl_rx) = mpsc::channel(CONTROL_QUEUE);

    let spans = SpanStage::new(
        Assembler::new(WallClock::measure(), config.routes.clone()),
        Linker::new(IdGenerator::from_entropy(), Sampler::new(config.sampler)),
        exchange_rx,
        span_ctl_rx,
        Arc::clone(&metrics),
    );
    let spans = tokio::spawn(spans.run(move |span| sink.send(span)));

    let capture_cancel = CancellationToken::new();
    let capture = CaptureStage::new(
        (loaded.ring, loaded.counters),
        ConnTracker::new(
            config.ebpf.max_connections as usize,
            ParserLimits::default(),
        ),
        (exchange_tx, exec_tx),
        capture_ctl_rx,
        Arc::clone(&metrics),
        StageSettings {
            poll_interval: RING_POLL_INTERVAL,
            idle_timeout: CONNECTION_IDLE_TIMEOUT,
        },
    );
    let capture = tokio::spawn(capture.run(capture_cancel.clone()));

    let discovery = tokio::spawn(discovery::run(
        scanner,
        DiscoveryOutputs {
            probes: loaded.probes,
            tls: Some(TlsProbes::default()),
            procfs: ProcFs::host(),
            pids: loaded.pids,
            spans: span_ctl_tx,
            capture: capture_ctl_tx,
            metrics: Arc::clone(&metrics),
        },
        exec_rx,
        first_pass,
        discovery_cancel.clone(),
    ));
    Running {
        metrics,
        discovery,
        discovery_cancel,
        kube_watcher,
        capture,
        capture_cancel,
        spans,
        exporters,
    }
}

/// Reports readiness after the first discovery pass; returns on SIGINT or SIGTERM.
async fn wait_for_signal(
    first_pass: oneshot::Receiver<()>,
    ready: &watch::Sender<bool>,
    metrics: &SelfMetrics,
) -> Result<(), AgentError> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signals)?;
    let mut first_pass = std::pin::pin!(first_pass);
    let mut is_ready = false;
    loop {
        tokio::select! {
            _ = &mut first_pass, if !is_ready => {
                is_ready = true;
                ready.send_replace(true);
                tracing::info!(
                    processes = metrics.instrumented_processes(),
                    "Agent ready: probes attached and first discovery pass done."
                );
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}

/// Stops the stages in pipeline order, so that everything captured is handled and flushed
/// before the probes are detached.
async fn stop(running: Running) -> Result<(), AgentError> {
    let stage = |stage: &'static str| move |source| AgentError::Stage { stage, source };
    tracing::info!("Shutting down: stopping capture, flushing exporters.");
    running.discovery_cancel.cancel();
    let probes = running.discovery.await.map_err(stage("discovery"))?;
    if let Some(watcher) = running.kube_watcher {
        watcher.await.map_err(stage("kubernetes metadata"))?;
    }
    running.capture_cancel.cancel();
    let captured = running.capture.await.map_err(stage("capture"))?;
    running.spans.await.map_err(stage("span"))?;
    running.exporters.shutdown().await;
    // Dropping the probes detaches every program and frees the maps.
    drop(probes);
    captured?;
    let metrics = &running.metrics;
    tracing::info!(
        events = metrics.events_read(),
        lost = metrics.events_lost(),
        spans = metrics.spans_produced(),
        "Stopped."
    );
    Ok(())
}
