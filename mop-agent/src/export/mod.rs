//! Everything after span assembly: the fan-out to the consumers (span printer, OTLP traces,
//! RED metrics aggregation), the OTLP metrics push, and the Prometheus endpoint.
//!
//! [`Exporters::start`] spawns the consumers and returns the [`SpanSink`] that span assembly
//! feeds. The sink never waits: each consumer has its own bounded channel and a full channel
//! drops the span for that consumer only (counted per consumer as `export_queue_full`).
//! On cancellation every consumer drains and flushes within the shutdown timeout;
//! [`Exporters::shutdown`] waits for them.

mod error;
pub(crate) mod events;
mod from_config;
pub mod otlp;
pub mod printer;
pub mod prometheus;
#[doc(hidden)]
pub mod synthetic;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use error::ExportError;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use self::{
    otlp::{Metrics, OtlpExporter, OtlpSettings, Traces},
    printer::{PrinterFormat, SpanPrinter},
};
use crate::{
    metrics::{MetricsSettings, RedMetrics},
    span::model::Span,
    telemetry::{DropReason, ExportHandle, Exporter, SelfMetrics, Signal},
};

/// Default capacity of each consumer's span channel.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 8192;

/// Default time every consumer gets to flush at shutdown (`shutdown_timeout`).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// OTLP metrics push settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsPushSettings {
    /// The exporter (endpoint, protocol, retry, queue cap).
    pub otlp: OtlpSettings,
    /// Time between pushes (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).
    pub interval: Duration,
    /// Buckets, series cap and TTL of the pushed histograms.
    pub red: MetricsSettings,
}

impl MetricsPushSettings {
    /// `OTEL_METRIC_EXPORT_INTERVAL` default.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_mins(1);
}

/// Prometheus endpoint settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusSettings {
    /// Listen address (`0.0.0.0:<prometheus_export.port>` in production).
    pub addr: SocketAddr,
    /// Metrics path (`prometheus_export.path`, default `/metrics`).
    pub path: String,
    /// Buckets, series cap and TTL of the scraped histograms; `None` serves only the
    /// self-metrics (`metrics.features` without `application`).
    pub red: Option<MetricsSettings>,
}

/// What to start; `None` leaves a consumer out.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    /// `trace_printer` (`None` for `disabled`).
    pub printer: Option<PrinterFormat>,
    /// OTLP traces.
    pub traces: Option<OtlpSettings>,
    /// OTLP metrics.
    pub metrics: Option<MetricsPushSettings>,
    /// The Prometheus endpoint.
    pub prometheus: Option<PrometheusSettings>,
    /// Capacity of each consumer's channel.
    pub channel_capacity: usize,
    /// Time every consumer gets to flush at shutdown.
    pub shutdown_timeout: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            printer: None,
            traces: None,
            metrics: None,
            prometheus: None,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// Where span assembly sends finished spans. Cheap to clone; `send` never blocks.
#[derive(Clone, Debug)]
pub struct SpanSink {
    consumers: Arc<[Consumer]>,
}

/// One consumer's channel, its stats, and whether it takes trace spans or feeds metrics.
#[derive(Debug)]
struct Consumer {
    tx: mpsc::Sender<Arc<Span>>,
    stats: ExportHandle,
    metrics: bool,
}

impl Consumer {
    fn wants(&self, span: &Span) -> bool {
        if self.metrics {
            span.signals.metrics
        } else {
            span.signals.traces
        }
    }
}

impl SpanSink {
    /// Offers a span to every consumer of its signals (`Span::signals`: printers and OTLP
    /// traces take trace spans, the RED aggregators metric spans); a consumer whose channel is
    /// full (or closed) loses it, counted under its `exporter` label.
    pub fn send(&self, span: Arc<Span>) {
        let mut wanted = self.consumers.iter().filter(|c| c.wants(&span)).peekable();
        while let Some(consumer) = wanted.next() {
            if wanted.peek().is_none() {
                Self::offer(consumer, span);
                return;
            }
            Self::offer(consumer, Arc::clone(&span));
        }
    }

    fn offer(consumer: &Consumer, span: Arc<Span>) {
        let stats = &consumer.stats;
        match consumer.tx.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => events::ChannelFull { stats }.emit(),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats.add_dropped(DropReason::ExportFailed, 1);
            }
        }
    }

    /// Number of consumers.
    pub fn consumers(&self) -> usize {
        self.consumers.len()
    }
}

/// The running consumers.
#[derive(Debug)]
pub struct Exporters {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    cancel: CancellationToken,
    red: Vec<Arc<RedMetrics>>,
    prometheus_addr: Option<SocketAddr>,
}

