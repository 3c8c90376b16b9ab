//! Converting the kernel's `CLOCK_MONOTONIC` timestamps to Unix time.

/// Nanoseconds of `clock`.
fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `CLOCK_MONOTONIC` now, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

/// Unix time now, in nanoseconds.
pub fn realtime_ns() -> u64 {
    now_ns(libc::CLOCK_REALTIME)
}

/// Maps monotonic timestamps to Unix time with an offset measured when created (refresh it
/// now and then to follow clock adjustments).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: u64,
}

impl WallClock {
    /// Measures the offset between the two clocks now.
    pub fn measure() -> Self {
        let mono = monotonic_ns();
        let real = realtime_ns();
        Self {
            offset_ns: real.saturating_sub(mono),
        }
    }

    /// A monotonic timestamp as Unix nanoseconds.
    pub fn to_unix_ns(self, monotonic: u64) -> u64 {
        monotonic.saturating_add(self.offset_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_now() {
        let clock = WallClock::measure();
        let unix = clock.to_unix_ns(monotonic_ns());
        let real = realtime_ns();
        assert!(real.abs_diff(unix) < 50_000_000, "{real} vs {unix}");
    }
}
