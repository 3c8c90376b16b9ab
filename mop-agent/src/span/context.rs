//! Incoming trace context: the W3C `traceparent`/`tracestate` headers, and B3 (single `b3`
//! and multi `X-B3-*` headers).

use mop_protocol::TraceHeaders;

use super::model::{SpanId, TraceId};

/// The caller's span, as an incoming header names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentContext {
    /// The trace to join.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the server span.
    pub span_id: SpanId,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    /// W3C `tracestate`, kept verbatim with a `traceparent`.
    pub trace_state: Option<String>,
}

/// The parent named by a request's headers: `traceparent` (with its `tracestate`) first, then
/// B3 single, then B3 multi. Invalid headers count as absent.
pub fn parent_from_headers(h: &TraceHeaders) -> Option<ParentContext> {
    if let Some(mut p) = h.traceparent.as_deref().and_then(parse_traceparent) {
        p.trace_state.clone_from(&h.tracestate);
        return Some(p);
    }
    if let Some(p) = h.b3.as_deref().and_then(parse_b3_single) {
        return Some(p);
    }
    parse_b3_multi(
        h.x_b3_traceid.as_deref()?,
        h.x_b3_spanid.as_deref()?,
        h.x_b3_sampled.as_deref(),
    )
}

/// A B3 trace id: 32 hex digits, or 16 (the high half is zero).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let b = s.trim().as_bytes();
    let id = match b.len() {
        32 => hex_bytes::<16>(b)?,
        16 => {
            let low = hex_bytes::<8>(b)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(TraceId(id))
}

fn b3_span_id(s: &str) -> Option<SpanId> {
    let id = hex_bytes::<8>(s.trim().as_bytes())?;
    (id != [0; 8]).then_some(SpanId(id))
}

/// B3 sampling state to W3C flags: `1`, `d` (debug) and `true` sample; `0`/`false` do not;
/// absent defers (taken as sampled, as the caller decided nothing against it).
fn b3_flags(state: Option<&str>) -> Option<u8> {
    match state.map(str::trim) {
        None | Some("1" | "d" | "true") => Some(1),
        Some("0" | "false") => Some(0),
        Some(_) => None,
    }
}

/// Parses `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`; a lone sampling
/// state (`b3: 0`) carries no context.
pub fn parse_b3_single(value: &str) -> Option<ParentContext> {
    let mut parts = value.trim().split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = b3_span_id(parts.next()?)?;
    let flags = b3_flags(parts.next())?;
    Some(ParentContext {
        trace_id,
        span_id,
        flags,
        trace_state: None,
    })
}

/// Parses the B3 multi headers.
pub fn parse_b3_multi(trace: &str, span: &str, sampled: Option<&str>) -> Option<ParentContext> {
    Some(ParentContext {
        trace_id: b3_trace_id(trace)?,
        span_id: b3_span_id(span)?,
        flags: b3_flags(sampled)?,
        trace_state: None,
    })
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when invalid.
///
/// Per the W3C spec, version `ff` and all-zero ids are invalid; a future version is read by
/// its first four fields.
pub fn parse_traceparent(value: &str) -> Option<ParentContext> {
    let v = value.trim().as_bytes();
    let mut parts = v.split(|&b| b == b'-');
    let version = hex_bytes::<1>(parts.next()?)?[0];
    let trace = hex_bytes::<16>(parts.next()?)?;
    let span = hex_bytes::<8>(parts.next()?)?;
    let flags = hex_bytes::<1>(parts.next()?)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some(ParentContext {
        trace_id: TraceId(trace),
        span_id: SpanId(span),
        flags,
        trace_state: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_headers() {
        let p =
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(p.trace_id.to_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(p.span_id.to_hex(), "b7ad6b7169203331");
        assert_eq!(p.flags, 1);
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-xyz")
                .is_some()
        );
    }

    #[test]
    fn reads_b3_single_and_multi() {
        let p =
            parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .unwrap();
        assert_eq!(p.trace_id.to_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(p.span_id.to_hex(), "e457b5a2e4d86bd1");
        assert_eq!(p.flags, 1);
        let p = parse_b3_single("64fe8b2a57d3eff7-e457b5a2e4d86bd1-0").unwrap();
        assert_eq!(p.trace_id.to_hex(), "000000000000000064fe8b2a57d3eff7");
        assert_eq!(p.flags, 0);
        assert!(parse_b3_single("0").is_none());
        assert!(parse_b3_single("zz-e457b5a2e4d86bd1").is_none());
        let p = parse_b3_multi("64fe8b2a57d3eff7", "e457b5a2e4d86bd1", Some("d")).unwrap();
        assert_eq!(p.flags, 1);
        assert!(parse_b3_multi("64fe8b2a57d3eff7", "e457b5a2e4d86bd1", Some("x")).is_none());
    }

    #[test]
    fn headers_prefer_traceparent_and_keep_tracestate() {
        let h = TraceHeaders {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: Some("vendor=x".into()),
            b3: Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1".into()),
            ..TraceHeaders::default()
        };
        let p = parent_from_headers(&h).unwrap();
        assert_eq!(p.span_id.to_hex(), "b7ad6b7169203331");
        assert_eq!(p.trace_state.as_deref(), Some("vendor=x"));
        let h = TraceHeaders {
            x_b3_traceid: Some("80f198ee56343ba864fe8b2a57d3eff7".into()),
            x_b3_spanid: Some("e457b5a2e4d86bd1".into()),
            ..TraceHeaders::default()
        };
        assert_eq!(parent_from_headers(&h).unwrap().flags, 1);
        assert!(parent_from_headers(&TraceHeaders::default()).is_none());
    }

    #[test]
    fn rejects_invalid_headers() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }
}
