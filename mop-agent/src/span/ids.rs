//! Trace and span id generation: a xoshiro256++ generator seeded from the kernel's random pool.
//!
//! Ids need uniqueness, not secrecy, and one generator is owned by the span stage, so a fast
//! non-cryptographic generator with a random seed fits.

use super::model::{SpanId, TraceId};

/// Generates W3C trace and span ids.
pub struct IdGenerator {
    s: [u64; 4],
}

impl IdGenerator {
    /// A generator seeded from `getrandom(2)`.
    pub fn from_entropy() -> Self {
        let mut seed = [0u8; 32];
        // SAFETY: getrandom writes at most `seed.len()` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != 32 {
            // Fall back to time and pid; still unique enough to tell traces apart.
            let t = super::clock::realtime_ns() ^ (u64::from(std::process::id()) << 32);
            seed[..8].copy_from_slice(&t.to_le_bytes());
        }
        Self::from_seed(seed)
    }

    /// A generator with a fixed seed (tests).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (i, chunk) in seed.chunks_exact(8).enumerate() {
            s[i] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        if s == [0; 4] {
            s[0] = 0x9e37_79b9_7f4a_7c15;
        }
        Self { s }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A new span id (never all zero, which W3C forbids).
    pub fn span_id(&mut self) -> SpanId {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return SpanId(v.to_be_bytes());
            }
        }
    }

    /// A new trace id (never all zero).
    pub fn trace_id(&mut self) -> TraceId {
        loop {
            let (a, b) = (self.next_u64(), self.next_u64());
            if a | b != 0 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&a.to_be_bytes());
                id[8..].copy_from_slice(&b.to_be_bytes());
                return TraceId(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_distinct_and_nonzero() {
        let mut g = IdGenerator::from_seed([7; 32]);
        let spans: HashSet<_> = (0..10_000).map(|_| g.span_id()).collect();
        assert_eq!(spans.len(), 10_000);
        assert!(!spans.contains(&SpanId([0; 8])));
        assert_ne!(g.trace_id(), g.trace_id());
    }
}
