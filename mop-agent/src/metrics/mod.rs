//! RED metrics: per-service cumulative histograms of request duration and body sizes, built
//! from spans, read by the OTLP metrics exporter and the Prometheus endpoint.
//!
//! Series are keyed per service resource and attribute set; a service holds at most
//! [`MetricsSettings::max_series_per_service`] series (further attribute sets go to one overflow
//! series per family, counted), and a series that sees no update for [`MetricsSettings::ttl`]
//! is forgotten (it restarts with a new start time if it comes back).
//!
//! The node as a whole holds at most [`MetricsSettings::max_series`]: every short-lived process
//! is a service instance of its own, so churn (cron jobs, scripts running curl) would otherwise
//! grow the series, and the Prometheus page, by one service per process until the TTL. Past the
//! cap a new attribute set goes to its service's overflow series when that exists, else to the
//! node-wide overflow service ([`OVERFLOW_SERVICE`]): counted, and nothing is lost from the
//! totals.

mod series;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use series::{Family, Histogram, Instrument, Measure, OVERFLOW_ROUTE, SeriesKey};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    span::model::{AttrValue, ServiceResource, Span},
    telemetry::{Exporter, SelfMetrics, Signal},
};

/// Default duration bounds (seconds), as in the HTTP semantic conventions.
pub const DEFAULT_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Default body-size bounds (bytes), OBI's `request_size_histogram`/`response_size_histogram`.
pub const DEFAULT_SIZE_BUCKETS: [f64; 10] = [
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Default cap on distinct series per service.
pub const DEFAULT_MAX_SERIES_PER_SERVICE: usize = 1000;

/// Default cap on distinct series on the node (every service together).
pub const DEFAULT_MAX_SERIES: usize = 2000;

/// `service.name` (and `service.instance.id`) of the series that take what no longer fits
/// under [`MetricsSettings::max_series`].
pub const OVERFLOW_SERVICE: &str = "otel.metric.overflow";

/// Default time after which a series without updates is forgotten.
pub const DEFAULT_SERIES_TTL: Duration = Duration::from_mins(5);

/// How the aggregator buckets and bounds its series.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// Duration bounds, seconds, strictly increasing.
    pub duration_buckets: Vec<f64>,
    /// `http.request.body.size` bounds, bytes.
    pub request_size_buckets: Vec<f64>,
    /// `http.response.body.size` bounds, bytes.
    pub response_size_buckets: Vec<f64>,
    /// Series per service before the overflow series takes the rest.
    pub max_series_per_service: usize,
    /// Series on the node before new ones go to an overflow series.
    pub max_series: usize,
    /// Series without updates for this long are dropped.
    pub ttl: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            duration_buckets: DEFAULT_DURATION_BUCKETS.to_vec(),
            request_size_buckets: DEFAULT_SIZE_BUCKETS.to_vec(),
            response_size_buckets: DEFAULT_SIZE_BUCKETS.to_vec(),
            max_series_per_service: DEFAULT_MAX_SERIES_PER_SERVICE,
            max_series: DEFAULT_MAX_SERIES,
            ttl: DEFAULT_SERIES_TTL,
        }
    }
}

/// The recorded values of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSnapshot {
    /// The attribute set.
    pub key: SeriesKey,
    /// When the series (re)started, ns since the epoch (cumulative `start_time_unix_nano`).
    pub start_unix_nano: u64,
    /// Duration, seconds.
    pub duration: Histogram,
    /// Request body size (HTTP families).
    pub request_size: Option<Histogram>,
    /// Response body size (HTTP families).
    pub response_size: Option<Histogram>,
}

impl SeriesSnapshot {
    /// The histogram of one measure, if the series has it.
    pub fn histogram(&self, measure: Measure) -> Option<&Histogram> {
        match measure {
            Measure::Duration => Some(&self.duration),
            Measure::RequestBodySize => self.request_size.as_ref(),
            Measure::ResponseBodySize => self.response_size.as_ref(),
        }
    }
}

/// The series of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSnapshot {
    /// The service's resource.
    pub resource: Arc<ServiceResource>,
    /// Its series, sorted by key.
    pub series: Vec<SeriesSnapshot>,
}

/// Every live series at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// When the snapshot was taken, ns since the epoch.
    pub time_unix_nano: u64,
    /// One entry per service with at least one series, sorted by service name.
    pub services: Vec<ServiceSnapshot>,
}

