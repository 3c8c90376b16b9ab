//! Least privilege: the agent refuses to start without the capabilities it needs (one line
//! naming the first one missing), works with exactly those the `DaemonSet` grants, drops all
//! but the four it still needs (and `CAP_SYS_ADMIN` when given) once its programs are
//! attached, and never logs secrets or bodies.

use std::{fs, time::Duration};

use crate::{
    agent::{self, Agent},
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH},
        python::PythonServer,
    },
    tests::{Peer, Req, assert_count, check_server_span, collect, ports_config},
    util,
};

/// The capabilities the `DaemonSet` grants (deploy/lib/agent.libsonnet, kernels 5.11+), as
/// `setpriv` names them.
const DAEMONSET_CAPS: &[&str] = &[
    "bpf",
    "perfmon",
    "net_admin",
    "sys_ptrace",
    "dac_read_search",
];

/// The capabilities the agent keeps after attach (`capture::privileges::KEPT`) when it was not
/// given `CAP_SYS_ADMIN`: bits of `CAP_DAC_READ_SEARCH`, `CAP_SYS_PTRACE`, `CAP_PERFMON`,
/// `CAP_BPF`.
const KEPT_AFTER_ATTACH: u64 = (1 << 2) | (1 << 19) | (1 << 38) | (1 << 39);

/// `CAP_SYS_ADMIN`, which the agent also keeps when run as root: the uprobe PMU of this kernel
/// (6.18) requires it for the TLS probes of processes discovered later.
const SYS_ADMIN: u64 = 1 << 21;

/// The bits of [`DAEMONSET_CAPS`] (`CAP_NET_ADMIN` is 12).
fn daemonset_bits() -> u64 {
    KEPT_AFTER_ATTACH | (1 << 12)
}

/// The capability lines of every thread of `pid`: `(tid, CapEff, CapPrm, CapInh, CapBnd,
/// CapAmb, NoNewPrivs)`.
fn thread_capabilities(pid: u32) -> Vec<(u32, [u64; 5], bool)> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(t.path().join("status")).ok()?;
            let hex = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                    .unwrap_or_else(|| panic!("{name} in the status of thread {tid}"))
            };
            let nnp = status.lines().any(|l| l == "NoNewPrivs:\t1");
            let sets = ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"].map(hex);
            Some((tid, sets, nnp))
        })
        .collect()
}

/// Asserts that every thread of the agent runs with exactly `kept` effective and permitted,
/// nothing inheritable or ambient, `bounding` as its bounding set and `no_new_privs` set.
fn assert_only_kept_capabilities(pid: u32, kept: u64, bounding: u64) {
    let threads = thread_capabilities(pid);
    assert!(threads.len() > 1, "one thread only: {threads:?}");
    for (tid, [eff, prm, inh, bnd, amb], nnp) in threads {
        assert_eq!(
            (eff, prm, inh, amb),
            (kept, kept, 0, 0),
            "thread {tid}: effective, permitted, inheritable, ambient (hex {eff:x} {prm:x})"
        );
        assert_eq!(bnd, bounding, "thread {tid}: bounding set {bnd:x}");
        assert!(nnp, "thread {tid}: no_new_privs not set");
    }
}

/// Runs a valid config through `wrapper` and asserts the agent refuses at once: non-zero exit,
/// exactly one line on stderr, naming `capability`.
fn refuses_without(wrapper: &[&str], capability: &str) {
    refuses_with_config(
        wrapper,
        &ports_config(&util::free_port().to_string()),
        capability,
    );
}

/// [`refuses_without`] with this config.
fn refuses_with_config(wrapper: &[&str], config: &str, capability: &str) {
    let exit = agent::run_config_to_exit(wrapper, config, &[], &[]);
    let lines = exit.stderr_lines();
    assert!(
        !exit.status.success(),
        "agent succeeded without {capability}: {exit:?}"
    );
    assert!(
        exit.elapsed < Duration::from_secs(5),
        "agent took {:?} to refuse (expected at once)",
        exit.elapsed
    );
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got {}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    // The line may go on to list every capability the agent wants; the first one it names
    // must be the one that is missing.
    assert_eq!(
        first_capability(&lines[0]),
        Some(capability),
        "the line does not name {capability} first: {}",
        lines[0]
    );
    assert!(
        exit.stdout.trim().is_empty(),
        "stdout not empty: {}",
        exit.stdout
    );
}

