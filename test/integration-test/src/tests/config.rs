//! Bad configuration: the agent exits non-zero naming the key (and value) before it attaches
//! anything; `config check` and `--version` work without root.

use std::{ffi::OsString, fs, time::Duration};

use crate::{
    agent::{self, Exit},
    util::{self, TempDir},
};

/// The syscalls and `bpf(2)` commands that attach a program somewhere (or open the perf event a
/// tracepoint or probe attaches through).
const ATTACH_CALLS: &[&str] = &[
    "BPF_RAW_TRACEPOINT_OPEN",
    "BPF_LINK_CREATE",
    "BPF_PROG_ATTACH",
    "perf_event_open(",
];

/// The `setpriv` prefix that runs a command as `nobody` with no capability.
const AS_NOBODY: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
];

/// Runs the agent on `yaml` (plus `env`) under strace and asserts: non-zero exit within 5 s,
/// no `ready` line, every string of `named` on stderr, and no attach call at all.
fn rejected(yaml: &str, env: &[(&str, &str)], named: &[&str]) -> Exit {
    let dir = TempDir::new("strace");
    let trace = dir.path().join("strace.log");
    let trace_arg = trace.display().to_string();
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-e",
        "trace=bpf,perf_event_open",
        "-o",
        &trace_arg,
        "--",
    ];
    let exit = agent::run_config_to_exit(&wrapper, yaml, &[], env);
    assert!(
        !exit.status.success(),
        "agent accepted a bad config:\n{yaml}\nenv {env:?}\nstderr:\n{}",
        exit.stderr
    );
    assert!(
        exit.elapsed < Duration::from_secs(5),
        "agent took {:?} to reject a bad config",
        exit.elapsed
    );
    assert!(
        !exit.stderr.lines().any(agent::is_ready_line),
        "agent logged `ready` with a bad config:\n{}",
        exit.stderr
    );
    for name in named {
        assert!(
            exit.stderr.contains(name),
            "stderr does not name `{name}`:\n{}",
            exit.stderr
        );
    }
    let calls = fs::read_to_string(&trace).unwrap_or_else(|e| panic!("reading strace log: {e}"));
    let attached: Vec<&str> = calls
        .lines()
        .filter(|l| ATTACH_CALLS.iter().any(|c| l.contains(c)))
        .collect();
    assert!(
        attached.is_empty(),
        "agent attached before rejecting its config:\n{}",
        attached.join("\n")
    );
    exit
}

/// An unknown top-level key is named.
#[test]
fn unknown_key() {
    let _serial = util::serial();
    rejected(
        "trace_printer: json\nbogus_option: 1\ndiscovery:\n  instrument:\n    - open_ports: \"8080\"\n",
        &[],
        &["bogus_option"],
    );
}

/// A misspelt key inside a selector list is named.
#[test]
fn unknown_nested_key() {
    let _serial = util::serial();
    rejected(
        "trace_printer: json\ndiscovery:\n  instrument:\n    - open_port: \"8080\"\n",
        &[],
        &["open_port"],
    );
}

/// A reversed port range names the key and the value.
#[test]
fn bad_port_range() {
    let _serial = util::serial();
    rejected(
        "trace_printer: json\ndiscovery:\n  instrument:\n    - open_ports: \"9000-8000\"\n",
        &[],
        &["open_ports", "9000-8000"],
    );
}

/// A port above 65535 names the key and the value.
#[test]
fn port_out_of_range() {
    let _serial = util::serial();
    rejected(
        "trace_printer: json\ndiscovery:\n  instrument:\n    - open_ports: \"80,70000\"\n",
        &[],
        &["open_ports", "70000"],
    );
}

/// A value of the wrong type (a list for a string) names the key.
#[test]
fn wrong_type() {
    let _serial = util::serial();
    rejected(
        "trace_printer: [json]\ndiscovery:\n  instrument:\n    - open_ports: \"8080\"\n",
        &[],
        &["trace_printer"],
    );
}

/// A value outside the allowed set names the key and the value.
#[test]
fn bad_printer_value() {
    let _serial = util::serial();
    rejected(
        "trace_printer: yaml_please\ndiscovery:\n  instrument:\n    - open_ports: \"8080\"\n",
        &[],
        &["trace_printer", "yaml_please"],
    );
}

/// An unparsable OTLP endpoint names the key and the value.
#[test]
fn unparsable_endpoint() {
    let _serial = util::serial();
    rejected(
        "otel_traces_export:\n  endpoint: \"::not a url\"\ndiscovery:\n  instrument:\n    - open_ports: \"8080\"\n",
        &[],
        &["endpoint", "::not a url"],
    );
}

/// A bad environment variable is named like a bad key.
#[test]
fn bad_environment_variable() {
    let _serial = util::serial();
    rejected(
        "trace_printer: json\n",
        &[("OTEL_EBPF_OPEN_PORT", "eighty")],
        &["OTEL_EBPF_OPEN_PORT", "eighty"],
    );
}

/// Invalid YAML is reported, not taken for an empty config.
#[test]
fn invalid_yaml() {
    let _serial = util::serial();
    let exit = rejected("trace_printer: json\ndiscovery: [\n", &[], &[]);
    assert!(
        !exit.stderr_lines().is_empty(),
        "no message for invalid YAML"
    );
}

/// `config check FILE` without root: `ok` and exit 0 for a good file; non-zero naming each of
/// two bad keys for a bad one.
#[test]
fn config_check_without_root() {
    let _serial = util::serial();
    let dir = TempDir::new("check");
    let good = dir.write(
        "good.yaml",
        "trace_printer: json\ndiscovery:\n  instrument:\n    - open_ports: \"8080-8089\"\n      exe_path: \"*/nginx\"\n",
    );
    let bad = dir.write(
        "bad.yaml",
        "trace_printer: json\nbogus_option: 1\ndiscovery:\n  instrument:\n    - open_ports: \"9000-8000\"\n",
    );
    let check = |file: &std::path::Path| {
        agent::run_to_exit(
            AS_NOBODY,
            &[
                OsString::from("config"),
                OsString::from("check"),
                file.as_os_str().to_owned(),
            ],
            &[],
        )
    };
    let ok = check(&good);
    assert!(
        ok.status.success(),
        "config check rejected a good file: {ok:?}"
    );
    let bad = check(&bad);
    assert!(
        !bad.status.success(),
        "config check accepted a bad file: {bad:?}"
    );
    for name in ["bogus_option", "open_ports", "9000-8000"] {
        assert!(
            bad.stderr.contains(name),
            "config check does not name `{name}`: {bad:?}"
        );
    }
}

/// `--version` and `--help` without root.
#[test]
fn version_and_help_without_root() {
    let _serial = util::serial();
    let version = agent::run_to_exit(AS_NOBODY, &[OsString::from("--version")], &[]);
    assert!(version.status.success(), "--version failed: {version:?}");
    assert!(
        version.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version does not print {}: {version:?}",
        env!("CARGO_PKG_VERSION")
    );
    let help = agent::run_to_exit(AS_NOBODY, &[OsString::from("--help")], &[]);
    assert!(help.status.success(), "--help failed: {help:?}");
    assert!(
        help.stdout.contains("--config"),
        "--help does not list --config: {help:?}"
    );
}
