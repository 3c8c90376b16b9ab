//! Prometheus text (0.0.4) and `OpenMetrics` 1.0 rendering of the RED histograms and the
//! self-metrics.

use std::fmt::Write as _;

use crate::{
    metrics::{Histogram, Instrument, MetricsSnapshot, ServiceSnapshot},
    span::model::{AttrValue, ServiceResource},
    telemetry::{
        DropReason, ExportStatsSnapshot, Exporter, HistogramSnapshot, ProcessStats, Protocol,
        SelfMetrics, Signal, names,
    },
};

/// Exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// `OpenMetrics` when the scraper accepts it, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Info,
    Histogram,
}

/// Writes families one after another; a family's samples must follow its header.
struct Writer {
    format: Format,
    out: String,
}

type Labels = Vec<(String, String)>;

impl Writer {
    /// Writes `# HELP`/`# TYPE` (and `# UNIT`); `name` is the full sample name for counters
    /// (`..._total`) and info metrics (`..._info`).
    fn header(&mut self, name: &str, kind: Kind, unit: Option<&str>, help: &str) {
        let (family, kind_word) = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => (strip(name, "_total"), "counter"),
            (Format::OpenMetrics, Kind::Info) => (strip(name, "_info"), "info"),
            (_, Kind::Counter) => (name, "counter"),
            (_, Kind::Gauge | Kind::Info) => (name, "gauge"),
            (_, Kind::Histogram) => (name, "histogram"),
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind_word}");
        if let (Format::OpenMetrics, Some(unit)) = (self.format, unit) {
            let _ = writeln!(self.out, "# UNIT {family} {unit}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(String, String)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram(
        &mut self,
        name: &str,
        labels: &Labels,
        bounds: &[f64],
        cumulative: &[u64],
        count: u64,
        sum: f64,
    ) {
        let mut with_le = labels.clone();
        with_le.push(("le".to_owned(), String::new()));
        let last = with_le.len() - 1;
        for (bound, c) in bounds.iter().zip(cumulative) {
            with_le[last].1 = float(*bound);
            self.sample(&format!("{name}_bucket"), &with_le, &c.to_string());
        }
        "+Inf".clone_into(&mut with_le[last].1);
        self.sample(&format!("{name}_bucket"), &with_le, &count.to_string());
        self.sample(&format!("{name}_sum"), labels, &float(sum));
        self.sample(&format!("{name}_count"), labels, &count.to_string());
    }

    fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

fn strip<'a>(name: &'a str, suffix: &str) -> &'a str {
    name.strip_suffix(suffix).unwrap_or(name)
}