/// The first `CAP_*` name in `line`.
fn first_capability(line: &str) -> Option<&str> {
    let start = line.find("CAP_")?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// As `nobody` with no capability at all: one line naming `CAP_BPF` (the first capability
/// anything needs).
#[test]
fn refuses_as_nobody() {
    let _serial = util::serial();
    refuses_without(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ],
        "CAP_BPF",
    );
}

/// As root without `CAP_BPF` (and without `CAP_SYS_ADMIN`, which the kernel accepts in its
/// place): one line naming `CAP_BPF`.
#[test]
fn refuses_without_cap_bpf() {
    let _serial = util::serial();
    refuses_without(
        &["setpriv", "--bounding-set=-bpf,-sys_admin", "--"],
        "CAP_BPF",
    );
}

/// As root without `CAP_PERFMON` (nor `CAP_SYS_ADMIN`): tracing programs cannot load; one line
/// naming `CAP_PERFMON`.
#[test]
fn refuses_without_cap_perfmon() {
    let _serial = util::serial();
    refuses_without(
        &["setpriv", "--bounding-set=-perfmon,-sys_admin", "--"],
        "CAP_PERFMON",
    );
}

/// As root without `CAP_NET_ADMIN` (nor `CAP_SYS_ADMIN`) but with the TCP-option carrier on
/// (`ebpf.context_propagation: tcp`): its `sock_ops` program cannot attach to the cgroup; one
/// line naming `CAP_NET_ADMIN`.
#[test]
fn refuses_without_cap_net_admin_for_the_tcp_carrier() {
    let _serial = util::serial();
    let mut config = ports_config(&util::free_port().to_string());
    config.push_str(super::TCP_CONTEXT);
    refuses_with_config(
        &["setpriv", "--bounding-set=-net_admin,-sys_admin", "--"],
        &config,
        "CAP_NET_ADMIN",
    );
}