impl Exporters {
    /// Validates the settings, binds the Prometheus port and spawns every configured consumer.
    ///
    /// `ready` turns `true` once every probe is attached and the first discovery pass is done
    /// (it drives `/readyz`). Cancelling `cancel` starts the shutdown.
    #[expect(clippy::too_many_lines, reason = "one linear wiring of every consumer")]
    pub async fn start(
        settings: ExportSettings,
        self_metrics: Arc<SelfMetrics>,
        ready: watch::Receiver<bool>,
        cancel: CancellationToken,
    ) -> Result<(SpanSink, Self), ExportError> {
        let shutdown = settings.shutdown_timeout;
        let capacity = settings.channel_capacity.max(1);
        let mut consumers = Vec::new();
        let mut tasks = Vec::new();
        // Build everything that can fail before spawning anything.
        let traces = settings
            .traces
            .as_ref()
            .map(|t| OtlpExporter::<Traces>::new(&t.validate()?, Arc::clone(&self_metrics)))
            .transpose()?;
        let mut metrics_push = settings
            .metrics
            .as_ref()
            .map(|m| {
                OtlpExporter::<Metrics>::new(&m.otlp.validate()?, Arc::clone(&self_metrics))
                    .map(|e| (e.flush_when_idle(), m.interval))
            })
            .transpose()?;
        // One aggregator when OTLP metrics and Prometheus use the same buckets and limits.
        let red_push = settings
            .metrics
            .as_ref()
            .map(|m| Arc::new(RedMetrics::new(m.red.clone(), Arc::clone(&self_metrics))));
        let red_scrape = settings
            .prometheus
            .as_ref()
            .and_then(|p| p.red.as_ref())
            .map(|r| match &red_push {
                Some(shared) if shared.settings() == r => Arc::clone(shared),
                _ => Arc::new(RedMetrics::new(r.clone(), Arc::clone(&self_metrics))),
            });
        let listener = match &settings.prometheus {
            Some(p) => Some(prometheus::bind(p.addr).await?),
            None => None,
        };

        if let Some(format) = settings.printer {
            let (tx, rx) = mpsc::channel(capacity);
            let stats =
                ExportHandle::new(Arc::clone(&self_metrics), Exporter::Printer, Signal::Traces);
            consumers.push(Consumer {
                tx,
                stats,
                metrics: false,
            });
            let printer = SpanPrinter::new(format, Arc::clone(&self_metrics));
            tasks.push((
                "printer",
                tokio::spawn(printer.run(rx, cancel.clone(), shutdown)),
            ));
        }
        if let Some(exporter) = traces {
            let (tx, rx) = mpsc::channel(capacity);
            let stats = ExportHandle::new(
                Arc::clone(&self_metrics),
                exporter.exporter(),
                Signal::Traces,
            );
            consumers.push(Consumer {
                tx,
                stats,
                metrics: false,
            });
            tasks.push((
                "otlp traces",
                tokio::spawn(exporter.run(rx, cancel.clone(), shutdown)),
            ));
        }
        let mut red = Vec::new();
        if let Some(push) = &red_push {
            red.push(Arc::clone(push));
        }
        if let Some(scrape) = &red_scrape
            && !red.iter().any(|r| Arc::ptr_eq(r, scrape))
        {
            red.push(Arc::clone(scrape));
        }
        for aggregator in &red {
            let (tx, rx) = mpsc::channel(capacity);
            let stats =
                ExportHandle::new(Arc::clone(&self_metrics), Exporter::Metrics, Signal::Traces);
            consumers.push(Consumer {
                tx,
                stats,
                metrics: true,
            });
            let task = tokio::spawn(Arc::clone(aggregator).run(rx, cancel.clone()));
            let is_pushed = red_push
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, aggregator));
            match if is_pushed { metrics_push.take() } else { None } {
                Some((exporter, interval)) => {
                    let (tx, rx) = mpsc::channel(16);
                    // The metrics exporter ends when the pusher closes its channel, after the
                    // final push, so it gets no cancellation of its own.
                    let export_task =
                        tokio::spawn(exporter.run(rx, CancellationToken::new(), shutdown));
                    let pusher =
                        push_metrics(Arc::clone(aggregator), tx, interval, task, cancel.clone());
                    tasks.push(("metrics push", tokio::spawn(pusher)));
                    tasks.push(("otlp metrics", export_task));
                }
                None => tasks.push(("metrics", task)),
            }
        }
        let prometheus_addr = match (listener, &settings.prometheus) {
            (Some(listener), Some(p)) => {
                let addr = listener.local_addr().map_err(|source| ExportError::Bind {
                    addr: p.addr,
                    source,
                })?;
                let server = prometheus::Server::new(
                    p.path.clone(),
                    red_scrape.clone(),
                    Arc::clone(&self_metrics),
                    ready,
                );
                tasks.push((
                    "prometheus",
                    tokio::spawn(server.serve(listener, cancel.clone())),
                ));
                Some(addr)
            }
            _ => None,
        };
        let sink = SpanSink {
            consumers: consumers.into(),
        };
        Ok((
            sink,
            Self {
                tasks,
                cancel,
                red,
                prometheus_addr,
            },
        ))
    }

    /// The RED aggregators: one shared by OTLP metrics and Prometheus, or one each when their
    /// buckets or limits differ; none when neither is on.
    pub fn red_metrics(&self) -> &[Arc<RedMetrics>] {
        &self.red
    }

    /// The address the Prometheus endpoint listens on (useful with port 0).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Cancels (if not yet done) and waits for every consumer to flush and stop.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for (name, task) in self.tasks {
            if let Err(error) = task.await {
                tracing::warn!(consumer = name, %error, "An export task failed.");
            }
        }
    }
}

