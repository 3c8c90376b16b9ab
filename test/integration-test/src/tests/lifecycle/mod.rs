//! Start-up and shut-down: what stays in the kernel after the agent stops (by signal or by a
//! crash, with and without the `sock_ops` program of the TCP-option trace-context carrier), the
//! privileges it runs with ([`privileges`]) and how it weathers overload ([`overload`]).

mod churn;
mod hostile;
mod overload;
mod privileges;
mod soak;

use std::{collections::BTreeSet, time::Duration};

use super::{Peer, Req, assert_count, check_server_span, ports_config};
use crate::{
    agent::Agent,
    bpf,
    peers::{
        curl::{Transfer, curl},
        nginx::{self, Nginx, OK_PATH},
    },
    util,
};

/// The config lines that turn on the TCP-option carrier, whose `sock_ops` program the agent
/// attaches to the cgroup v2 root.
const TCP_CONTEXT: &str = "ebpf:\n  context_propagation: tcp\n";

/// [`ports_config`] for `port`, with the TCP-option carrier when `tcp`.
fn config_for(port: u16, tcp: bool) -> String {
    let mut config = ports_config(&port.to_string());
    if tcp {
        config.push_str(TCP_CONTEXT);
    }
    config
}

/// Runs the agent on nginx with `signal` as the stop signal (with the TCP-option carrier when
/// `tcp`): exit 0, the one span flushed, and every program, link and map it held gone from the
/// kernel afterwards, the `sock_ops` program off the cgroup v2 root.
fn stop_detaches_everything(signal: libc::c_int, tcp: bool) {
    let nginx = Nginx::start(1);
    let agent = Agent::start(&config_for(nginx.port, tcp), &[]);
    let held = held_mop_objects(&agent, tcp);
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
    assert_released(&held);
}

/// What the running agent holds in the kernel: programs (all of them `mop_`), links and maps,
/// none of the three empty; with `tcp` exactly one of the programs is a `sock_ops` program,
/// attached to the cgroup v2 root, and none without.
fn held_mop_objects(agent: &Agent, tcp: bool) -> bpf::Held {
    let held = bpf::held_by(agent.pid());
    let loaded_by_us: Vec<bpf::Program> = bpf::mop_programs()
        .into_iter()
        .filter(|p| held.programs.contains(&p.id))
        .collect();
    assert!(
        !loaded_by_us.is_empty() && !held.links.is_empty() && !held.maps.is_empty(),
        "the running agent holds no `{}` program, link or map (held {held:?}, loaded {:?})",
        bpf::PROGRAM_PREFIX,
        bpf::mop_programs()
    );
    assert_eq!(
        loaded_by_us.len(),
        held.programs.len(),
        "the agent holds programs that are not its own: {held:?}"
    );
    let sock_ops: Vec<u64> = bpf::program_types(&held.programs)
        .into_iter()
        .filter(|(_, kind)| kind == "sock_ops")
        .map(|(id, _)| id)
        .collect();
    if tcp {
        assert_eq!(
            sock_ops.len(),
            1,
            "with {TCP_CONTEXT:?} the agent holds {} sock_ops programs\n{}",
            sock_ops.len(),
            agent.log()
        );
        let root = bpf::cgroup2_root();
        let attached = bpf::cgroup_programs(&root);
        assert!(
            attached.contains(&sock_ops[0]),
            "sock_ops program {} not attached to {} (attached: {attached:?})",
            sock_ops[0],
            root.display()
        );
    } else {
        assert!(
            sock_ops.is_empty(),
            "sock_ops without the carrier: {sock_ops:?}"
        );
    }
    held
}

