//! The agent's own counters and gauges (self-observability).
//!
//! Every stage bumps the counters it owns here; the Prometheus endpoint renders them under the
//! names in [`names`]. Counters are lock-free atomics so hot paths pay one relaxed add.

mod export;
mod process;

use std::sync::{
    OnceLock,
    atomic::{AtomicI64, AtomicU64, Ordering},
};

pub use export::{
    EXPORT_DURATION_BUCKETS, ExportHandle, ExportStats, ExportStatsSnapshot, Exporter,
    HistogramSnapshot, Signal,
};
pub use process::ProcessStats;

/// Prometheus names of the self-metrics (the contract in the README's reference section).
pub mod names {
    /// Ring-buffer records read by the capture stage.
    pub const EVENTS_READ: &str = "mop_events_read_total";
    /// Records the kernel could not write (ring buffer full) or programs it skipped
    /// (recursion misses).
    pub const EVENTS_LOST: &str = "mop_events_lost_total";
    /// Protocol parse errors, label `protocol`.
    pub const PARSE_ERRORS: &str = "mop_parse_errors_total";
    /// Spans assembled.
    pub const SPANS_PRODUCED: &str = "mop_spans_produced_total";
    /// Spans exported, label `exporter`.
    pub const SPANS_EXPORTED: &str = "mop_spans_exported_total";
    /// Spans dropped, label `reason`.
    pub const SPANS_DROPPED: &str = "mop_spans_dropped_total";
    /// Export errors, labels `exporter`, `signal`.
    pub const EXPORT_ERRORS: &str = "mop_export_errors_total";
    /// Export request latency histogram, label `exporter`.
    pub const EXPORT_DURATION: &str = "mop_export_duration_seconds";
    /// Items waiting in an exporter's queue, label `exporter`.
    pub const EXPORT_QUEUE_LENGTH: &str = "mop_export_queue_length";
    /// Processes currently instrumented.
    pub const INSTRUMENTED_PROCESSES: &str = "mop_instrumented_processes";
    /// eBPF programs attached.
    pub const PROBES_ATTACHED: &str = "mop_probes_attached";
    /// Always 1, label `path`: the capture path in use.
    pub const CAPTURE_PATH_INFO: &str = "mop_capture_path_info";
    /// Always 1, labels `path`, `reason`: a better capture path `auto` tried and refused.
    pub const CAPTURE_PATH_REFUSED: &str = "mop_capture_path_refused";
    /// Always 1, label `version`.
    pub const BUILD_INFO: &str = "mop_build_info";
    /// Connections the userspace tracker holds.
    pub const CONNECTIONS_TRACKED: &str = "mop_connections_tracked";
    /// Metric data points dropped, labels `exporter`, `reason`.
    pub const METRIC_POINTS_DROPPED: &str = "mop_metric_points_dropped_total";
    /// Metric data points exported, label `exporter`.
    pub const METRIC_POINTS_EXPORTED: &str = "mop_metric_points_exported_total";
    /// Export attempts retried, labels `exporter`, `signal`.
    pub const EXPORT_RETRIES: &str = "mop_export_retries_total";
    /// Items a receiver answered as rejected (OTLP `partial_success`), labels `exporter`, `signal`.
    pub const EXPORT_REJECTED: &str = "mop_export_rejected_total";
    /// Spans recorded into a metrics overflow series because a service hit its series cap.
    pub const METRIC_SERIES_OVERFLOW: &str = "mop_metric_series_overflow_total";
    /// Metric series the RED aggregator holds.
    pub const METRIC_SERIES: &str = "mop_metric_series";
    /// TLS library files with probes attached.
    pub const TLS_LIBRARIES: &str = "mop_tls_libraries_attached";
    /// Syscalls of a connection the kernel never reported, found from TCP stream positions.
    pub const STREAM_GAPS: &str = "mop_stream_gaps_total";
    /// Exec reports the capture stage could not hand to discovery (its queue was full).
    pub const EXEC_REPORTS_DROPPED: &str = "mop_exec_reports_dropped_total";
}

