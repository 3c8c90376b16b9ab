//! The capture stage task: reads the ring buffer, feeds the connection tracker, and hands
//! exchanges to span assembly without ever waiting (the kernel cannot wait for us).

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use mop_common::{Counter, EventKind};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{
    CaptureError, KernelCounters,
    conntrack::{ConnTracker, Observed},
    event::RawEvent,
};
use crate::telemetry::{DropReason, Protocol, SelfMetrics};

/// Records handled per wake-up before the task yields to others.
const DRAIN_BUDGET: usize = 16_384;

/// How long a gRPC call that its client reset waits for its server's status (grpcio's server
/// answers `DEADLINE_EXCEEDED` right after the client's reset) before its span goes out without
/// one. Checked once a second, so the span comes 0.5 to 1.5 s after the reset.
const RESET_STATUS_WAIT: Duration = Duration::from_millis(500);

/// Messages from discovery to the capture stage.
#[derive(Clone, Copy, Debug)]
pub enum CaptureControl {
    /// The process exited: free its connections.
    ProcessExited(u32),
}

/// A process called `execve` (the kernel already captures it while discovery decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecReport {
    /// The process.
    pub pid: u32,
    /// The path it exec'd, as the kernel saw it (relative paths stay relative); used when the
    /// process is gone before discovery reads `/proc`.
    pub path: String,
}

/// Settings of the capture task.
#[derive(Clone, Copy, Debug)]
pub struct StageSettings {
    /// How often the ring buffer is polled when the kernel did not wake us.
    pub poll_interval: Duration,
    /// Connections silent for this long are dropped from the tracker.
    pub idle_timeout: Duration,
}

/// The capture task's state.
pub struct CaptureStage {
    ring: RingBuf<MapData>,
    counters: KernelCounters,
    tracker: ConnTracker,
    exchanges: mpsc::Sender<Observed>,
    execs: mpsc::Sender<ExecReport>,
    control: mpsc::Receiver<CaptureControl>,
    metrics: Arc<SelfMetrics>,
    settings: StageSettings,
}

/// What the drain loop needs besides the ring.
struct Sink<'a> {
    tracker: &'a mut ConnTracker,
    exchanges: &'a mpsc::Sender<Observed>,
    execs: &'a mpsc::Sender<ExecReport>,
    metrics: &'a SelfMetrics,
}

impl Sink<'_> {
    fn emit(exchanges: &mpsc::Sender<Observed>, metrics: &SelfMetrics, ex: Observed) {
        if exchanges.try_send(ex).is_err() {
            metrics.add_spans_dropped(DropReason::AssemblyQueueFull, 1);
        }
    }

    /// Handles up to [`DRAIN_BUDGET`] records; returns how many.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> usize {
        let mut n = 0;
        let mut bad = 0u64;
        while n < DRAIN_BUDGET {
            let Some(item) = ring.next() else { break };
            n += 1;
            match RawEvent::decode(&item) {
                Ok(ev) if ev.kind == EventKind::ProcExec => {
                    let report = ExecReport {
                        pid: ev.header.pid,
                        path: String::from_utf8_lossy(ev.head).into_owned(),
                    };
                    // Discovery's next pass decides about it instead (and reconciles the
                    // kernel's pid filter), so only the first requests of a program exec'd
                    // while discovery is behind can be missed.
                    if self.execs.try_send(report).is_err() {
                        self.metrics.inc_exec_reports_dropped();
                        tracing::debug!(
                            pid = ev.header.pid,
                            "Exec report dropped: discovery is behind."
                        );
                    }
                }
                Ok(ev) => {
                    let (exchanges, metrics) = (self.exchanges, self.metrics);
                    self.tracker
                        .on_event(&ev, &mut |ex| Self::emit(exchanges, metrics, ex));
                }
                Err(_) => bad += 1,
            }
        }
        if n > 0 {
            self.metrics.add_events_read(n as u64);
        }
        if bad > 0 {
            tracing::warn!(records = bad, "Dropped malformed ring-buffer records.");
        }
        n
    }
}

impl CaptureStage {
    /// Assembles the stage from what `loader::load` returned; exchanges go to span assembly,
    /// exec reports (pids) to discovery.
    pub fn new(
        loaded: (RingBuf<MapData>, KernelCounters),
        tracker: ConnTracker,
        outputs: (mpsc::Sender<Observed>, mpsc::Sender<ExecReport>),
        control: mpsc::Receiver<CaptureControl>,
        metrics: Arc<SelfMetrics>,
        settings: StageSettings,
    ) -> Self {
        let ((ring, counters), (exchanges, execs)) = (loaded, outputs);
        Self {
            ring,
            counters,
            tracker,
            exchanges,
            execs,
            control,
            metrics,
            settings,
        }
    }

    /// Runs until `cancel` fires, then drains what the kernel already wrote and returns.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), CaptureError> {
        let Self {
            ring,
            counters,
            mut tracker,
            exchanges,
            execs,
            mut control,
            metrics,
            settings,
        } = self;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
        // `AsyncFd` (which owns the ring) is dropped.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| CaptureError::Host(format!("cannot poll the ring buffer: {e}")))?;
        let mut tick = tokio::time::interval(settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let mut sink = Sink {
                tracker: &mut tracker,
                exchanges: &exchanges,
                execs: &execs,
                metrics: &metrics,
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    while sink.drain(ring.get_mut()) == DRAIN_BUDGET {}
                    break;
                }
                Some(msg) = control.recv() => match msg {
                    CaptureControl::ProcessExited(pid) => tracker.forget_pid(pid),
                },
                guard = ring.readable_mut() => {
                    let mut guard = guard
                        .map_err(|e| CaptureError::Host(format!("ring buffer poll failed: {e}")))?;
                    if sink.drain(guard.get_inner_mut()) < DRAIN_BUDGET {
                        guard.clear_ready();
                    }
                    tokio::task::yield_now().await;
                }
                _ = tick.tick() => {
                    sink.drain(ring.get_mut());
                }
                _ = housekeeping.tick() => {
                    let now = crate::span::clock::monotonic_ns();
                    tracker.expire_waits(
                        now.saturating_sub(RESET_STATUS_WAIT.as_nanos() as u64),
                        &mut |ex| Sink::emit(&exchanges, &metrics, ex),
                    );
                    let cutoff = now.saturating_sub(settings.idle_timeout.as_nanos() as u64);
                    tracker.expire_idle(cutoff, &mut |ex| Sink::emit(&exchanges, &metrics, ex));
                    publish(&mut tracker, &counters, &metrics);
                }
            }
        }
        publish(&mut tracker, &counters, &metrics);
        Ok(())
    }
}

/// Moves the tracker's and the kernel's counters into the self-metrics.
fn publish(tracker: &mut ConnTracker, counters: &KernelCounters, metrics: &SelfMetrics) {
    let stats = tracker.take_stats();
    metrics.add_parse_errors(Protocol::Http1, stats.errors.http1);
    metrics.add_parse_errors(Protocol::Http2, stats.errors.http2);
    metrics.add_stream_gaps(stats.stream_gaps);
    let recursion = super::sys::program_recursion_misses();
    metrics.set_events_lost(counters.read(Counter::RingbufFull) + recursion);
    metrics.set_connections_tracked(tracker.len());
}