/// Asserts that every program, link and map in `held` is gone from the kernel (which frees
/// them asynchronously once their last reference is closed), that no `mop_` program is left
/// without a holder (pinned, or attached to a cgroup with `BPF_PROG_ATTACH`), and that nothing
/// is pinned under the BPF filesystem.
fn assert_released(held: &bpf::Held) {
    let mut left = bpf::Held::default();
    let gone = util::wait_until(Duration::from_secs(5), || {
        let keep = |ids: &BTreeSet<u64>, loaded: &BTreeSet<u64>| -> BTreeSet<u64> {
            ids.intersection(loaded).copied().collect()
        };
        left = bpf::Held {
            programs: keep(&held.programs, &bpf::loaded_ids("prog")),
            maps: keep(&held.maps, &bpf::loaded_ids("map")),
            links: keep(&held.links, &bpf::loaded_ids("link")),
        };
        left.is_empty()
    });
    assert!(
        gone,
        "objects still loaded after the agent exited: {left:?}"
    );
    // `mop_` programs that another running agent holds are not ours.
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
    let root = bpf::cgroup2_root();
    let still: BTreeSet<u64> = bpf::cgroup_programs(&root)
        .intersection(&held.programs)
        .copied()
        .collect();
    assert!(
        still.is_empty(),
        "programs still attached to {}: {still:?}",
        root.display()
    );
    let pinned = bpf::pinned();
    assert!(
        pinned
            .iter()
            .all(|p| !p.to_string_lossy().to_lowercase().contains("mop")),
        "pinned under /sys/fs/bpf: {pinned:?}"
    );
}

/// SIGKILL, as a crash or the OOM killer ends it: the agent runs no clean-up at all, yet every
/// program, link and map it held is gone, because none is pinned or attached without a file
/// descriptor (raw tracepoints and uprobes are links owned by the process).
#[test]
fn sigkill_leaves_no_program_link_or_map() {
    let _serial = util::serial();
    killed_detaches_everything(false);
}

/// SIGKILL with the TCP-option carrier on: the `sock_ops` program's cgroup link goes with the
/// process too, nothing stays attached to the cgroup v2 root.
#[test]
fn sigkill_detaches_sock_ops_from_the_cgroup() {
    let _serial = util::serial();
    killed_detaches_everything(true);
}

/// SIGTERM with the TCP-option carrier on: exit 0, the span flushed, the `sock_ops` program
/// detached from the cgroup v2 root and gone.
#[test]
fn sigterm_detaches_sock_ops_from_the_cgroup() {
    let _serial = util::serial();
    stop_detaches_everything(libc::SIGTERM, true);
}

/// Starts the agent (with the carrier when `tcp`), makes one span, kills it with SIGKILL and
/// checks that what it held is gone.
fn killed_detaches_everything(tcp: bool) {
    let nginx = Nginx::start(1);
    let agent = Agent::start(&config_for(nginx.port, tcp), &[]);
    let held = held_mop_objects(&agent, tcp);
    curl(&[Transfer::get(nginx.url(OK_PATH))]);
    agent.wait_for_spans(crate::tests::SPAN_WAIT, |s| !s.is_empty());
    let log = agent.kill();
    assert!(
        !log.contains("Stopped."),
        "SIGKILL ran the clean shutdown:\n{log}"
    );
    assert_released(&held);
}

fn collect_with(agent: Agent, pids: &[u32], signal: libc::c_int) -> Vec<crate::span::Span> {
    agent.wait_for_spans(crate::tests::SPAN_WAIT, |s| {
        s.iter().any(|s| pids.contains(&s.pid))
    });
    let spans = agent.stop_with(signal);
    crate::tests::assert_only_from(&spans, pids);
    spans
}

/// SIGTERM: exit 0, spans flushed, no program left in the kernel.
#[test]
fn sigterm_exits_zero_and_detaches() {
    let _serial = util::serial();
    stop_detaches_everything(libc::SIGTERM, false);
}

/// SIGINT: the same as SIGTERM.
#[test]
fn sigint_exits_zero_and_detaches() {
    let _serial = util::serial();
    stop_detaches_everything(libc::SIGINT, false);
}