impl MetricsSnapshot {
    /// Number of histogram data points (one per instrument and series).
    pub fn data_points(&self) -> usize {
        self.services
            .iter()
            .flat_map(|s| &s.series)
            .map(|s| s.key.family.instruments().len())
            .sum()
    }
}

/// A resource as a map key: equal when it is the same `Arc` or has the same contents.
#[derive(Clone, Debug)]
struct ResourceKey(Arc<ServiceResource>);

impl PartialEq for ResourceKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for ResourceKey {}

impl Hash for ResourceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.service_name.hash(state);
        self.0.service_instance_id.hash(state);
    }
}

#[derive(Debug)]
struct Series {
    snapshot: SeriesSnapshot,
    last_update: Instant,
}

#[derive(Debug, Default)]
struct ServiceSeries {
    series: HashMap<SeriesKey, Series>,
    /// Series that are not overflow series (the ones the cap counts).
    regular: usize,
}

#[derive(Debug, Default)]
struct State {
    services: HashMap<ResourceKey, ServiceSeries>,
    /// Series of every service together.
    total: usize,
}

/// The RED aggregator: records spans, hands out snapshots. Shared behind an `Arc`.
#[derive(Debug)]
pub struct RedMetrics {
    settings: MetricsSettings,
    duration_bounds: Arc<[f64]>,
    request_bounds: Arc<[f64]>,
    response_bounds: Arc<[f64]>,
    state: Mutex<State>,
    self_metrics: Arc<SelfMetrics>,
    /// The resource of the node-wide overflow series.
    overflow_resource: Arc<ServiceResource>,
}

