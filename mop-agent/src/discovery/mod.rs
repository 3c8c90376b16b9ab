//! Discovery: which processes to instrument, and what they are called.
//!
//! A pass reads `/proc`: new processes are matched against the configured selectors (their
//! listening ports found through their own network namespace's TCP tables), matches are added
//! to the kernel's pid filter and announced to the span stage with their resource, and exited
//! processes are removed everywhere. Passes run every `discovery.poll_interval`. With
//! Kubernetes metadata on ([`kube`]), processes in containers are matched and named with their
//! Pod, and decided again when its metadata arrives or changes.

pub mod identity;
pub mod kube;
pub mod matcher;
pub mod procfs;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use identity::{IDENTITY_ENV, IdentityContext, ProcessIdentity};
use kube::{KubeDiscovery, KubeEvent, Resolution, Touched, cgroup::CgroupIds};
use matcher::Candidate;
use procfs::ProcFs;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    capture::{
        PidFilter, Probes,
        stage::{CaptureControl, ExecReport},
        tls::TlsProbes,
    },
    config::discovery::DiscoveryConfig,
    span::{ServiceResource, stage::SpanControl},
    telemetry::SelfMetrics,
};

/// A change one pass found.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A process to instrument from now on.
    Started {
        /// Host pid.
        pid: u32,
        /// Its resource.
        resource: Arc<ServiceResource>,
    },
    /// An instrumented process exited.
    Exited(u32),
    /// A freshly exec'd program (captured while undecided) is not to be instrumented.
    Rejected(u32),
}

/// What discovery remembers of a process between passes.
struct Tracked {
    start_time: u64,
    net_ns: u64,
    /// The pass that first saw the process: young processes are re-checked for new listening
    /// ports every pass, older ones every [`OLD_PROCESS_PASSES`].
    first_pass: u64,
    state: TrackState,
    /// Its container and Pod (empty when Kubernetes metadata is off or on the host).
    cgroup: CgroupIds,
    /// The resource announced, while selected.
    resource: Option<Arc<ServiceResource>>,
}

/// Passes during which a new, unselected process is re-checked every pass for new listening
/// ports (a server binds soon after it starts).
const YOUNG_PASSES: u64 = 10;
/// How often (in passes) older unselected processes are re-checked. Reading a namespace's TCP
/// tables walks every socket in it, so it is not done each pass on a busy node.
const OLD_PROCESS_PASSES: u64 = 10;

/// The decision about a tracked process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TrackState {
    /// Instrumented.
    Selected,
    /// Not instrumented; decided with the listening set of this generation of its namespace.
    Unselected { scanned_generation: u64 },
    /// No executable (a kernel thread): never instrumented.
    NoExe,
    /// In a container whose Kubernetes metadata the decision waits for, since `since`;
    /// `exec` when the capture stage reported it (it must hear a rejection).
    Pending { since: Instant, exec: bool },
}

/// The listening sockets of one network namespace, and a generation bumped when they change.
struct NetNs {
    listeners: HashMap<u64, u16>,
    generation: u64,
    seen_in_pass: u64,
}

/// The `/proc` scanner; synchronous, so that it tests on a fake tree.
pub struct Scanner {
    procfs: ProcFs,
    config: DiscoveryConfig,
    identity: IdentityContext,
    self_pid: u32,
    tracked: HashMap<u32, Tracked>,
    namespaces: HashMap<u64, NetNs>,
    pass: u64,
    /// Source of listening-set generations; never reused, so a namespace forgotten and seen
    /// again cannot look unchanged.
    next_generation: u64,
    /// Kubernetes metadata, when on.
    kube: Option<KubeDiscovery>,
}

impl Scanner {
    /// A scanner with nothing tracked yet.
    pub fn new(procfs: ProcFs, config: DiscoveryConfig, identity: IdentityContext) -> Self {
        Self {
            procfs,
            config,
            identity,
            self_pid: std::process::id(),
            tracked: HashMap::new(),
            namespaces: HashMap::new(),
            pass: 0,
            next_generation: 0,
            kube: None,
        }
    }

