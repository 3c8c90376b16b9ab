//! Which traces are kept: the OpenTelemetry samplers, applied when a trace starts (or is
//! joined) and inherited by every span of the trace, so a trace is kept or dropped whole.

use super::{context::ParentContext, model::TraceId};
use crate::config::sampler::SamplerConfig;

/// W3C flag: the trace is sampled.
const SAMPLED: u8 = 1;

/// A sampling decision maker.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    config: SamplerConfig,
}

/// Keeps `ratio` of traces, by the trace id's low 64 bits (the same decision on every node
/// that sees the trace, as the `TraceIdRatioBased` sampler specifies).
fn ratio_keeps(ratio: f64, id: &TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&id.0[8..]);
    // ratio * 2^64, truncated: the integer threshold the low bits are compared with.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 < ratio < 1, so the product is within u64"
    )]
    let threshold = (ratio * 18_446_744_073_709_551_616.0) as u64;
    u64::from_be_bytes(low) < threshold
}

impl Sampler {
    /// The sampler of the configuration.
    pub fn new(config: SamplerConfig) -> Self {
        Self { config }
    }

    /// Flags of a new trace.
    pub fn flags_for_root(&self, id: &TraceId) -> u8 {
        let keep = match self.config {
            SamplerConfig::AlwaysOn | SamplerConfig::ParentBasedAlwaysOn => true,
            SamplerConfig::AlwaysOff | SamplerConfig::ParentBasedAlwaysOff => false,
            SamplerConfig::TraceIdRatio(r) | SamplerConfig::ParentBasedTraceIdRatio(r) => {
                ratio_keeps(r, id)
            }
        };
        if keep { SAMPLED } else { 0 }
    }

    /// Flags of a trace joined from a caller's header: parent-based samplers follow the
    /// caller's decision.
    pub fn flags_for_remote(&self, parent: &ParentContext) -> u8 {
        let keep = match self.config {
            SamplerConfig::ParentBasedAlwaysOn
            | SamplerConfig::ParentBasedAlwaysOff
            | SamplerConfig::ParentBasedTraceIdRatio(_) => parent.flags & SAMPLED != 0,
            SamplerConfig::AlwaysOn => true,
            SamplerConfig::AlwaysOff => false,
            SamplerConfig::TraceIdRatio(r) => ratio_keeps(r, &parent.trace_id),
        };
        (parent.flags & !SAMPLED) | if keep { SAMPLED } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::model::SpanId;

    fn id(low: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(b)
    }

    #[test]
    fn ratio_splits_by_the_low_bits() {
        let s = Sampler::new(SamplerConfig::TraceIdRatio(0.25));
        assert_eq!(s.flags_for_root(&id(0)), 1);
        assert_eq!(s.flags_for_root(&id(u64::MAX / 4 - 1)), 1);
        assert_eq!(s.flags_for_root(&id(u64::MAX / 4 + 1)), 0);
        // Over many ids, about the ratio.
        let kept = (0..10_000u64)
            .filter(|i| s.flags_for_root(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))) == 1)
            .count();
        assert!((2_300..2_700).contains(&kept), "{kept}");
    }

    #[test]
    fn parent_based_follows_the_caller() {
        let parent = |flags| ParentContext {
            trace_id: id(u64::MAX),
            span_id: SpanId([1; 8]),
            flags,
            trace_state: None,
        };
        let s = Sampler::new(SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(s.flags_for_remote(&parent(0)), 0);
        assert_eq!(s.flags_for_remote(&parent(1)), 1);
        assert_eq!(s.flags_for_root(&id(7)), 1);
        let s = Sampler::new(SamplerConfig::ParentBasedTraceIdRatio(0.0));
        assert_eq!(s.flags_for_remote(&parent(1)), 1);
        assert_eq!(s.flags_for_root(&id(7)), 0);
        let s = Sampler::new(SamplerConfig::AlwaysOff);
        assert_eq!(s.flags_for_remote(&parent(1)), 0);
    }
}
