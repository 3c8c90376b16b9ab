//! CPU time of a process, for the per-path cost figures of `cargo xtask vm-test --requests N`.

/// Nanoseconds `pid`'s live threads have run (the first field of each
/// `/proc/PID/task/TID/schedstat`); `None` when the kernel has no schedstat files or the
/// process is gone. Threads that exit while they are read are left out.
pub(crate) fn on_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read: it no longer counts.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(ns);
            any = true;
        }
    }
    any.then_some(total)
}

/// `after - before` per request in microseconds, formatted for the result line.
pub(crate) fn per_request_us(before: Option<u64>, after: Option<u64>, requests: usize) -> String {
    match (before, after) {
        (Some(b), Some(a)) if requests > 0 => {
            #[expect(
                clippy::cast_precision_loss,
                reason = "CPU nanoseconds of one run are far below 2^52"
            )]
            let us = a.saturating_sub(b) as f64 / 1000.0 / requests as f64;
            format!("{us:.1}")
        }
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_run() {
        let ns = on_cpu_ns(std::process::id()).unwrap();
        assert!(ns > 0);
    }

    #[test]
    fn per_request_is_microseconds() {
        assert_eq!(per_request_us(Some(1_000), Some(2_001_000), 100), "20.0");
        assert_eq!(per_request_us(None, Some(1), 1), "?");
        assert_eq!(per_request_us(Some(1), Some(2), 0), "?");
    }
}