    /// The pids currently instrumented.
    pub fn selected_pids(&self) -> Vec<u32> {
        self.tracked
            .iter()
            .filter(|(_, t)| t.state == TrackState::Selected)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Matches and names processes in containers with their Pods' metadata.
    #[must_use]
    pub fn with_kube(mut self, kube: KubeDiscovery) -> Self {
        self.kube = Some(kube);
        self
    }

    /// Kubernetes metadata, when on.
    pub fn kube(&self) -> Option<&KubeDiscovery> {
        self.kube.as_ref()
    }

    /// Applies a Kubernetes metadata event; processes of a Pod that appeared or changed are
    /// decided again (announced, re-announced with a new resource, or dropped).
    pub fn kube_update(&mut self, event: KubeEvent) -> Vec<Change> {
        let mut changes = Vec::new();
        let Some(kube) = &mut self.kube else {
            return changes;
        };
        let touched = kube.apply(event);
        let pids: Vec<u32> = self
            .tracked
            .iter()
            .filter(|(_, t)| {
                t.cgroup.in_container()
                    && match touched {
                        Touched::Nothing => false,
                        Touched::Listed => matches!(t.state, TrackState::Pending { .. }),
                        Touched::Pod(uid) => {
                            matches!(t.state, TrackState::Pending { .. })
                                || kube.in_pod(&t.cgroup, uid)
                        }
                    }
            })
            .map(|(pid, _)| *pid)
            .collect();
        let needs_ports = matcher::needs_ports(&self.config);
        for pid in pids {
            self.decide(pid, needs_ports, &mut changes);
        }
        changes
    }

    /// Whether `pid` belongs in the kernel's pid filter: `Some(true)` when it is instrumented
    /// or waiting for a decision, `Some(false)` when it was decided against, `None` when this
    /// scanner does not know it (it started after the last read of `/proc`, or is gone).
    pub fn keeps_in_filter(&self, pid: u32) -> Option<bool> {
        self.tracked
            .get(&pid)
            .map(|t| matches!(t.state, TrackState::Selected | TrackState::Pending { .. }))
    }

    /// True while `/proc` has `pid`.
    pub fn is_alive(&self, pid: u32) -> bool {
        self.procfs.root().join(pid.to_string()).exists()
    }

    /// Processes currently instrumented.
    pub fn instrumented(&self) -> usize {
        self.tracked
            .values()
            .filter(|t| t.state == TrackState::Selected)
            .count()
    }

    /// Decides about a process that just called `execve` (the kernel captures it meanwhile):
    /// `Started` when it is to be instrumented, else `Rejected` so that everything drops it.
    ///
    /// `path_hint` is the path the kernel saw exec'd: when the process is already gone (a
    /// short-lived client), the decision is made from it alone, so its captured requests are
    /// still reported.
    pub fn exec(&mut self, pid: u32, path_hint: Option<&str>) -> Vec<Change> {
        let mut changes = Vec::new();
        // A new program in an old pid: forget the old decision.
        self.tracked.remove(&pid);
        if pid != self.self_pid || !self.config.skip_self {
            self.visit(pid, matcher::needs_ports(&self.config), &mut changes);
        }
        let gone = !self.tracked.contains_key(&pid);
        if gone
            && let Some(path) = path_hint.filter(|p| p.starts_with('/'))
            && let Some(resource) = self.resource_for(pid, path, &[], None)
        {
            // Announced now; the next pass finds it gone and reports the exit.
            self.tracked.insert(
                pid,
                Tracked {
                    start_time: 0,
                    net_ns: 0,
                    first_pass: self.pass,
                    state: TrackState::Selected,
                    cgroup: CgroupIds::default(),
                    resource: Some(Arc::clone(&resource)),
                },
            );
            changes.push(Change::Started { pid, resource });
            return changes;
        }
        if let Some(t) = self.tracked.get_mut(&pid)
            && let TrackState::Pending { exec, .. } = &mut t.state
        {
            // Decided when its Pod's metadata arrives; rejected then if not selected.
            *exec = true;
            return changes;
        }
        if !changes.iter().any(|c| matches!(c, Change::Started { .. })) {
            changes.push(Change::Rejected(pid));
        }
        changes
    }

    /// One pass over `/proc`; returns what changed since the last one.
    pub fn scan(&mut self) -> Vec<Change> {
        self.pass += 1;
        let mut changes = Vec::new();
        let Ok(pids) = self.procfs.pids() else {
            tracing::warn!(root = %self.procfs.root().display(), "Cannot list processes.");
            return changes;
        };
        let alive: HashSet<u32> = pids.iter().copied().collect();
        self.tracked.retain(|pid, t| {
            let gone = !alive.contains(pid);
            if gone {
                match t.state {
                    TrackState::Selected => changes.push(Change::Exited(*pid)),
                    TrackState::Pending { exec: true, .. } => changes.push(Change::Rejected(*pid)),
                    _ => {}
                }
            }
            !gone
        });
        let needs_ports = matcher::needs_ports(&self.config);
        for pid in pids {
            if pid == self.self_pid && self.config.skip_self {
                continue;
            }
            self.visit(pid, needs_ports, &mut changes);
        }
        let pass = self.pass;
        self.namespaces
            .retain(|_, ns| pass - ns.seen_in_pass <= 2 * OLD_PROCESS_PASSES);
        changes
    }

    fn visit(&mut self, pid: u32, needs_ports: bool, changes: &mut Vec<Change>) {
        if let Some(t) = self.tracked.get(&pid) {
            match t.state {
                TrackState::Selected => {
                    // The pid may have been reused by a new process since the last pass.
                    match self.procfs.stat(pid) {
                        Ok(st) if st.start_time == t.start_time => return,
                        _ => {
                            changes.push(Change::Exited(pid));
                            self.tracked.remove(&pid);
                        }
                    }
                }
                TrackState::NoExe => return,
                TrackState::Unselected { scanned_generation } => {
                    let young = self.pass.saturating_sub(t.first_pass) < YOUNG_PASSES;
                    if !needs_ports || (!young && !self.pass.is_multiple_of(OLD_PROCESS_PASSES)) {
                        return;
                    }
                    let ns = t.net_ns;
                    if self.generation(ns, pid) == scanned_generation {
                        return;
                    }
                }
                // Waiting for Kubernetes metadata: looked at every pass until the hold ends.
                TrackState::Pending { .. } => {}
            }
        }
        self.decide(pid, needs_ports, changes);
    }

    /// Decides about a process (again): instrument it or not, and with which resource.
    fn decide(&mut self, pid: u32, needs_ports: bool, changes: &mut Vec<Change>) {
        let Ok(stat) = self.procfs.stat(pid) else {
            return;
        };
        let prev = match self.tracked.get(&pid) {
            Some(t) if t.start_time == stat.start_time => {
                Some((t.first_pass, t.state, t.cgroup, t.resource.clone()))
            }
            Some(t) => {
                if t.state == TrackState::Selected {
                    changes.push(Change::Exited(pid));
                }
                None
            }
            None => None,
        };
        let Ok(exe) = self.procfs.exe(pid) else {
            // Kernel threads and processes gone meanwhile have no executable.
            if prev.as_ref().is_some_and(|p| p.1 == TrackState::Selected) {
                changes.push(Change::Exited(pid));
            }
            self.tracked.insert(
                pid,
                Tracked {
                    start_time: stat.start_time,
                    net_ns: 0,
                    first_pass: self.pass,
                    state: TrackState::NoExe,
                    cgroup: CgroupIds::default(),
                    resource: None,
                },
            );
            return;
        };
        let net_ns = self.procfs.net_ns(pid).unwrap_or(0);
        let (ports, generation) = if needs_ports {
            let generation = self.generation(net_ns, pid);
            (self.listening_ports(pid, net_ns), generation)
        } else {
            (Vec::new(), 0)
        };
        let first_pass = prev.as_ref().map_or(self.pass, |p| p.0);
        let prev_state = prev.as_ref().map(|p| p.1);
        let cgroup = match (&prev, &self.kube) {
            (Some(p), _) => p.2,
            (None, Some(_)) => kube::cgroup::parse(&self.procfs.cgroup(pid).unwrap_or_default()),
            (None, None) => CgroupIds::default(),
        };
        let now = Instant::now();
        let (since, exec) = match prev_state {
            Some(TrackState::Pending { since, exec }) => (since, exec),
            _ => (now, false),
        };
        let (state, resource) = match self.kube.as_ref().map(|k| k.resolve(&cgroup, since, now)) {
            Some(Resolution::Wait) => (TrackState::Pending { since, exec }, None),
            decision => {
                let pod = match decision {
                    Some(Resolution::Decide(pod)) => pod,
                    _ => None,
                };
                let resource = self.resource_for(pid, &exe, &ports, pod);
                let previous = prev.and_then(|p| p.3);
                match &resource {
                    // New, or re-announced with a changed resource (the span stage updates).
                    Some(r) if previous.as_deref() != Some(&**r) => {
                        changes.push(Change::Started {
                            pid,
                            resource: Arc::clone(r),
                        });
                    }
                    None if prev_state == Some(TrackState::Selected) => {
                        changes.push(Change::Exited(pid));
                    }
                    None if exec => changes.push(Change::Rejected(pid)),
                    Some(_) | None => {}
                }
                let state = if resource.is_some() {
                    TrackState::Selected
                } else {
                    TrackState::Unselected {
                        scanned_generation: generation,
                    }
                };
                (state, resource)
            }
        };
        self.tracked.insert(
            pid,
            Tracked {
                start_time: stat.start_time,
                net_ns,
                first_pass,
                state,
                cgroup,
                resource,
            },
        );
    }

    /// The resource of a process if the selectors select it.
    fn resource_for(
        &self,
        pid: u32,
        exe: &str,
        ports: &[u16],
        pod: Option<kube::PodView<'_>>,
    ) -> Option<Arc<ServiceResource>> {
        let candidate = Candidate { exe, ports, pod };
        let selection = matcher::select(&self.config, &candidate)?;
        let environ = self.procfs.environ(pid, IDENTITY_ENV).unwrap_or_default();
        let p = ProcessIdentity {
            pid,
            exe,
            environ: &environ,
            pod,
        };
        Some(Arc::new(identity::resource(&self.identity, &p, &selection)))
    }

    /// The listening-set generation of a namespace, reading its tables once per pass.
    fn generation(&mut self, net_ns: u64, pid: u32) -> u64 {
        let pass = self.pass;
        if let Some(ns) = self.namespaces.get(&net_ns)
            && ns.seen_in_pass == pass
        {
            return ns.generation;
        }
        let listeners = self.procfs.listening_sockets(pid).unwrap_or_default();
        let ns = self.namespaces.entry(net_ns).or_insert_with(|| NetNs {
            listeners: HashMap::new(),
            generation: 0,
            seen_in_pass: 0,
        });
        if ns.listeners != listeners || ns.seen_in_pass == 0 {
            self.next_generation += 1;
            ns.generation = self.next_generation;
            ns.listeners = listeners;
        }
        ns.seen_in_pass = pass;
        ns.generation
    }

    /// The ports `pid` listens on: its socket fds that are listeners of its namespace.
    fn listening_ports(&self, pid: u32, net_ns: u64) -> Vec<u16> {
        let Some(ns) = self.namespaces.get(&net_ns) else {
            return Vec::new();
        };
        if ns.listeners.is_empty() {
            return Vec::new();
        }
        let mut ports: Vec<u16> = self
            .procfs
            .socket_inodes(pid)
            .unwrap_or_default()
            .iter()
            .filter_map(|inode| ns.listeners.get(inode).copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// Where discovery's decisions go.
pub struct DiscoveryOutputs {
    /// The loaded programs: discovery attaches per-process probes (TLS) and hands them back
    /// when it stops.
    pub probes: Probes,
    /// TLS library probes, when TLS capture is on.
    pub tls: Option<TlsProbes>,
    /// How `/proc` is read (for TLS libraries).
    pub procfs: ProcFs,
    /// The kernel's pid filter.
    pub pids: PidFilter,
    /// Resources for span assembly.
    pub spans: mpsc::Sender<SpanControl>,
    /// Exits for the capture stage.
    pub capture: mpsc::Sender<CaptureControl>,
    /// Self-metrics.
    pub metrics: Arc<SelfMetrics>,
}

/// Passes between looks for TLS libraries in instrumented processes that had none (a program
/// may load libssl late, e.g. Python on its first `import ssl`).
const TLS_RECHECK_PASSES: u64 = 2;

/// Runs passes until cancelled, and decides at once about each exec the capture stage reports;
/// `first_pass` fires after the first pass is applied. Returns the probes (still attached) so
/// the caller detaches them after the pipeline has drained.
pub async fn run(
    mut scanner: Scanner,
    mut out: DiscoveryOutputs,
    mut execs: mpsc::Receiver<ExecReport>,
    first_pass: oneshot::Sender<()>,
    cancel: CancellationToken,
) -> Probes {
    let mut first_pass = Some(first_pass);
    let mut kube_events = scanner.kube.as_mut().and_then(KubeDiscovery::take_events);
    let mut tick = tokio::time::interval(scanner.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // `full_pass`: this turn read all of `/proc` (readiness waits for one).
        let (changes, full_pass) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(report) = execs.recv() => (scanner.exec(report.pid, Some(&report.path)), false),
            Some(event) = next_kube_event(&mut kube_events) => (scanner.kube_update(event), false),
            _ = tick.tick() => (tokio::task::block_in_place(|| scanner.scan()), true),
        };
        for change in changes {
            apply(&mut out, change).await;
        }
        if full_pass {
            tokio::task::block_in_place(|| {
                // Pids the kernel captured from `exec` whose report never reached discovery (its
                // channel was full): decided against, or gone.
                out.pids.reconcile(|pid| {
                    scanner
                        .keeps_in_filter(pid)
                        .unwrap_or_else(|| scanner.is_alive(pid))
                });
                // What the processes that left the filter left in the kernel's other maps.
                out.pids.sweep();
            });
        }
        if scanner.pass.is_multiple_of(TLS_RECHECK_PASSES) {
            recheck_tls(&scanner, &mut out);
        }
        out.metrics
            .set_instrumented_processes(scanner.instrumented());
        if full_pass && let Some(tx) = first_pass.take() {
            let _ = tx.send(());
        }
    }
    out.probes
}

/// Looks again for TLS libraries in instrumented processes that have none probed yet.
fn recheck_tls(scanner: &Scanner, out: &mut DiscoveryOutputs) {
    let Some(tls) = out.tls.as_mut() else { return };
    for pid in scanner.selected_pids() {
        if !tls.covers(pid) {
            let exe = out.procfs.exe(pid).ok();
            tls.add_process(out.probes.ebpf_mut(), &out.procfs, pid, exe.as_deref());
        }
    }
    out.metrics
        .set_tls_libraries(tls.attached_libraries(), tls.attached_programs());
}

/// The next Kubernetes metadata event; never ready when metadata is off or the watcher ended.
async fn next_kube_event(events: &mut Option<mpsc::Receiver<KubeEvent>>) -> Option<KubeEvent> {
    if let Some(rx) = events {
        if let Some(event) = rx.recv().await {
            return Some(event);
        }
        *events = None;
    }
    std::future::pending().await
}

/// Applies one change: the span stage learns a resource before the kernel captures its pid.
async fn apply(out: &mut DiscoveryOutputs, change: Change) {
    match change {
        Change::Started { pid, resource } => {
            tracing::info!(
                pid,
                service = %resource.service_name,
                "Instrumenting process."
            );
            let _ = out
                .spans
                .send(SpanControl::ProcessStarted { pid, resource })
                .await;
            if let Err(e) = out.pids.add(pid) {
                tracing::warn!(pid, error = %e, "Cannot add the process to the pid filter.");
            }
            if let Some(tls) = out.tls.as_mut() {
                let exe = out.procfs.exe(pid).ok();
                tls.add_process(out.probes.ebpf_mut(), &out.procfs, pid, exe.as_deref());
            }
        }
        Change::Exited(pid) | Change::Rejected(pid) => {
            if matches!(change, Change::Exited(_)) {
                tracing::info!(pid, "Instrumented process exited.");
            }
            out.pids.remove(pid);
            if let Some(tls) = out.tls.as_mut() {
                tls.remove_process(out.probes.ebpf_mut(), pid);
            }
            let _ = out.capture.send(CaptureControl::ProcessExited(pid)).await;
            let _ = out.spans.send(SpanControl::ProcessExited(pid)).await;
        }
    }
}

#[cfg(test)]
mod tests;