/// A float as both formats accept it (`1.0`, `0.005`, `+Inf`).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v:?}")
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// An OpenTelemetry attribute key as a Prometheus label name (`http.route` -> `http_route`).
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn attr_string(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// The labels every RED series of a service carries: `service_name`, `service_namespace`,
/// `service_instance_id` (two processes of one service never collide) and `k8s_*`.
fn resource_labels(r: &ServiceResource) -> Labels {
    let mut labels = vec![("service_name".to_owned(), r.service_name.clone())];
    if let Some(ns) = &r.service_namespace {
        labels.push(("service_namespace".to_owned(), ns.clone()));
    }
    labels.push((
        "service_instance_id".to_owned(),
        r.service_instance_id.clone(),
    ));
    for (k, v) in &r.attributes {
        if k.starts_with("k8s.") {
            labels.push((label_name(k), attr_string(v)));
        }
    }
    labels
}

fn red_family(w: &mut Writer, instrument: Instrument, services: &[ServiceSnapshot]) {
    let series = services.iter().flat_map(|svc| {
        svc.series
            .iter()
            .filter(move |s| s.key.family == instrument.family())
            .filter_map(move |s| Some((svc, s, s.histogram(instrument.measure())?)))
    });
    let mut first = true;
    for (svc, s, h) in series {
        if first {
            w.header(
                instrument.prometheus_name(),
                Kind::Histogram,
                Some(instrument.prometheus_unit()),
                instrument.description(),
            );
            first = false;
        }
        let mut labels = resource_labels(&svc.resource);
        labels.extend(
            s.key
                .attributes()
                .iter()
                .map(|(k, v)| (label_name(k), attr_string(v))),
        );
        red_histogram(w, instrument.prometheus_name(), &labels, h);
    }
}

fn red_histogram(w: &mut Writer, name: &str, labels: &Labels, h: &Histogram) {
    let cumulative = h.cumulative_counts();
    w.histogram(name, labels, &h.bounds, &cumulative, h.count, h.sum);
}

fn label(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The exporters that have started, with their stats.
fn active(m: &SelfMetrics, signal: Signal) -> Vec<(Exporter, ExportStatsSnapshot)> {
    Exporter::ALL
        .iter()
        .filter(|e| m.export(**e, signal).is_active())
        .map(|e| (*e, m.export(*e, signal).snapshot()))
        .collect()
}

fn counter(w: &mut Writer, name: &str, help: &str, samples: &[(Labels, u64)]) {
    w.header(name, Kind::Counter, None, help);
    for (labels, v) in samples {
        w.sample(name, labels, &v.to_string());
    }
}

fn gauge(w: &mut Writer, name: &str, help: &str, samples: &[(Labels, i64)]) {
    w.header(name, Kind::Gauge, None, help);
    for (labels, v) in samples {
        w.sample(name, labels, &v.to_string());
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one flat list of families, in output order"
)]
fn self_metrics(w: &mut Writer, m: &SelfMetrics) {
    let traces = active(m, Signal::Traces);
    let all: Vec<(Exporter, Signal, ExportStatsSnapshot)> = Signal::ALL
        .iter()
        .flat_map(|s| active(m, *s).into_iter().map(move |(e, st)| (e, *s, st)))
        .collect();
    let es =
        |e: Exporter, s: Signal| vec![label("exporter", e.as_str()), label("signal", s.as_str())];

    counter(
        w,
        names::EVENTS_READ,
        "Ring-buffer records read.",
        &[(vec![], m.events_read())],
    );
    counter(
        w,
        names::EVENTS_LOST,
        "Records the kernel dropped (ring buffer full) or never made (probe recursion misses).",
        &[(vec![], m.events_lost())],
    );
    let parse: Vec<_> = Protocol::ALL
        .iter()
        .map(|p| (vec![label("protocol", p.as_str())], m.parse_errors(*p)))
        .collect();
    counter(w, names::PARSE_ERRORS, "Protocol parse errors.", &parse);
    counter(
        w,
        names::SPANS_PRODUCED,
        "Spans assembled.",
        &[(vec![], m.spans_produced())],
    );
    let exported: Vec<_> = traces
        .iter()
        .map(|(e, s)| (vec![label("exporter", e.as_str())], s.exported))
        .collect();
    counter(
        w,
        names::SPANS_EXPORTED,
        "Spans accepted by each exporter.",
        &exported,
    );
    let mut dropped: Vec<(Labels, u64)> = [
        DropReason::AssemblyQueueFull,
        DropReason::Sampled,
        DropReason::UnknownProcess,
    ]
    .iter()
    .map(|r| {
        (
            vec![label("reason", r.as_str())],
            m.spans_dropped_unattributed(*r),
        )
    })
    .collect();
    for (e, s) in &traces {
        for r in [
            DropReason::ExportQueueFull,
            DropReason::ExportMemoryCap,
            DropReason::ExportFailed,
        ] {
            dropped.push((
                vec![label("reason", r.as_str()), label("exporter", e.as_str())],
                s.dropped[r as usize],
            ));
        }
    }
    counter(
        w,
        names::SPANS_DROPPED,
        "Spans dropped, by reason (and exporter).",
        &dropped,
    );
    let points = active(m, Signal::Metrics);
    let exported: Vec<_> = points
        .iter()
        .map(|(e, s)| (vec![label("exporter", e.as_str())], s.exported))
        .collect();
    counter(
        w,
        names::METRIC_POINTS_EXPORTED,
        "Metric data points accepted by each exporter.",
        &exported,
    );
    let mut dropped = Vec::new();
    for (e, s) in &points {
        for r in [DropReason::ExportMemoryCap, DropReason::ExportFailed] {
            dropped.push((
                vec![label("exporter", e.as_str()), label("reason", r.as_str())],
                s.dropped[r as usize],
            ));
        }
    }
    counter(
        w,
        names::METRIC_POINTS_DROPPED,
        "Metric data points dropped, by exporter and reason.",
        &dropped,
    );
    let otlp: Vec<_> = all
        .iter()
        .filter(|(e, _, _)| matches!(e, Exporter::OtlpGrpc | Exporter::OtlpHttp))
        .collect();
    let errors: Vec<_> = all
        .iter()
        .map(|(e, s, st)| (es(*e, *s), st.errors))
        .collect();
    counter(w, names::EXPORT_ERRORS, "Failed export attempts.", &errors);
    let retries: Vec<_> = otlp
        .iter()
        .map(|(e, s, st)| (es(*e, *s), st.retries))
        .collect();
    counter(
        w,
        names::EXPORT_RETRIES,
        "Export attempts retried.",
        &retries,
    );
    let rejected: Vec<_> = otlp
        .iter()
        .map(|(e, s, st)| (es(*e, *s), st.rejected))
        .collect();
    counter(
        w,
        names::EXPORT_REJECTED,
        "Items the receiver rejected (partial success).",
        &rejected,
    );
    w.header(
        names::EXPORT_DURATION,
        Kind::Histogram,
        Some("seconds"),
        "Export request latency.",
    );
    for (e, s, st) in &otlp {
        let HistogramSnapshot {
            bounds,
            cumulative_counts,
            count,
            sum,
        } = &st.duration;
        w.histogram(
            names::EXPORT_DURATION,
            &es(*e, *s),
            bounds,
            cumulative_counts,
            *count,
            *sum,
        );
    }
    let queue: Vec<_> = otlp
        .iter()
        .map(|(e, s, st)| (es(*e, *s), st.queue_length))
        .collect();
    gauge(
        w,
        names::EXPORT_QUEUE_LENGTH,
        "Items waiting in an exporter's queue.",
        &queue,
    );
    gauge(
        w,
        names::INSTRUMENTED_PROCESSES,
        "Processes instrumented.",
        &[(vec![], m.instrumented_processes())],
    );
    gauge(
        w,
        names::PROBES_ATTACHED,
        "eBPF programs attached.",
        &[(vec![], m.probes_attached())],
    );
    gauge(
        w,
        names::CONNECTIONS_TRACKED,
        "Connections the userspace tracker holds.",
        &[(vec![], m.connections_tracked())],
    );
    gauge(
        w,
        names::TLS_LIBRARIES,
        "TLS library files with probes attached.",
        &[(vec![], m.tls_libraries())],
    );
    counter(
        w,
        names::STREAM_GAPS,
        "Syscalls of a connection the kernel never reported, found from TCP stream positions.",
        &[(vec![], m.stream_gaps())],
    );
    counter(
        w,
        names::EXEC_REPORTS_DROPPED,
        "Programs exec'd while discovery was behind, decided on its next pass instead of at exec.",
        &[(vec![], m.exec_reports_dropped())],
    );
    counter(
        w,
        names::METRIC_SERIES_OVERFLOW,
        "Spans recorded into an overflow series (series cap reached).",
        &[(vec![], m.metric_series_overflow())],
    );
    gauge(
        w,
        names::METRIC_SERIES,
        "Metric series held by the RED aggregator.",
        &[(vec![], m.metric_series())],
    );
    if let Some(path) = m.capture_path() {
        w.header(
            names::CAPTURE_PATH_INFO,
            Kind::Info,
            None,
            "The capture path in use.",
        );
        w.sample(names::CAPTURE_PATH_INFO, &[label("path", path)], "1");
    }
    let refused = m.capture_path_refused();
    if !refused.is_empty() {
        gauge(
            w,
            names::CAPTURE_PATH_REFUSED,
            "Better capture paths refused at start-up, and why (always 1).",
            &refused
                .iter()
                .map(|(path, reason)| (vec![label("path", path), label("reason", reason)], 1))
                .collect::<Vec<_>>(),
        );
    }
    w.header(names::BUILD_INFO, Kind::Info, None, "The agent's version.");
    w.sample(
        names::BUILD_INFO,
        &[label("version", env!("CARGO_PKG_VERSION"))],
        "1",
    );
}

/// The standard `process_*` families of the agent itself.
fn process_metrics(w: &mut Writer, p: &ProcessStats) {
    let families = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time the agent spent.",
            p.cpu_seconds.to_string(),
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "The agent's resident memory.",
            p.resident_bytes.to_string(),
        ),
        (
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "The agent's virtual memory.",
            p.virtual_bytes.to_string(),
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "The agent's open file descriptors (BPF objects included).",
            p.open_fds.to_string(),
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "When the agent started, seconds since the Unix epoch.",
            p.start_time_seconds.to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        let family = strip(name, "_total");
        let unit = family
            .ends_with("_seconds")
            .then_some("seconds")
            .or_else(|| family.ends_with("_bytes").then_some("bytes"));
        w.header(name, kind, unit, help);
        w.sample(name, &[], &value);
    }
}

/// Renders the RED histograms (when there is a snapshot), the self-metrics and the agent's
/// process figures (when read).
pub fn render(
    format: Format,
    red: Option<&MetricsSnapshot>,
    m: &SelfMetrics,
    process: Option<&ProcessStats>,
) -> String {
    let mut w = Writer {
        format,
        out: String::with_capacity(16 << 10),
    };
    if let Some(snapshot) = red {
        for instrument in Instrument::ALL {
            red_family(&mut w, instrument, &snapshot.services);
        }
    }
    self_metrics(&mut w, m);
    if let Some(p) = process {
        process_metrics(&mut w, p);
    }
    w.finish()
}
