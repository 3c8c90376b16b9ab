//! OTLP exporter, generic over the signal ([`Traces`], [`Metrics`]).
//!
//! Items arrive on a bounded channel and go into a byte-capped queue (oldest dropped when
//! full, counted); batches leave when `max_items` are queued or the schedule delay ticks, through
//! a tower stack (concurrency limit, retry with backoff, per-attempt timeout) to a gRPC or
//! HTTP/protobuf transport. A receiver outage therefore costs at most the queue cap in memory
//! and never blocks whoever feeds the channel. On cancellation the exporter drains the channel
//! and the queue within the shutdown timeout, cutting retries short at that deadline.

pub mod config;
pub mod encode;
mod queue;
pub mod retry;
pub mod service;
#[cfg(test)]
mod tests;
mod tls;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tower::{Service as _, ServiceExt as _};

pub use self::{
    config::{BatchSettings, Compression, OtlpSettings, Protocol, RetrySettings, ValidSettings},
    service::{Metrics, OtlpSignal, Traces},
};
use self::{
    queue::Queue,
    retry::Deadline,
    service::{ExportRequest, ExportResponse, Stack},
};
use crate::{
    export::{ExportError, events},
    telemetry::{ExportHandle, Exporter, SelfMetrics},
};

/// Items read from the channel per wake-up.
const RECV_CHUNK: usize = 512;

/// One running OTLP exporter for signal `S`.
pub struct OtlpExporter<S: OtlpSignal> {
    stack: Stack<S>,
    queue: Queue<S::Item>,
    batch: BatchSettings,
    stats: ExportHandle,
    deadline: Deadline,
    in_flight_items: u64,
    flush_when_idle: bool,
}

/// The outcome of one batch, reported by its task.
struct Done {
    result: Result<ExportResponse, ExportError>,
    items: u64,
    bytes: usize,
}

impl<S: OtlpSignal> OtlpExporter<S> {
    /// Builds the exporter (nothing connects yet).
    pub fn new(
        settings: &ValidSettings,
        self_metrics: Arc<SelfMetrics>,
    ) -> Result<Self, ExportError> {
        let exporter = match settings.protocol() {
            Protocol::Grpc => Exporter::OtlpGrpc,
            Protocol::HttpProtobuf => Exporter::OtlpHttp,
        };
        let stats = ExportHandle::new(self_metrics, exporter, S::SIGNAL);
        let deadline = Deadline::default();
        Ok(Self {
            stack: service::stack::<S>(settings, stats.clone(), Arc::clone(&deadline))?,
            queue: Queue::new(
                settings.batch.max_queue_bytes,
                settings.batch.max_queue_items,
            ),
            batch: settings.batch.clone(),
            stats,
            deadline,
            in_flight_items: 0,
            flush_when_idle: false,
        })
    }

    /// Sends what is queued as soon as the channel is empty instead of waiting for a full batch
    /// or the schedule delay (for metrics, which arrive in one burst per collection).
    #[must_use]
    pub fn flush_when_idle(mut self) -> Self {
        self.flush_when_idle = true;
        self
    }

    /// The `exporter` label of this exporter.
    pub fn exporter(&self) -> Exporter {
        self.stats.exporter()
    }

    /// Exports until `cancel` fires, then drains the channel and the queue for at most
    /// `shutdown_timeout` and returns. Also returns (after draining) when the channel closes.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<S::Item>,
        cancel: CancellationToken,
        shutdown_timeout: Duration,
    ) {
        self.stats.activate();
        let mut in_flight: JoinSet<Done> = JoinSet::new();
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.batch.timeout,
            self.batch.timeout,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush_due = false;
        let mut buf = Vec::with_capacity(RECV_CHUNK);
        loop {
            let send =
                !self.queue.is_empty() && (flush_due || self.queue.len() >= self.batch.max_items);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    self.finish(done);
                }
                ready = self.stack.ready(), if send => {
                    if ready.is_ok() {
                        self.send_batch(&mut in_flight);
                    }
                    if self.queue.is_empty() {
                        flush_due = false;
                    }
                }
                n = rx.recv_many(&mut buf, RECV_CHUNK) => {
                    if n == 0 {
                        break;
                    }
                    for item in buf.drain(..) {
                        self.enqueue(item);
                    }
                    if self.flush_when_idle && rx.is_empty() {
                        flush_due = true;
                    }
                }
                _ = ticker.tick() => flush_due = true,
            }
            self.stats.set_queue_length(self.queue.len());
        }
        rx.close();
        while let Ok(item) = rx.try_recv() {
            self.enqueue(item);
        }
        self.drain(in_flight, shutdown_timeout).await;
    }

    async fn drain(&mut self, mut in_flight: JoinSet<Done>, shutdown_timeout: Duration) {
        let _ = self.deadline.set(Instant::now() + shutdown_timeout);
        let flushed = tokio::time::timeout(shutdown_timeout, async {
            while !self.queue.is_empty() || !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                        self.finish(done);
                    }
                    ready = self.stack.ready(), if !self.queue.is_empty() => {
                        if ready.is_ok() {
                            self.send_batch(&mut in_flight);
                        }
                    }
                }
                self.stats.set_queue_length(self.queue.len());
            }
        })
        .await;
        if flushed.is_err() {
            let left: u64 = self.queue.drain_all().iter().map(S::item_count).sum();
            in_flight.abort_all();
            let mut aborted = 0;
            while let Some(done) = in_flight.join_next().await {
                if done.is_err() {
                    aborted += 1;
                }
                self.finish(done);
            }
            events::ShutdownDropped {
                stats: &self.stats,
                items: left + std::mem::take(&mut self.in_flight_items),
                requests: aborted,
            }
            .emit();
        }
        self.stats.set_queue_length(0);
    }

    fn enqueue(&mut self, item: S::Item) {
        let bytes = S::item_bytes(&item);
        let evicted = self.queue.push(item, bytes);
        if !evicted.is_empty() {
            events::QueueEvicted {
                stats: &self.stats,
                items: evicted.iter().map(S::item_count).sum(),
            }
            .emit();
        }
    }

    fn send_batch(&mut self, in_flight: &mut JoinSet<Done>) {
        let batch = self.queue.take(self.batch.max_items);
        let items = batch.items.iter().map(S::item_count).sum();
        let request = ExportRequest::<S> {
            payload: Arc::new(S::encode(&batch.items)),
            items,
            retries: 0,
            first_attempt: Instant::now(),
        };
        drop(batch.items);
        self.in_flight_items += items;
        let future = self.stack.call(request);
        let bytes = batch.bytes;
        in_flight.spawn(async move {
            Done {
                result: future.await,
                items,
                bytes,
            }
        });
    }

    fn finish(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let Ok(done) = done else {
            // An aborted or panicked export task: its bytes stay counted (only making the cap
            // tighter) and its items stay in `in_flight_items` for the shutdown count.
            return;
        };
        self.queue.release(done.bytes);
        self.in_flight_items -= done.items;
        match done.result {
            Ok(response) => {
                let rejected = response.rejected.min(done.items);
                self.stats.add_exported(done.items - rejected);
                if rejected > 0 {
                    events::PartialSuccess {
                        stats: &self.stats,
                        rejected,
                        message: &response.message,
                    }
                    .emit();
                }
            }
            Err(error) => events::ExportGaveUp {
                stats: &self.stats,
                items: done.items,
                error: &error,
            }
            .emit(),
        }
    }
}
