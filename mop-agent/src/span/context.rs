//! Incoming trace context: parsing the W3C `traceparent` header.

use super::model::{SpanId, TraceId};

/// The caller's span, as an incoming header names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentContext {
    /// The trace to join.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the server span.
    pub span_id: SpanId,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
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