/// Pushes a snapshot every `interval`; at cancellation waits for the aggregator to record what
/// was queued, pushes a final snapshot and returns (closing the exporter's channel).
async fn push_metrics(
    red: Arc<RedMetrics>,
    tx: mpsc::Sender<opentelemetry_proto::tonic::metrics::v1::ResourceMetrics>,
    interval: Duration,
    aggregator: JoinHandle<()>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let push = |red: &RedMetrics| {
        for rm in otlp::encode::resource_metrics(&red.snapshot()) {
            if tx.try_send(rm).is_err() {
                // The exporter's queue holds older snapshots; this one waits for the next tick.
                tracing::debug!("OTLP metrics channel full, skipping a push.");
                break;
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = ticker.tick() => push(&red),
        }
    }
    let _ = aggregator.await;
    push(&red);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::synthetic::{http_server_span, resource},
        span::model::Signals,
    };

    type Rx = mpsc::Receiver<Arc<Span>>;

    fn sink(capacity: usize) -> (SpanSink, Rx, Rx, Arc<SelfMetrics>) {
        let metrics = Arc::new(SelfMetrics::default());
        let (traces_tx, traces_rx) = mpsc::channel(capacity);
        let (red_tx, red_rx) = mpsc::channel(capacity);
        let consumer = |tx, exporter, metrics_flag| Consumer {
            tx,
            stats: ExportHandle::new(Arc::clone(&metrics), exporter, Signal::Traces),
            metrics: metrics_flag,
        };
        let sink = SpanSink {
            consumers: vec![
                consumer(traces_tx, Exporter::OtlpGrpc, false),
                consumer(red_tx, Exporter::Metrics, true),
            ]
            .into(),
        };
        (sink, traces_rx, red_rx, metrics)
    }

    #[test]
    fn spans_go_to_the_consumers_of_their_signals() {
        let (sink, mut traces, mut red, _) = sink(8);
        let r = resource("shop", 1);
        let mut only_metrics = http_server_span(1, &r);
        only_metrics.signals = Signals {
            traces: false,
            metrics: true,
        };
        let mut only_traces = http_server_span(2, &r);
        only_traces.signals = Signals {
            traces: true,
            metrics: false,
        };
        sink.send(Arc::new(http_server_span(0, &r)));
        sink.send(Arc::new(only_metrics));
        sink.send(Arc::new(only_traces));
        let ids = |rx: &mut mpsc::Receiver<Arc<Span>>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|s| s.span_id)
                .collect::<Vec<_>>()
        };
        let (t, m) = (ids(&mut traces), ids(&mut red));
        assert_eq!(t, [synthetic::span_id(0), synthetic::span_id(2)]);
        assert_eq!(m, [synthetic::span_id(0), synthetic::span_id(1)]);
    }

    #[test]
    fn a_full_channel_drops_for_that_consumer_only() {
        let (sink, _traces, mut red, metrics) = sink(2);
        let r = resource("shop", 1);
        for seq in 0..5 {
            sink.send(Arc::new(http_server_span(seq, &r)));
            let _ = red.try_recv();
        }
        let dropped = |e| {
            metrics
                .export(e, Signal::Traces)
                .dropped(DropReason::ExportQueueFull)
        };
        assert_eq!(dropped(Exporter::OtlpGrpc), 3);
        assert_eq!(dropped(Exporter::Metrics), 0);
        assert_eq!(metrics.spans_dropped(DropReason::ExportQueueFull), 3);
    }
}
