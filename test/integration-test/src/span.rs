//! Spans as the agent prints them with `trace_printer: json`: one JSON object per line on stdout
//! (fields of interface.md, "Output").

use std::fmt;

use serde_json::Value;

/// One span printed by the agent, with its contract fields checked at parse time.
#[derive(Clone, Debug)]
pub struct Span {
    /// 32 lower-case hex digits, not all zero.
    pub trace_id: String,
    /// 16 lower-case hex digits, not all zero.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// `server` or `client`.
    pub kind: String,
    /// `{method}`, `{method} {route}` or `{package.Service}/{Method}`.
    pub name: String,
    /// The service name (`service.name` of the resource).
    pub service: String,
    /// The instrumented process (host PID namespace).
    pub pid: u32,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch (>= start).
    pub end_unix_nano: u64,
    /// The whole object as printed, for the fields not lifted out above.
    pub json: Value,
}

impl Span {
    /// Parses one stdout line, checking the shape of every contract field.
    pub fn parse(line: &str) -> Result<Self, String> {
        let json: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let obj = json
            .as_object()
            .ok_or_else(|| format!("not a JSON object: {line}"))?;
        let text = |key: &str| -> Result<String, String> {
            obj.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("field `{key}` missing or not a string: {line}"))
        };
        let trace_id = text("trace_id")?;
        let span_id = text("span_id")?;
        let parent_span_id = text("parent_span_id")?;
        check_id("trace_id", &trace_id, 32, line)?;
        check_id("span_id", &span_id, 16, line)?;
        if !parent_span_id.is_empty() {
            check_id("parent_span_id", &parent_span_id, 16, line)?;
        }
        let kind = text("kind")?;
        if kind != "server" && kind != "client" {
            return Err(format!("`kind` is {kind:?}, not server or client: {line}"));
        }
        let pid = obj
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`pid` missing or not a positive integer: {line}"))?;
        let start_unix_nano = nanos(obj.get("start_unix_nano"))
            .ok_or_else(|| format!("`start_unix_nano` missing or not an integer: {line}"))?;
        let end_unix_nano = nanos(obj.get("end_unix_nano"))
            .ok_or_else(|| format!("`end_unix_nano` missing or not an integer: {line}"))?;
        if end_unix_nano < start_unix_nano {
            return Err(format!("span ends before it starts: {line}"));
        }
        if !obj.get("attributes").is_some_and(Value::is_object) {
            return Err(format!("`attributes` missing or not an object: {line}"));
        }
        Ok(Self {
            trace_id,
            span_id,
            parent_span_id,
            kind,
            name: text("name")?,
            service: text("service")?,
            pid,
            start_unix_nano,
            end_unix_nano,
            json,
        })
    }

    /// The attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.json["attributes"].get(key)
    }

    /// True when the attribute `key` is present.
    pub fn has_attr(&self, key: &str) -> bool {
        self.attr(key).is_some()
    }

    /// The string attribute `key`; panics (showing the span) when missing or not a string.
    pub fn str_attr(&self, key: &str) -> &str {
        match self.attr(key) {
            Some(Value::String(s)) => s,
            Some(other) => panic!("attribute `{key}` is {other}, not a string, in {self}"),
            None => panic!("attribute `{key}` missing in {self}"),
        }
    }

    /// The integer attribute `key`; panics when missing or not a JSON integer (a number in a
    /// string is a failure: the contract says numeric attributes are integers).
    pub fn int_attr(&self, key: &str) -> i64 {
        match self.attr(key) {
            Some(v) if v.is_i64() || v.is_u64() => v
                .as_i64()
                .unwrap_or_else(|| panic!("attribute `{key}` overflows i64 in {self}")),
            Some(other) => panic!("attribute `{key}` is {other}, not an integer, in {self}"),
            None => panic!("attribute `{key}` missing in {self}"),
        }
    }

    /// Duration in nanoseconds.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano - self.start_unix_nano
    }

    /// True when this span's parent is `other` (same trace, parent id = its span id).
    pub fn is_child_of(&self, other: &Span) -> bool {
        self.trace_id == other.trace_id && self.parent_span_id == other.span_id
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.json)
    }
}

fn check_id(field: &str, value: &str, len: usize, line: &str) -> Result<(), String> {
    let hex = value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex || value.bytes().all(|b| b == b'0') {
        return Err(format!(
            "`{field}` is {value:?}, not {len} lower-case hex digits (non-zero): {line}"
        ));
    }
    Ok(())
}

/// A `u64` nanosecond timestamp written as a JSON integer or, as OTLP/JSON does, a decimal
/// string.
fn nanos(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parses every non-empty stdout line; panics on the first that is not a valid span, since
/// with `trace_printer: json` stdout carries nothing else.
pub fn parse_all(lines: &[String]) -> Vec<Span> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Span::parse(l).unwrap_or_else(|e| panic!("bad span line on stdout: {e}")))
        .collect()
}

/// Parses the lines that are valid spans, skipping the rest (for waits while the agent runs).
pub fn parse_lenient(lines: &[String]) -> Vec<Span> {
    lines.iter().filter_map(|l| Span::parse(l).ok()).collect()
}

/// Joins spans one per line, for panic messages.
pub fn show(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "(no spans)".to_owned();
    }
    spans
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","parent_span_id":"","kind":"server","name":"GET","service":"nginx","pid":42,"start_unix_nano":1700000000000000000,"end_unix_nano":"1700000000000001000","attributes":{"http.response.status_code":200,"url.path":"/","server.port":"80"}}"#;

    #[test]
    fn parses_contract_fields() {
        let span = Span::parse(GOOD).unwrap();
        assert_eq!(span.kind, "server");
        assert_eq!(span.pid, 42);
        assert_eq!(span.duration_nanos(), 1000);
        assert_eq!(span.int_attr("http.response.status_code"), 200);
        assert_eq!(span.str_attr("url.path"), "/");
        assert!(!span.has_attr("http.route"));
    }

    #[test]
    #[should_panic(expected = "not an integer")]
    fn string_numbers_are_rejected() {
        Span::parse(GOOD).unwrap().int_attr("server.port");
    }

    #[test]
    fn bad_ids_are_rejected() {
        let zero = GOOD.replace("b7ad6b7169203331", "0000000000000000");
        assert!(Span::parse(&zero).unwrap_err().contains("span_id"));
        let upper = GOOD.replace("0af7651916cd43dd", "0AF7651916CD43DD");
        assert!(Span::parse(&upper).unwrap_err().contains("trace_id"));
        assert!(Span::parse("INFO ready").is_err());
    }
}
