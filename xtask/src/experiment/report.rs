//! The files an experiment leaves in `experiments/results/<name>/`: `report.md` (summary table
//! first, then plots, method, environment, details), the raw data as CSV and JSON, and PNG
//! plots drawn by `experiments/plots/plot.py` from `data.json`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use serde_json::Value;

use super::Ctx;
use crate::cmd;

/// A report being written.
pub(crate) struct Report {
    pub(crate) dir: PathBuf,
    name: &'static str,
    title: String,
    summary: String,
    body: String,
    data: serde_json::Map<String, Value>,
}

impl Report {
    /// A report for experiment `name`; its directory is emptied of old files.
    pub(crate) fn new(ctx: &Ctx, name: &'static str, title: &str) -> anyhow::Result<Self> {
        let dir = ctx.out.join(name);
        if dir.exists() {
            for e in std::fs::read_dir(&dir)? {
                let p = e?.path();
                if p.is_file() {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut data = serde_json::Map::new();
        data.insert("experiment".into(), Value::from(name));
        data.insert("smoke".into(), Value::from(ctx.smoke));
        data.insert("environment".into(), ctx.env.clone());
        Ok(Self {
            dir,
            name,
            title: title.to_owned(),
            summary: String::new(),
            body: String::new(),
            data,
        })
    }

    /// Markdown for the top of the report (the summary table and its verdict lines).
    pub(crate) fn summary(&mut self, md: &str) {
        self.summary.push_str(md);
    }

    /// Markdown for the body.
    pub(crate) fn body(&mut self, md: &str) {
        self.body.push_str(md);
    }

    /// Puts `value` under `key` in `data.json` (what the plots read).
    pub(crate) fn data(&mut self, key: &str, value: Value) {
        self.data.insert(key.to_owned(), value);
    }

    /// Writes `file` as CSV.
    pub(crate) fn csv(
        &self,
        file: &str,
        header: &[&str],
        rows: &[Vec<String>],
    ) -> anyhow::Result<()> {
        let mut text = header.join(",");
        text.push('\n');
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .map(|c| {
                    if c.contains([',', '"', '\n']) {
                        format!("\"{}\"", c.replace('"', "\"\""))
                    } else {
                        c.clone()
                    }
                })
                .collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        std::fs::write(self.dir.join(file), text)?;
        Ok(())
    }

    /// Writes `data.json`, draws the plots and writes `report.md`.
    pub(crate) fn finish(self, method: &str) -> anyhow::Result<PathBuf> {
        let data = Value::Object(self.data);
        std::fs::write(
            self.dir.join("data.json"),
            serde_json::to_string_pretty(&data)? + "\n",
        )?;
        let pngs = plot(self.name, &self.dir)?;
        let mut md = format!("# {}\n\n", self.title);
        let smoke = data["smoke"].as_bool().unwrap_or(false);
        if smoke {
            md.push_str("> **Smoke run**: seconds of load, to prove the pipeline; the numbers mean nothing.\n\n");
        }
        let _ = write!(md, "## Summary\n\n{}\n", self.summary);
        if !pngs.is_empty() {
            md.push_str("## Plots\n\n");
            for p in &pngs {
                let _ = writeln!(md, "![{p}]({p})\n");
            }
        }
        let _ = write!(md, "## Method\n\n{method}\n");
        let _ = write!(
            md,
            "## Environment\n\n{}\n",
            super::runner::environment_md(&data["environment"])
        );
        md.push_str(&self.body);
        md.push_str("\n## Raw data\n\n");
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| {
                Path::new(f)
                    .extension()
                    .is_some_and(|e| e == "csv" || e == "json")
            })
            .collect();
        files.sort();
        for f in files {
            let _ = writeln!(md, "- [{f}]({f})");
        }
        let _ = writeln!(
            md,
            "\nReproduce: `cargo xtask experiment {}` (as root; about the run time stated above).",
            self.name
        );
        let path = self.dir.join("report.md");
        std::fs::write(&path, md)?;
        eprintln!("experiment {}: wrote {}", self.name, path.display());
        Ok(path)
    }
}

/// Runs `experiments/plots/plot.py NAME DIR`; returns the PNG files it wrote.
fn plot(name: &str, dir: &Path) -> anyhow::Result<Vec<String>> {
    let script = cmd::workspace_root().join("experiments/plots/plot.py");
    let out = cmd::output(
        Command::new("python3")
            .arg(&script)
            .arg(name)
            .arg(dir)
            .env("MPLBACKEND", "Agg"),
    )
    .context("drawing the plots (matplotlib: run `cargo xtask setup`)")?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| {
            Path::new(l)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .map(str::to_owned)
        .collect())
}

/// A Markdown table.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut md = format!("| {} |\n|", header.join(" | "));
    for _ in header {
        md.push_str("---|");
    }
    md.push('\n');
    for r in rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    md
}
