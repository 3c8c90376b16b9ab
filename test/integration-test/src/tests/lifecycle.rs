//! Start-up and shut-down: privileges, signals, and what stays in the kernel afterwards.

use std::{collections::BTreeSet, fs, time::Duration};

use super::{Peer, Req, assert_count, check_server_span, collect, ports_config};
use crate::{
    agent::{self, Agent},
    bpf,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH},
    },
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

/// `CAP_SYS_ADMIN`'s bit in the capability sets of `/proc/PID/status`.
const CAP_SYS_ADMIN_BIT: u32 = 21;

/// Runs the agent on nginx with `signal` as the stop signal: exit 0, the one span flushed, and
/// every program it loaded gone from the kernel afterwards.
fn stop_detaches_everything(signal: libc::c_int) {
    let nginx = Nginx::start(1);
    let agent = Agent::start(&ports_config(&nginx.port.to_string()), &[]);
    let held = bpf::programs_held_by(agent.pid());
    let loaded_by_us: Vec<bpf::Program> = bpf::mop_programs()
        .into_iter()
        .filter(|p| held.contains(&p.id))
        .collect();
    assert!(
        !loaded_by_us.is_empty(),
        "the running agent holds no `{}` program (held ids {held:?}, loaded {:?})",
        bpf::PROGRAM_PREFIX,
        bpf::mop_programs()
    );
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    let workers = nginx.worker_pids().to_vec();
    let spans = collect_with(agent, &workers, signal);
    let service = nginx.service();
    let peer = Peer {
        service: &service,
        pids: &workers,
        port: nginx.port,
        version: "1.1",
    };
    assert_count(&spans, 1, "one GET /ok");
    check_server_span(&spans[0], &Req::get(OK_PATH, 200, nginx::OK_LEN), &peer);
    // The kernel frees programs asynchronously once their last reference is gone.
    let ours: BTreeSet<u64> = loaded_by_us.iter().map(|p| p.id).collect();
    let mut left = Vec::new();
    let gone = util::wait_until(Duration::from_secs(5), || {
        left = bpf::mop_programs()
            .into_iter()
            .filter(|p| ours.contains(&p.id))
            .collect();
        left.is_empty()
    });
    assert!(
        gone,
        "programs still loaded after the agent exited: {left:?}"
    );
    // Nothing of ours may survive without a holder either (pinned, or attached to a cgroup
    // with BPF_PROG_ATTACH); `mop_` programs that another running agent holds are not ours.
    let mut orphans = Vec::new();
    let none = util::wait_until(Duration::from_secs(5), || {
        let held = bpf::programs_held_by_anyone();
        orphans = bpf::mop_programs()
            .into_iter()
            .filter(|p| !held.contains(&p.id))
            .collect();
        orphans.is_empty()
    });
    assert!(
        none,
        "`{}` programs loaded that no process holds (pinned or left attached): {orphans:?}",
        bpf::PROGRAM_PREFIX
    );
}

fn collect_with(agent: Agent, pids: &[u32], signal: libc::c_int) -> Vec<crate::span::Span> {
    agent.wait_for_spans(super::SPAN_WAIT, |s| {
        s.iter().any(|s| pids.contains(&s.pid))
    });
    let spans = agent.stop_with(signal);
    super::assert_only_from(&spans, pids);
    spans
}

/// SIGTERM: exit 0, spans flushed, no program left in the kernel.
#[test]
fn sigterm_exits_zero_and_detaches() {
    let _serial = util::serial();
    stop_detaches_everything(libc::SIGTERM);
}

/// SIGINT: the same as SIGTERM.
#[test]
fn sigint_exits_zero_and_detaches() {
    let _serial = util::serial();
    stop_detaches_everything(libc::SIGINT);
}

/// Runs a valid config through `wrapper` and asserts the agent refuses at once: non-zero exit,
/// exactly one line on stderr, naming `capability`.
fn refuses_without(wrapper: &[&str], capability: &str) {
    let config = ports_config(&util::free_port().to_string());
    let exit = agent::run_config_to_exit(wrapper, &config, &[], &[]);
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

/// With exactly the `DaemonSet` capabilities (uid 0, no `CAP_SYS_ADMIN`): the agent starts,
/// makes the same spans and exits 0.
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
        &ports_config(&nginx.port.to_string()),
        &[],
    );
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff in /proc/PID/status");
    assert_eq!(
        effective & (1 << CAP_SYS_ADMIN_BIT),
        0,
        "the agent runs with CAP_SYS_ADMIN: the wrapper did not drop it"
    );
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
