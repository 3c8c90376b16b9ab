//! Runs the built `mop-agent` binary for `config check`, `config print` and `--version`;
//! none of these need root.

#![expect(
    unused_crate_dependencies,
    reason = "these tests only run the built binary"
)]

use std::process::{Command, Output};

fn mop(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mop-agent"));
    cmd.args(args);
    // Keep the caller's OTLP/OBI settings out of the test.
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name == "KUBECONFIG" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run mop-agent")
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mop-config-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn version_works_without_root() {
    let out = mop(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("mop-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_flags_and_commands() {
    let out = mop(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "--config <FILE>",
        "OTEL_EBPF_CONFIG_PATH",
        "--version",
        "config",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

#[test]
fn check_accepts_a_good_file() {
    let file = temp_file(
        "good.yaml",
        "discovery:\n  instrument:\n    - open_ports: 8443\nlog_level: DEBUG\nebpf:\n  context_propagation: all\n\
         otel_traces_export:\n  endpoint: http://localhost:4318\nprometheus_export:\n  port: 8999\n  path: /metrics\n",
    );
    let out = mop(&["config", "check", file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
}

#[test]
fn check_lists_every_problem_and_fails() {
    let file = temp_file(
        "bad.yaml",
        "discovery:\n  instrument:\n    - open_ports: 80-70\notel_traces_export:\n  protocl: grpc\n  endpoint: collector\n\
         otel_metrics_export:\n  histogram_aggregation: base2_exponential_bucket_histogram\n",
    );
    let out = mop(
        &["config", "check", file.to_str().unwrap()],
        &[("OTEL_EBPF_LOG_LEVEL", "loud")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    for needle in [
        "error: unknown key `otel_traces_export.protocl` (did you mean `otel_traces_export.protocol`?)",
        "error: `otel_metrics_export.histogram_aggregation` is not supported by mop yet",
        "error: `discovery.instrument[0].open_ports`: invalid value `80-70`",
        "error: `otel_traces_export.endpoint`: invalid value `collector`",
        "error: environment variable OTEL_EBPF_LOG_LEVEL: invalid value `loud`",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(needle)),
            "{needle} missing from:\n{stderr}"
        );
    }
}

#[test]
fn check_reports_a_missing_file() {
    let out = mop(&["config", "check", "/nonexistent/mop.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("error: cannot read config file /nonexistent/mop.yaml: ")
    );
}

#[test]
fn print_output_is_accepted_by_check() {
    let file = temp_file("print-src.yaml", "routes:\n  patterns: ['/users/{id}']\n");
    let out = mop(
        &["--config", file.to_str().unwrap(), "config", "print"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret"),
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("endpoint: http://collector:4317"),
        "{printed}"
    );
    assert!(printed.contains("protocol: grpc"), "{printed}");
    assert!(printed.contains("/users/{id}"), "{printed}");
    assert!(
        !printed.contains("secret"),
        "headers must be redacted:\n{printed}"
    );
    let again = temp_file("printed.yaml", &printed);
    let check = mop(&["config", "check", again.to_str().unwrap()], &[]);
    assert!(check.status.success(), "stderr: {}", text(&check.stderr));
}

#[test]
fn print_reads_the_config_path_variable() {
    let file = temp_file("env-path.yaml", "log_level: error\n");
    let out = mop(
        &["config", "print"],
        &[("OTEL_EBPF_CONFIG_PATH", file.to_str().unwrap())],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("log_level: ERROR\n"));
}

#[test]
fn running_without_a_command_validates_first() {
    let file = temp_file("run-bad.yaml", "frobnicate: 1\n");
    let out = mop(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), "error: unknown key `frobnicate`\n");
}