impl RedMetrics {
    /// An empty aggregator.
    pub fn new(settings: MetricsSettings, self_metrics: Arc<SelfMetrics>) -> Self {
        Self {
            duration_bounds: settings.duration_buckets.clone().into(),
            request_bounds: settings.request_size_buckets.clone().into(),
            response_bounds: settings.response_size_buckets.clone().into(),
            settings,
            state: Mutex::default(),
            self_metrics,
            overflow_resource: Arc::new(ServiceResource {
                service_name: OVERFLOW_SERVICE.to_owned(),
                service_namespace: None,
                service_instance_id: OVERFLOW_SERVICE.to_owned(),
                attributes: vec![("otel.metric.overflow".to_owned(), AttrValue::Bool(true))],
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &MetricsSettings {
        &self.settings
    }

    /// Records one span now.
    pub fn record(&self, span: &Span) {
        self.record_at(span, Instant::now(), unix_nanos_now());
    }

    /// Records one span as if at `now` (monotonic, for the TTL) and `now_unix_nano` (start time
    /// of a new series).
    pub fn record_at(&self, span: &Span, now: Instant, now_unix_nano: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.record_locked(&mut state, span, now, now_unix_nano);
    }

    /// Records spans under one lock.
    pub fn record_many(&self, spans: &[Arc<Span>]) {
        let (now, now_unix_nano) = (Instant::now(), unix_nanos_now());
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for span in spans {
            self.record_locked(&mut state, span, now, now_unix_nano);
        }
    }

    fn record_locked(&self, state: &mut State, span: &Span, now: Instant, now_unix_nano: u64) {
        let family = Family::of(span);
        let mut key = SeriesKey::of(span);
        let mut resource = ResourceKey(Arc::clone(&span.resource));
        if state.total >= self.settings.max_series {
            let has = |state: &State, resource: &ResourceKey, key: &SeriesKey| {
                state
                    .services
                    .get(resource)
                    .is_some_and(|s| s.series.contains_key(key))
            };
            if !has(state, &resource, &key) {
                key = SeriesKey::overflow(family);
                if !has(state, &resource, &key) {
                    resource = ResourceKey(Arc::clone(&self.overflow_resource));
                }
                self.self_metrics.add_metric_series_overflow(1);
            }
        }
        let total = &mut state.total;
        let service = state.services.entry(resource).or_default();
        if !key.overflow
            && !service.series.contains_key(&key)
            && service.regular >= self.settings.max_series_per_service
        {
            key = SeriesKey::overflow(family);
            self.self_metrics.add_metric_series_overflow(1);
        }
        let http = matches!(family, Family::HttpServer | Family::HttpClient);
        let regular = &mut service.regular;
        let series = service.series.entry(key).or_insert_with_key(|key| {
            *total += 1;
            if !key.overflow {
                *regular += 1;
            }
            Series {
                snapshot: SeriesSnapshot {
                    key: key.clone(),
                    start_unix_nano: now_unix_nano,
                    duration: Histogram::new(Arc::clone(&self.duration_bounds)),
                    request_size: http.then(|| Histogram::new(Arc::clone(&self.request_bounds))),
                    response_size: http.then(|| Histogram::new(Arc::clone(&self.response_bounds))),
                },
                last_update: now,
            }
        });
        series.last_update = now;
        let s = &mut series.snapshot;
        s.duration.record(span.duration_seconds());
        #[expect(clippy::cast_precision_loss, reason = "body sizes are far below 2^52")]
        {
            // A size the capture could not determine is not recorded (never as 0).
            if let (Some(h), Some(size)) =
                (&mut s.request_size, span.attributes.http_request_body_size)
            {
                h.record(size.max(0) as f64);
            }
            if let (Some(h), Some(size)) = (
                &mut s.response_size,
                span.attributes.http_response_body_size,
            ) {
                h.record(size.max(0) as f64);
            }
        }
    }

    /// Forgets series idle for longer than the TTL (and services left without series).
    pub fn expire(&self, now: Instant) {
        let ttl = self.settings.ttl;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.services.retain(|_, service| {
            service.series.retain(|key, s| {
                let keep = now.saturating_duration_since(s.last_update) <= ttl;
                if !keep && !key.overflow {
                    service.regular -= 1;
                }
                keep
            });
            !service.series.is_empty()
        });
        state.total = state.services.values().map(|s| s.series.len()).sum();
        self.self_metrics.set_metric_series(state.total);
    }

    /// Every live series now (expired ones are dropped first).
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.snapshot_at(Instant::now(), unix_nanos_now())
    }

    /// Every live series as of `now`.
    pub fn snapshot_at(&self, now: Instant, now_unix_nano: u64) -> MetricsSnapshot {
        self.expire(now);
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut services: Vec<ServiceSnapshot> = state
            .services
            .iter()
            .map(|(resource, service)| {
                let mut series: Vec<SeriesSnapshot> = service
                    .series
                    .values()
                    .map(|s| s.snapshot.clone())
                    .collect();
                series.sort_by_cached_key(|s| sort_key(&s.key));
                ServiceSnapshot {
                    resource: Arc::clone(&resource.0),
                    series,
                }
            })
            .collect();
        drop(state);
        services.sort_by(|a, b| {
            (&a.resource.service_name, &a.resource.service_instance_id)
                .cmp(&(&b.resource.service_name, &b.resource.service_instance_id))
        });
        MetricsSnapshot {
            time_unix_nano: now_unix_nano,
            services,
        }
    }

    /// Consumes spans until `cancel` fires, then records what is still queued and returns.
    ///
    /// Expired series are swept every quarter TTL even when no snapshot is taken.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Arc<Span>>,
        cancel: CancellationToken,
    ) {
        let stats = self.self_metrics.export(Exporter::Metrics, Signal::Traces);
        stats.activate();
        let mut sweep = tokio::time::interval((self.settings.ttl / 4).max(Duration::from_secs(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = Vec::with_capacity(256);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                n = rx.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        return;
                    }
                    self.record_all(&buf);
                    buf.clear();
                }
                _ = sweep.tick() => self.expire(Instant::now()),
            }
        }
        rx.close();
        while let Ok(span) = rx.try_recv() {
            buf.push(span);
        }
        self.record_all(&buf);
    }

    fn record_all(&self, spans: &[Arc<Span>]) {
        self.record_many(spans);
        let stats = self.self_metrics.export(Exporter::Metrics, Signal::Traces);
        stats.add_exported(spans.len() as u64);
    }
}

fn sort_key(key: &SeriesKey) -> (Family, bool, String) {
    let attrs = key
        .attributes()
        .into_iter()
        .map(|(k, v)| match v {
            AttrValue::Str(s) => format!("{k}={s}"),
            AttrValue::Int(i) => format!("{k}={i:020}"),
            AttrValue::Bool(b) => format!("{k}={b}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    (key.family, key.overflow, attrs)
}

/// Wall-clock time in ns since the Unix epoch.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