/// Why a span (or the exchange that would have become one) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The channel from the capture stage to span assembly was full.
    AssemblyQueueFull,
    /// The channel to an exporter was full.
    ExportQueueFull,
    /// Dropped by the sampler.
    Sampled,
    /// An exporter gave up on it (retries exhausted, a permanent error, or shutdown).
    ExportFailed,
    /// An exporter's queue reached its memory cap and the oldest items were evicted.
    ExportMemoryCap,
    /// Its process was never confirmed by discovery in time.
    UnknownProcess,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 6] = [
        Self::AssemblyQueueFull,
        Self::ExportQueueFull,
        Self::Sampled,
        Self::ExportFailed,
        Self::ExportMemoryCap,
        Self::UnknownProcess,
    ];

    /// The `reason` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AssemblyQueueFull => "assembly_queue_full",
            Self::ExportQueueFull => "export_queue_full",
            Self::Sampled => "sampled_out",
            Self::ExportFailed => "export_failed",
            Self::ExportMemoryCap => "export_memory_cap",
            Self::UnknownProcess => "unknown_process",
        }
    }
}

/// Protocols whose parse errors are counted apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 frames and HPACK.
    Http2,
}

impl Protocol {
    /// Every protocol, in label order.
    pub const ALL: [Self; 2] = [Self::Http1, Self::Http2];

    /// The `protocol` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }
}

/// The agent's self-metrics; one instance shared by every stage.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    events_read: AtomicU64,
    events_lost: AtomicU64,
    parse_errors: [AtomicU64; Protocol::ALL.len()],
    spans_produced: AtomicU64,
    spans_dropped: [AtomicU64; DropReason::ALL.len()],
    instrumented_processes: AtomicI64,
    probes_attached: AtomicI64,
    connections_tracked: AtomicI64,
    tls_libraries: AtomicI64,
    stream_gaps: AtomicU64,
    exec_reports_dropped: AtomicU64,
    tls_programs: AtomicI64,
    capture_path: OnceLock<&'static str>,
    capture_path_refused: OnceLock<Vec<(&'static str, &'static str)>>,
    metric_series_overflow: AtomicU64,
    metric_series: AtomicI64,
    exports: [[ExportStats; Signal::ALL.len()]; Exporter::ALL.len()],
}

