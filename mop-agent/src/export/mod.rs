//! TEMPORARY stub with the export API shape (replaced by the export branch).
use crate::{span::model::Span, telemetry::SelfMetrics};
use std::{io::Write, sync::Arc, time::Duration};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
#[derive(Debug, thiserror::Error)]
#[error("export")]
pub struct ExportError;
#[derive(Clone, Debug, Default)]
pub struct ExportSettings {
    pub json: bool,
    pub shutdown_timeout: Duration,
}
#[derive(Clone)]
pub struct SpanSink {
    json: bool,
}
impl ExportSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            json: true,
            shutdown_timeout: c.shutdown_timeout,
        }
    }
}
impl SpanSink {
    pub fn send(&self, s: Arc<Span>) {
        let attrs: serde_json::Map<String, serde_json::Value> = s
            .attributes
            .key_values()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    match v {
                        crate::span::AttrValue::Str(s) => serde_json::Value::from(s),
                        crate::span::AttrValue::Int(i) => i.into(),
                        crate::span::AttrValue::Bool(b) => b.into(),
                    },
                )
            })
            .collect();
        let line = serde_json::json!({"trace_id": s.trace_id.to_hex(), "span_id": s.span_id.to_hex(), "parent_span_id": s.parent_span_id.map(|p| p.to_hex()).unwrap_or_default(), "kind": s.kind.as_str(), "name": s.name, "service": s.resource.service_name, "pid": s.pid, "start_unix_nano": s.start_unix_nano, "end_unix_nano": s.end_unix_nano, "attributes": attrs});
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
pub struct Exporters;
impl Exporters {
    pub async fn start(
        settings: ExportSettings,
        _m: Arc<SelfMetrics>,
        _r: watch::Receiver<bool>,
        _c: CancellationToken,
    ) -> Result<(SpanSink, Self), ExportError> {
        Ok((
            SpanSink {
                json: settings.json,
            },
            Self,
        ))
    }
    pub async fn shutdown(self) {}
}