/// With exactly the `DaemonSet` capabilities (uid 0, no `CAP_SYS_ADMIN`) and the TCP-option
/// carrier on (what `CAP_NET_ADMIN` is granted for): the agent starts, attaches its `sock_ops`
/// program, makes the same spans and exits 0. nginx links libssl: its TLS probes either attach
/// (kernels that let `CAP_PERFMON` create uprobes) or the refusal is logged as a warning, never
/// silently.
#[test]
fn runs_with_daemonset_capabilities_only() {
    let _serial = util::serial();
    let bounding = format!(
        "--bounding-set=-all,{}",
        DAEMONSET_CAPS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let nginx = Nginx::start(1);
    let agent = Agent::start_wrapped(
        &["setpriv", &bounding, "--"],
        &super::config_for(nginx.port, true),
        &[],
    );
    assert!(
        agent.log().contains("trace context travels in TCP options"),
        "the sock_ops carrier did not attach:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains("Attached TLS probes.") || log.contains("The kernel refuses TLS probes"),
        "nginx's libssl neither got TLS probes nor a warning about the refusal:\n{log}"
    );
    // The DaemonSet does not grant CAP_SETPCAP: the bounding set cannot shrink, but the
    // permitted and effective sets do (CAP_NET_ADMIN goes), and no_new_privs holds it there.
    assert_only_kept_capabilities(agent.pid(), KEPT_AFTER_ATTACH, daemonset_bits());
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let workers = nginx.worker_pids().to_vec();
    let spans = collect(agent, &workers, 1);
    assert_count(&spans, 1, "one GET /ok");
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    check_server_span(&spans[0], &Req::get(OK_PATH, 200, nginx::OK_LEN), &peer);
}

/// As root: once attached, every thread of the agent keeps only `CAP_BPF`, `CAP_PERFMON`,
/// `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH` and `CAP_SYS_ADMIN` (bounding set too, `no_new_privs`
/// set; `CAP_NET_ADMIN`, `CAP_DAC_OVERRIDE`, `CAP_SETUID` and the rest are gone), and what it
/// still has to do works: a plain and a TLS server started after the drop are discovered, the
/// TLS one gets uprobes on its libssl, and both make their spans.
#[test]
fn drops_capabilities_after_attach() {
    let _serial = util::serial();
    let (plain_port, tls_port) = (util::free_port(), util::free_port());
    let mut config = ports_config(&format!("{plain_port},{tls_port}"));
    // The servers pick their own ports: select them by what they run instead.
    config.push_str("    - exe_path: \"*/python3*\"\n");
    let agent = Agent::start(&config, &[]);
    let kept = KEPT_AFTER_ATTACH | SYS_ADMIN;
    assert_only_kept_capabilities(agent.pid(), kept, kept);
    assert!(
        agent.log().contains(
            "kept=\"CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE,CAP_PERFMON,CAP_BPF,CAP_SYS_ADMIN\""
        ),
        "no log line naming the kept capabilities:\n{}",
        agent.log()
    );
    let plain = PythonServer::http11(&[]);
    let certs = crate::peers::tls::Certs::generate();
    let tls = PythonServer::https(&certs);
    crate::tests::wait_for_discovery();
    curl(&[Transfer::get(plain.url("/ok"))]);
    curl(&[Transfer::get(tls.url("/ok")).insecure()]);
    let pids = [plain.pid(), tls.pid()];
    let spans = collect(agent, &pids, 2);
    assert_count(&spans, 2, "one GET /ok to each server");
    for (server, span) in [(&plain, "http"), (&tls, "https")] {
        let ours: Vec<&crate::span::Span> =
            spans.iter().filter(|s| s.pid == server.pid()).collect();
        assert_eq!(ours.len(), 1, "{span}: {}", crate::span::show(&spans));
        assert_eq!(ours[0].str_attr("url.path"), "/ok", "{}", ours[0]);
        assert_eq!(ours[0].int_attr("http.response.status_code"), 200);
        assert_eq!(ours[0].str_attr("url.scheme"), span, "{}", ours[0]);
    }
}

/// Secrets that cross the wire never reach the agent's output at its most verbose: an
/// `Authorization` header, a cookie, a request body and a response body, at `log_level: debug`,
/// appear neither on stderr (logs) nor on stdout (spans).
#[test]
fn no_secret_or_body_in_debug_logs() {
    let _serial = util::serial();
    let server = PythonServer::http11(&[]);
    let mut config = ports_config(&server.port.to_string());
    config.push_str("log_level: debug\n");
    let agent = Agent::start(&config, &[]);
    let dir = util::TempDir::new("secrets");
    let body = dir.write("body", "password=BODYSECRET-71c3&card=4111111111111111");
    curl(&[
        Transfer::post(server.url("/upload"), &body)
            .header("Authorization: Bearer TOKENSECRET-9f2e")
            .header("Cookie: session=COOKIESECRET-5d1a"),
        Transfer::get(server.url("/ok")).header("X-Api-Key: KEYSECRET-0b7d"),
    ]);
    agent.wait_for_spans(crate::tests::SPAN_WAIT, |s| s.len() >= 2);
    let (spans, log) = agent.stop_and_log(libc::SIGTERM);
    crate::tests::assert_only_from(&spans, &[server.pid()]);
    assert_count(&spans, 2, "the POST and the GET");
    let printed = spans
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join("\n");
    let secrets = [
        "BODYSECRET",
        "4111111111111111",
        "TOKENSECRET",
        "Bearer",
        "COOKIESECRET",
        "KEYSECRET",
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the debug log:\n{log}");
        assert!(
            !printed.contains(secret),
            "{secret} in the spans:\n{printed}"
        );
    }
    assert!(log.contains("DEBUG"), "no debug line logged at all:\n{log}");
}
