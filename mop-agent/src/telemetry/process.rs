//! The agent's own CPU time and memory, read from `/proc/self` when metrics are scraped.
//!
//! An agent on every node is judged by what it costs the node; these are the standard
//! `process_*` families Prometheus client libraries export, so existing dashboards and alerts
//! (`rate(process_cpu_seconds_total[5m])`, `process_resident_memory_bytes`) work unchanged.

use std::path::Path;

/// A snapshot of the agent process's resource use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors (BPF maps, programs and links included).
    pub open_fds: u64,
    /// Start of the process, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads the agent's own figures; `None` when `/proc` is not readable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = sysconf(libc::_SC_CLK_TCK)?;
        let page = sysconf(libc::_SC_PAGESIZE)?;
        let mut stats = parse(&stat, &boot, ticks, page)?;
        stats.open_fds = count_entries(Path::new("/proc/self/fd"));
        Some(stats)
    }
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a system constant.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn count_entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

/// Parses `/proc/self/stat` (fields after the parenthesised command, which may hold spaces
/// and parentheses) and the boot time from `/proc/stat`.
fn parse(
    stat: &str,
    proc_stat: &str,
    ticks_per_second: u64,
    page_size: u64,
) -> Option<ProcessStats> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 (state) on; utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let boot_time: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "CPU ticks and start offsets are far below 2^52"
    )]
    let seconds = |t: u64| t as f64 / ticks_per_second as f64;
    #[expect(
        clippy::cast_precision_loss,
        reason = "boot time in seconds fits in f64"
    )]
    let boot = boot_time as f64;
    Some(ProcessStats {
        cpu_seconds: seconds(field(14)? + field(15)?),
        resident_bytes: field(24)?.saturating_mul(page_size),
        virtual_bytes: field(23)?,
        open_fds: 0,
        start_time_seconds: boot + seconds(field(22)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_stat_line_with_a_tricky_command() {
        // A real line of a process named "a b) c", fields as the kernel writes them.
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 2100 0 0 0 250 75 0 0 20 0 9 0 \
                    123456 1073741824 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
                    0 0 0";
        let proc_stat = "cpu  1 2 3\nbtime 1764000000\nprocesses 10\n";
        let s = parse(stat, proc_stat, 100, 4096).unwrap();
        assert!((s.cpu_seconds - 3.25).abs() < 1e-9, "{s:?}");
        assert_eq!(s.resident_bytes, 5000 * 4096);
        assert_eq!(s.virtual_bytes, 1_073_741_824);
        assert!(
            (s.start_time_seconds - 1_764_001_234.56).abs() < 1e-6,
            "{s:?}"
        );
    }

    #[test]
    fn truncated_input_is_none() {
        assert_eq!(parse("4242 (x) S 1 2", "btime 1\n", 100, 4096), None);
        assert_eq!(parse("garbage", "btime 1\n", 100, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().unwrap();
        assert!(s.resident_bytes > 0 && s.open_fds >= 3, "{s:?}");
        assert!(s.start_time_seconds > 1.0e9, "{s:?}");
    }
}
