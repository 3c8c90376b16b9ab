//! Internal events of the exporters: each `emit` counts and logs.

use crate::{
    export::ExportError,
    telemetry::{DropReason, ExportHandle},
};

/// True for 1, 2, 4, 8, ...: repeated events log at these counts only.
fn log_now(total: u64, added: u64) -> bool {
    // Log when this addition crossed a power of two.
    let before = total.saturating_sub(added);
    added > 0 && (before == 0 || (before.ilog2() != total.ilog2()))
}

/// A span sink channel was full: the consumer was too slow and the spans were dropped.
pub(crate) struct ChannelFull<'a> {
    pub(crate) stats: &'a ExportHandle,
}

impl ChannelFull<'_> {
    pub(crate) fn emit(self) {
        self.stats.add_dropped(DropReason::ExportQueueFull, 1);
        let total = self.stats.dropped(DropReason::ExportQueueFull);
        if log_now(total, 1) {
            tracing::warn!(
                exporter = self.stats.exporter().as_str(),
                total,
                "Span channel full, dropping spans."
            );
        }
    }
}

/// The exporter's queue hit its memory cap and dropped its oldest items.
pub(crate) struct QueueEvicted<'a> {
    pub(crate) stats: &'a ExportHandle,
    pub(crate) items: u64,
}

impl QueueEvicted<'_> {
    pub(crate) fn emit(self) {
        self.stats
            .add_dropped(DropReason::ExportMemoryCap, self.items);
        let total = self.stats.dropped(DropReason::ExportMemoryCap);
        if log_now(total, self.items) {
            tracing::warn!(
                exporter = self.stats.exporter().as_str(),
                signal = self.stats.signal().as_str(),
                total,
                "Export queue at its memory cap, dropping the oldest items."
            );
        }
    }
}

/// A batch failed for good (permanent error, or retries exhausted).
pub(crate) struct ExportGaveUp<'a> {
    pub(crate) stats: &'a ExportHandle,
    pub(crate) items: u64,
    pub(crate) error: &'a ExportError,
}

impl ExportGaveUp<'_> {
    pub(crate) fn emit(self) {
        self.stats.add_dropped(DropReason::ExportFailed, self.items);
        tracing::warn!(
            exporter = self.stats.exporter().as_str(),
            signal = self.stats.signal().as_str(),
            items = self.items,
            error = %self.error,
            retryable = self.error.is_retryable(),
            "Export failed, dropping the batch."
        );
    }
}

/// The receiver accepted a batch but rejected some of its items.
pub(crate) struct PartialSuccess<'a> {
    pub(crate) stats: &'a ExportHandle,
    pub(crate) rejected: u64,
    pub(crate) message: &'a str,
}

impl PartialSuccess<'_> {
    pub(crate) fn emit(self) {
        self.stats.add_rejected(self.rejected);
        tracing::warn!(
            exporter = self.stats.exporter().as_str(),
            signal = self.stats.signal().as_str(),
            rejected = self.rejected,
            message = self.message,
            "Receiver rejected part of a batch."
        );
    }
}

/// Shutdown ran out of time with items still queued or in flight.
pub(crate) struct ShutdownDropped<'a> {
    pub(crate) stats: &'a ExportHandle,
    pub(crate) items: u64,
    pub(crate) requests: usize,
}

impl ShutdownDropped<'_> {
    pub(crate) fn emit(self) {
        self.stats.add_dropped(DropReason::ExportFailed, self.items);
        tracing::warn!(
            exporter = self.stats.exporter().as_str(),
            signal = self.stats.signal().as_str(),
            queued = self.items,
            aborted_requests = self.requests,
            "Shutdown timeout reached, dropping what was not exported."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::log_now;

    #[test]
    fn logs_at_powers_of_two() {
        let logged: Vec<u64> = (1..=100).filter(|t| log_now(*t, 1)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
        assert!(log_now(10, 10));
        assert!(!log_now(12, 2));
    }
}