impl SelfMetrics {
    /// Counts ring-buffer records read.
    pub fn add_events_read(&self, n: u64) {
        self.events_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the kernel's lost-record count (a counter kept by the kernel, mirrored here).
    pub fn set_events_lost(&self, total: u64) {
        self.events_lost.store(total, Ordering::Relaxed);
    }

    /// Counts parse errors of a protocol.
    pub fn add_parse_errors(&self, protocol: Protocol, n: u64) {
        self.parse_errors[protocol as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one assembled span.
    pub fn inc_spans_produced(&self) {
        self.spans_produced.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts dropped spans that no exporter is to blame for (assembly queue, sampler).
    ///
    /// Exporters count their drops on [`SelfMetrics::export`] so that they carry the exporter.
    pub fn add_spans_dropped(&self, reason: DropReason, n: u64) {
        self.spans_dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of one exporter and signal.
    pub fn export(&self, exporter: Exporter, signal: Signal) -> &ExportStats {
        &self.exports[exporter as usize][signal as usize]
    }

    /// Counts spans recorded into a metrics overflow series.
    pub fn add_metric_series_overflow(&self, n: u64) {
        self.metric_series_overflow.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the number of metric series the RED aggregator holds.
    pub fn set_metric_series(&self, n: usize) {
        self.metric_series
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Spans recorded into a metrics overflow series so far.
    pub fn metric_series_overflow(&self) -> u64 {
        self.metric_series_overflow.load(Ordering::Relaxed)
    }

    /// Metric series held now.
    pub fn metric_series(&self) -> i64 {
        self.metric_series.load(Ordering::Relaxed)
    }

    /// Sets the number of instrumented processes.
    pub fn set_instrumented_processes(&self, n: usize) {
        self.instrumented_processes
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Sets the number of attached programs.
    pub fn set_probes_attached(&self, n: usize) {
        self.probes_attached
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Sets the number of connections the tracker holds.
    pub fn set_connections_tracked(&self, n: usize) {
        self.connections_tracked
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Counts records the kernel never reported (stream gaps).
    pub fn add_stream_gaps(&self, n: u64) {
        self.stream_gaps.fetch_add(n, Ordering::Relaxed);
    }

    /// Stream gaps so far.
    pub fn stream_gaps(&self) -> u64 {
        self.stream_gaps.load(Ordering::Relaxed)
    }

    /// Counts one exec report dropped on the way to discovery.
    pub fn inc_exec_reports_dropped(&self) {
        self.exec_reports_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Exec reports dropped so far.
    pub fn exec_reports_dropped(&self) -> u64 {
        self.exec_reports_dropped.load(Ordering::Relaxed)
    }

    /// Sets the TLS library files probed and the programs attached to them.
    pub fn set_tls_libraries(&self, libraries: usize, programs: usize) {
        self.tls_libraries.store(
            i64::try_from(libraries).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.tls_programs.store(
            i64::try_from(programs).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    /// TLS library files probed now.
    pub fn tls_libraries(&self) -> i64 {
        self.tls_libraries.load(Ordering::Relaxed)
    }

    /// Programs attached to TLS libraries now (part of the probes attached).
    pub fn tls_programs(&self) -> i64 {
        self.tls_programs.load(Ordering::Relaxed)
    }

    /// Records the capture path once it is attached.
    pub fn set_capture_path(&self, path: &'static str) {
        let _ = self.capture_path.set(path);
    }

    /// Records the better capture paths that were refused, as `(path, reason)`, once.
    pub fn set_capture_path_refused(&self, refused: Vec<(&'static str, &'static str)>) {
        let _ = self.capture_path_refused.set(refused);
    }

    /// The capture paths refused before the one in use, as `(path, reason)`.
    pub fn capture_path_refused(&self) -> &[(&'static str, &'static str)] {
        self.capture_path_refused.get().map_or(&[], Vec::as_slice)
    }

    /// Ring-buffer records read so far.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    /// Records lost in the kernel so far.
    pub fn events_lost(&self) -> u64 {
        self.events_lost.load(Ordering::Relaxed)
    }

    /// Parse errors of a protocol so far.
    pub fn parse_errors(&self, protocol: Protocol) -> u64 {
        self.parse_errors[protocol as usize].load(Ordering::Relaxed)
    }

    /// Spans assembled so far.
    pub fn spans_produced(&self) -> u64 {
        self.spans_produced.load(Ordering::Relaxed)
    }

    /// Spans dropped for a reason so far, outside the exporters (see [`Self::spans_dropped`]).
    pub fn spans_dropped_unattributed(&self, reason: DropReason) -> u64 {
        self.spans_dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Spans dropped for a reason so far, everywhere (exporters included).
    pub fn spans_dropped(&self, reason: DropReason) -> u64 {
        let by_exporters: u64 = Exporter::ALL
            .iter()
            .map(|e| self.export(*e, Signal::Traces).dropped(reason))
            .sum();
        self.spans_dropped_unattributed(reason) + by_exporters
    }

    /// Processes instrumented now.
    pub fn instrumented_processes(&self) -> i64 {
        self.instrumented_processes.load(Ordering::Relaxed)
    }

    /// Programs attached now (the capture path's and the TLS probes).
    pub fn probes_attached(&self) -> i64 {
        self.probes_attached.load(Ordering::Relaxed) + self.tls_programs()
    }

    /// Connections tracked now.
    pub fn connections_tracked(&self) -> i64 {
        self.connections_tracked.load(Ordering::Relaxed)
    }

    /// The capture path in use, once attached.
    pub fn capture_path(&self) -> Option<&'static str> {
        self.capture_path.get().copied()
    }
}

/// Sends the agent's logs to stderr at `level`; plain text unless stderr is a terminal.
pub fn init_logging(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_target(false)
        .init();
}
