//! Self-metrics of the exporters: one [`ExportStats`] per exporter and signal.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
};

use super::{DropReason, SelfMetrics};

/// Upper bounds (seconds) of the export request latency histogram.
pub const EXPORT_DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Who consumes spans or metrics (label `exporter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exporter {
    /// The stdout span printer (`trace_printer`).
    Printer,
    /// OTLP over gRPC.
    OtlpGrpc,
    /// OTLP over HTTP/protobuf.
    OtlpHttp,
    /// The RED metrics aggregator (consumes spans, feeds OTLP metrics and Prometheus).
    Metrics,
}

impl Exporter {
    /// Every exporter, in label order.
    pub const ALL: [Self; 4] = [Self::Printer, Self::OtlpGrpc, Self::OtlpHttp, Self::Metrics];

    /// The `exporter` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Printer => "printer",
            Self::OtlpGrpc => "otlp_grpc",
            Self::OtlpHttp => "otlp_http",
            Self::Metrics => "metrics",
        }
    }
}

/// Which telemetry signal an exporter carries (label `signal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
}

impl Signal {
    /// Every signal, in label order.
    pub const ALL: [Self; 2] = [Self::Traces, Self::Metrics];

    /// The `signal` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Metrics => "metrics",
        }
    }
}

/// Counters and gauges of one exporter for one signal; lock-free.
///
/// Only exporters that were started ([`ExportStats::activate`]) are rendered, so an agent without
/// OTLP metrics shows no zero series for it.
#[derive(Debug, Default)]
pub struct ExportStats {
    active: AtomicBool,
    exported: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    queue_length: AtomicI64,
    duration_buckets: [AtomicU64; EXPORT_DURATION_BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
}

impl ExportStats {
    /// Marks the exporter as running, so that its series are rendered.
    pub fn activate(&self) {
        self.active.store(true, Ordering::Relaxed);
    }

    /// Counts items (spans or data points) the receiver accepted.
    pub fn add_exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one failed export attempt.
    pub fn inc_errors(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one retried export attempt.
    pub fn inc_retries(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts items the receiver rejected (`partial_success`).
    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts dropped items.
    pub fn add_dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the number of items waiting in the exporter's queue.
    pub fn set_queue_length(&self, n: usize) {
        self.queue_length
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Records the latency of one export request.
    pub fn observe_duration(&self, duration: std::time::Duration) {
        let secs = duration.as_secs_f64();
        let bucket = EXPORT_DURATION_BUCKETS.partition_point(|b| *b < secs);
        self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// True once the exporter has started.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Items accepted so far.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Failed attempts so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Retried attempts so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Items rejected by the receiver so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Items dropped for a reason so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Items waiting now.
    pub fn queue_length(&self) -> i64 {
        self.queue_length.load(Ordering::Relaxed)
    }

    /// A consistent-enough copy for rendering.
    pub fn snapshot(&self) -> ExportStatsSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .duration_buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Ordering::Relaxed);
                cumulative
            })
            .collect::<Vec<_>>();
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of latencies, far below 2^52 ns"
        )]
        let sum = self.duration_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        ExportStatsSnapshot {
            exported: self.exported(),
            errors: self.errors(),
            retries: self.retries(),
            rejected: self.rejected(),
            dropped: DropReason::ALL.map(|r| self.dropped(r)),
            queue_length: self.queue_length(),
            duration: HistogramSnapshot {
                bounds: EXPORT_DURATION_BUCKETS.to_vec(),
                count: buckets.last().copied().unwrap_or(0),
                cumulative_counts: buckets,
                sum,
            },
        }
    }
}

/// An owned reference to the [`ExportStats`] of one exporter and signal.
#[derive(Clone, Debug)]
pub struct ExportHandle {
    metrics: Arc<SelfMetrics>,
    exporter: Exporter,
    signal: Signal,
}

impl ExportHandle {
    /// The stats of `exporter` for `signal` in `metrics`.
    pub fn new(metrics: Arc<SelfMetrics>, exporter: Exporter, signal: Signal) -> Self {
        Self {
            metrics,
            exporter,
            signal,
        }
    }

    /// The exporter label.
    pub fn exporter(&self) -> Exporter {
        self.exporter
    }

    /// The signal label.
    pub fn signal(&self) -> Signal {
        self.signal
    }
}

impl Deref for ExportHandle {
    type Target = ExportStats;

    fn deref(&self) -> &ExportStats {
        self.metrics.export(self.exporter, self.signal)
    }
}

/// A copy of [`ExportStats`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExportStatsSnapshot {
    /// Items accepted.
    pub exported: u64,
    /// Failed attempts.
    pub errors: u64,
    /// Retried attempts.
    pub retries: u64,
    /// Items rejected by the receiver.
    pub rejected: u64,
    /// Items dropped, indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Items waiting.
    pub queue_length: i64,
    /// Request latency.
    pub duration: HistogramSnapshot,
}

/// A histogram in Prometheus form: cumulative counts per upper bound, the last one `+Inf`.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, without `+Inf`.
    pub bounds: Vec<f64>,
    /// Cumulative counts, one per bound plus the `+Inf` bucket.
    pub cumulative_counts: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn duration_histogram_is_cumulative_with_inclusive_bounds() {
        let stats = ExportStats::default();
        stats.observe_duration(Duration::from_millis(5));
        stats.observe_duration(Duration::from_millis(7));
        stats.observe_duration(Duration::from_mins(1));
        let snap = stats.snapshot().duration;
        assert_eq!(snap.cumulative_counts[0], 1, "5 ms lands in le=0.005");
        assert_eq!(snap.cumulative_counts[1], 2);
        assert_eq!(snap.cumulative_counts[EXPORT_DURATION_BUCKETS.len() - 1], 2);
        assert_eq!(snap.cumulative_counts[EXPORT_DURATION_BUCKETS.len()], 3);
        assert_eq!(snap.count, 3);
        assert!((snap.sum - 60.012).abs() < 1e-9);
    }
}
