//! `trace_printer`: one line per span on stdout, human-readable (`text`) or JSON (`json`).
//!
//! Lines are written through a buffered, locked stdout and flushed one by one (readers follow
//! the output through a pipe). Writing happens on the blocking pool, so a slow reader never
//! stalls a runtime worker; the span sink never waits for the printer either (its channel is
//! bounded and drops).

use std::{
    fmt::Write as _,
    io::{self, Write},
    sync::Arc,
    time::Duration,
};

use serde::{Serialize, Serializer, ser::SerializeMap as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    span::model::{AttrValue, Span, SpanStatus},
    telemetry::{DropReason, Exporter, SelfMetrics, Signal},
};

/// Output format of the span printer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrinterFormat {
    /// One human-readable line per span.
    Text,
    /// One JSON object per span per line.
    Json,
}

/// The printer consumer.
#[derive(Debug)]
pub struct SpanPrinter {
    format: PrinterFormat,
    self_metrics: Arc<SelfMetrics>,
}

impl SpanPrinter {
    /// A printer writing `format` to stdout.
    pub fn new(format: PrinterFormat, self_metrics: Arc<SelfMetrics>) -> Self {
        Self {
            format,
            self_metrics,
        }
    }

    /// Prints spans until `cancel` fires, then prints what is queued (for at most
    /// `shutdown_timeout`) and returns.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Arc<Span>>,
        cancel: CancellationToken,
        shutdown_timeout: Duration,
    ) {
        let stats = self.self_metrics.export(Exporter::Printer, Signal::Traces);
        stats.activate();
        let mut buf = Vec::with_capacity(256);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                n = rx.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        return;
                    }
                    self.print(std::mem::take(&mut buf)).await;
                }
            }
        }
        rx.close();
        while let Ok(span) = rx.try_recv() {
            buf.push(span);
        }
        let pending = buf.len() as u64;
        if tokio::time::timeout(shutdown_timeout, self.print(buf))
            .await
            .is_err()
        {
            stats.add_dropped(DropReason::ExportFailed, pending);
        }
    }

    async fn print(&self, spans: Vec<Arc<Span>>) {
        let format = self.format;
        let n = spans.len() as u64;
        let written = tokio::task::spawn_blocking(move || write_lines(format, &spans)).await;
        let stats = self.self_metrics.export(Exporter::Printer, Signal::Traces);
        match written {
            Ok(Ok(())) => stats.add_exported(n),
            Ok(Err(error)) => {
                stats.inc_errors();
                stats.add_dropped(DropReason::ExportFailed, n);
                tracing::warn!(%error, "Could not write spans to stdout.");
            }
            Err(error) => {
                stats.inc_errors();
                stats.add_dropped(DropReason::ExportFailed, n);
                tracing::warn!(%error, "The span printer task failed.");
            }
        }
    }
}

