//! The CPU table of `cargo xtask vm-test`: what each capture path costs per request, measured
//! in the same guest against the same load, as a ratio to the run with no agent (`--path none`).

use std::fmt::Write as _;

use super::Row;

/// One line per kernel, one column per path: `server us + agent us` per request and, when the
/// row has a `none` run, `(x ratio)` of that sum to the uninstrumented server's CPU. `None`
/// when no cell measured CPU (older drivers, failed runs).
pub(super) fn table(rows: &[Row], paths: &[&str]) -> Option<String> {
    let measured = rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|(_, c)| c.server_cpu_us.is_some());
    if !measured {
        return None;
    }
    let mut out = String::from(
        "CPU per request, microseconds (server + agent; ratio to the server with no agent)\n",
    );
    let _ = write!(out, "{:<10}", "kernel");
    for path in paths {
        let _ = write!(out, "  {path:<28}");
    }
    out.push('\n');
    for row in rows {
        let baseline = row
            .cells
            .iter()
            .find(|(p, _)| p == "none")
            .and_then(|(_, c)| c.server_cpu_us)
            .filter(|b| *b > 0.0);
        let _ = write!(out, "{:<10}", row.kernel.series.name);
        for path in paths {
            let cell = row.cells.iter().find(|(p, _)| p == path).map(|(_, c)| c);
            let text = cell.and_then(|c| {
                let server = c.server_cpu_us?;
                let agent = c.agent_cpu_us.unwrap_or(0.0);
                let ratio = baseline
                    .map(|b| format!(" ({:.2}x)", (server + agent) / b))
                    .unwrap_or_default();
                Some(if c.agent_cpu_us.is_some() {
                    format!("{server:.1} + {agent:.1}{ratio}")
                } else {
                    format!("{server:.1}{ratio}")
                })
            });
            let _ = write!(out, "  {:<28}", text.as_deref().unwrap_or("-"));
        }
        out.push('\n');
    }
    Some(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vm::{Cell, kernels, qemu};

    fn row(lines: &[&str]) -> Row {
        Row {
            kernel: kernels::Kernel {
                series: kernels::SERIES[0],
                package: "linux-image".to_owned(),
                version: "1".to_owned(),
                url: String::new(),
                release: "5.10.0-46-amd64".to_owned(),
                vmlinuz: std::path::PathBuf::new(),
            },
            cells: lines.iter().filter_map(|l| Cell::parse(l)).collect(),
            end: qemu::End::Success,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn ratios_are_against_the_run_without_agent() {
        let r = row(&[
            "mop-vm: path=none kernel=k expected=2000 server_spans=0 client_spans=0 \
             server_cpu_us=40.0 agent_cpu_us=? seconds=3.0 result=pass detail=-",
            "mop-vm: path=fentry kernel=k expected=2000 server_spans=2000 client_spans=2000 \
             server_cpu_us=44.0 agent_cpu_us=16.0 seconds=3.0 result=pass detail=-",
        ]);
        let text = table(&[r], &["none", "fentry"]).unwrap();
        assert!(text.contains("40.0 (1.00x)"), "{text}");
        assert!(text.contains("44.0 + 16.0 (1.50x)"), "{text}");
    }

    #[test]
    fn no_table_without_measurements() {
        let r = row(
            &["mop-vm: path=fentry kernel=k expected=12 server_spans=12 \
                       client_spans=12 seconds=3.0 result=pass detail=-"],
        );
        assert!(table(&[r], &["fentry"]).is_none());
    }
}