fn write_lines(format: PrinterFormat, spans: &[Arc<Span>]) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut line = String::with_capacity(512);
    for span in spans {
        line.clear();
        match format {
            PrinterFormat::Text => format_text(span, &mut line),
            PrinterFormat::Json => format_json(span, &mut line),
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// Appends the JSON object of a span (without newline) to `out`.
pub fn format_json(span: &Span, out: &mut String) {
    let json = JsonSpan::from(span);
    // Serialising plain strings and integers into a String cannot fail.
    if let Ok(s) = serde_json::to_string(&json) {
        out.push_str(&s);
    }
}

/// Appends the text line of a span (without newline) to `out`: UTC end time, service, kind,
/// name, status code, duration, trace/span/parent ids.
pub fn format_text(span: &Span, out: &mut String) {
    let a = &span.attributes;
    let status = a
        .rpc
        .as_ref()
        .and_then(|r| r.grpc_status_code)
        .or(a.http_response_status_code)
        .map_or_else(|| "-".to_owned(), |c| c.to_string());
    let duration = Duration::from_nanos(span.end_unix_nano.saturating_sub(span.start_unix_nano));
    let parent = span
        .parent_span_id
        .map_or_else(|| "-".to_owned(), |p| p.to_hex());
    let error = if span.status == SpanStatus::Error {
        " ERROR"
    } else {
        ""
    };
    let _ = write!(
        out,
        "{} {} ({}) {} {:?} {} {:.3}ms{} trace={} span={} parent={}",
        format_utc(span.start_unix_nano),
        span.resource.service_name,
        span.pid,
        span.kind.as_str(),
        span.name,
        status,
        duration.as_secs_f64() * 1e3,
        error,
        span.trace_id.to_hex(),
        span.span_id.to_hex(),
        parent,
    );
}

/// RFC 3339 UTC with microseconds, from ns since the epoch.
fn format_utc(unix_nano: u64) -> String {
    let secs = unix_nano / 1_000_000_000;
    let micros = (unix_nano % 1_000_000_000) / 1_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The JSON printer's record: exactly the fields of the contract.
#[derive(Serialize)]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: &'static str,
    name: &'a str,
    service: &'a str,
    pid: u32,
    start_unix_nano: u64,
    end_unix_nano: u64,
    attributes: JsonAttributes,
}

impl<'a> From<&'a Span> for JsonSpan<'a> {
    fn from(span: &'a Span) -> Self {
        Self {
            trace_id: span.trace_id.to_hex(),
            span_id: span.span_id.to_hex(),
            parent_span_id: span.parent_span_id.map(|p| p.to_hex()).unwrap_or_default(),
            kind: span.kind.as_str(),
            name: &span.name,
            service: &span.resource.service_name,
            pid: span.pid,
            start_unix_nano: span.start_unix_nano,
            end_unix_nano: span.end_unix_nano,
            attributes: JsonAttributes(span.attributes.key_values()),
        }
    }
}

struct JsonAttributes(Vec<(&'static str, AttrValue)>);

impl Serialize for JsonAttributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            match value {
                AttrValue::Str(s) => map.serialize_entry(key, s)?,
                AttrValue::Int(i) => map.serialize_entry(key, i)?,
                AttrValue::Bool(b) => map.serialize_entry(key, b)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::synthetic::{grpc_client_span, http_server_span, resource};

    #[test]
    fn json_has_exactly_the_contract_fields() {
        let span = http_server_span(1, &resource("shop", 7));
        let mut line = String::new();
        format_json(&span, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "attributes",
                "end_unix_nano",
                "kind",
                "name",
                "parent_span_id",
                "pid",
                "service",
                "span_id",
                "start_unix_nano",
                "trace_id"
            ]
        );
        assert_eq!(v["trace_id"], span.trace_id.to_hex());
        assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(v["span_id"].as_str().unwrap().len(), 16);
        assert_eq!(v["parent_span_id"], span.parent_span_id.unwrap().to_hex());
        assert_eq!(v["kind"], "server");
        assert_eq!(v["name"], "GET /users/{id}");
        assert_eq!(v["service"], "shop");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["start_unix_nano"], span.start_unix_nano);
        assert_eq!(v["end_unix_nano"], span.end_unix_nano);
        let attrs = &v["attributes"];
        assert_eq!(attrs["http.request.method"], "GET");
        assert_eq!(
            attrs["http.response.status_code"], 200,
            "integers are JSON numbers"
        );
        assert_eq!(attrs["server.port"], 8080);
        assert_eq!(attrs["http.response.body.size"], 1100);
        assert_eq!(attrs["url.path"], "/users/1");
        assert_eq!(attrs["http.route"], "/users/{id}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn json_root_spans_have_an_empty_parent_and_grpc_attributes() {
        let span = grpc_client_span(4, &resource("cli", 8));
        let mut line = String::new();
        format_json(&span, &mut line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["parent_span_id"], "");
        assert_eq!(v["kind"], "client");
        assert_eq!(v["attributes"]["rpc.grpc.status_code"], 14);
        assert_eq!(v["attributes"]["rpc.system"], "grpc");
    }

    #[test]
    fn text_line_names_the_span() {
        let span = http_server_span(9, &resource("shop", 7));
        let mut line = String::new();
        format_text(&span, &mut line);
        assert!(
            line.starts_with("2023-11-14T22:13:20.009000Z shop (4242) server "),
            "{line}"
        );
        assert!(
            line.contains("\"GET /users/{id}\" 500 12.000ms ERROR"),
            "{line}"
        );
        assert!(
            line.contains(&format!("trace={}", span.trace_id.to_hex())),
            "{line}"
        );
        assert!(
            line.contains(&format!("span={}", span.span_id.to_hex())),
            "{line}"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000000Z");
    }
}
