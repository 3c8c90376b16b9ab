//! Kubernetes metadata for discovery: which Pod and container a process runs in, for
//! selection (`k8s_*` selectors, default namespace exclusions) and naming (`service.*`,
//! `k8s.*`).
//!
//! - [`connect`] decides whether metadata is on and builds the API client.
//! - [`watch`] runs one watcher of this node's Pods (owners resolved on the way) and sends
//!   [`KubeEvent`]s to the discovery stage over a bounded channel.
//! - [`store`] is the bounded Pod cache the discovery stage owns; [`cgroup`] maps a process
//!   to its container and Pod through `/proc/PID/cgroup`.
//! - [`naming`] matches selectors against a Pod and derives names and attributes.
//!
//! Metadata can arrive after discovery first sees a process (the agent just started, or the
//! kubelet has not reported a new container's id yet). While any selector (including the
//! default namespace exclusions) reads Kubernetes fields, the decision about a process in a
//! container is held until its Pod is known or `informers_sync_timeout` has passed since the
//! process was first seen; then it is decided with what is known. Processes on the host
//! (no container cgroup) are decided at once. When a Pod's metadata arrives or changes
//! later, its processes are decided again: a newly selected one is announced, a selected one
//! is re-announced with its new resource (the span stage takes a repeated `ProcessStarted`
//! as an update), and one no longer selected is dropped.

pub mod cgroup;
pub mod connect;
pub mod naming;
pub mod store;
pub mod watch;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use connect::{KubeEnvironment, KubeError};
use kube::Client;
pub use store::{KubeEvent, PodStore, PodView, Touched};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::{
    cgroup::{CgroupIds, PodUid},
    watch::{AnnotationFilter, PodWatcher, WatchSettings},
};
use crate::config::{DiscoveryConfig, KubeConfig, KubeEnable};

/// Most Pods cached: far above what a node runs (110 by default, a few hundred at most).
pub const MAX_PODS: usize = 4096;
/// Capacity of the channel from the watcher to discovery.
const EVENT_QUEUE: usize = 1024;

/// What discovery may do about a process in a container now.
#[derive(Clone, Copy, Debug)]
pub enum Resolution<'a> {
    /// Decide, with this Pod (`None`: not in a known Pod).
    Decide(Option<PodView<'a>>),
    /// Hold the decision: the metadata it depends on may still arrive.
    Wait,
}

/// Discovery's side of Kubernetes metadata: the Pod cache and the hold policy.
pub struct KubeDiscovery {
    store: PodStore,
    hold: Duration,
    /// Some selector reads Kubernetes fields.
    k8s_dependent: bool,
    /// Some selector reads the container name.
    needs_container: bool,
    events: Option<mpsc::Receiver<KubeEvent>>,
}

impl KubeDiscovery {
    /// Discovery's view of `store`, holding decisions up to `hold`; `events` feed the store.
    pub fn new(
        store: PodStore,
        hold: Duration,
        config: &DiscoveryConfig,
        events: Option<mpsc::Receiver<KubeEvent>>,
    ) -> Self {
        let selectors = || {
            config
                .instrument
                .iter()
                .chain(&config.exclude_instrument)
                .chain(&config.default_exclude_instrument)
        };
        Self {
            store,
            hold,
            k8s_dependent: selectors().any(crate::config::Selector::uses_kubernetes),
            needs_container: selectors().any(|s| s.k8s_container_name.is_some()),
            events,
        }
    }

    /// The Pod cache.
    pub fn store(&self) -> &PodStore {
        &self.store
    }

    /// The watcher's events, for the discovery loop (taken once).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<KubeEvent>> {
        self.events.take()
    }

    /// Applies a watcher event to the cache.
    pub fn apply(&mut self, event: KubeEvent) -> Touched {
        self.store.apply(event)
    }

    /// Whether a process with these cgroups may be decided now, given that discovery first
    /// saw it at `since`.
    pub fn resolve(&self, ids: &CgroupIds, since: Instant, now: Instant) -> Resolution<'_> {
        if !ids.in_container() {
            return Resolution::Decide(None);
        }
        let expired = now.saturating_duration_since(since) >= self.hold;
        match self.store.lookup(ids) {
            Some(pod) if pod.container().is_none() && self.needs_container && !expired => {
                Resolution::Wait
            }
            Some(pod) => Resolution::Decide(Some(pod)),
            // Once synced, a container whose cgroup names no Pod (`docker run` on the node)
            // will not get one.
            None if self.k8s_dependent
                && !expired
                && !(self.store.synced() && ids.pod.is_none()) =>
            {
                Resolution::Wait
            }
            None => Resolution::Decide(None),
        }
    }

    /// Whether a process with these cgroups runs in the Pod `uid`.
    pub fn in_pod(&self, ids: &CgroupIds, uid: PodUid) -> bool {
        ids.pod == Some(uid) || self.store.lookup(ids).is_some_and(|p| p.uid() == uid)
    }
}

/// The running watcher and discovery's side of it.
pub struct KubeMetadata {
    /// For `Scanner::with_kube`.
    pub discovery: KubeDiscovery,
    /// The watcher task; it ends when cancelled.
    pub watcher: tokio::task::JoinHandle<()>,
}

/// Sets up Kubernetes metadata per `attributes.kubernetes`: `None` when off (or, under
/// `autodetect`, when it cannot work here); an error only under `enable: true`.
pub async fn start(
    cfg: &KubeConfig,
    discovery: &DiscoveryConfig,
    env: &KubeEnvironment,
    cancel: CancellationToken,
) -> Result<Option<KubeMetadata>, KubeError> {
    let required = cfg.enable == KubeEnable::True;
    let Some(source) = connect::api_source(cfg, env)? else {
        tracing::info!(enable = cfg.enable.as_str(), "Kubernetes metadata off.");
        return Ok(None);
    };
    let server = source.describe();
    let setup = async {
        let client = connect::client(&source).await?;
        // Required metadata must be reachable now; autodetected metadata does not delay the
        // start: the watcher retries in the background and held decisions time out.
        if required {
            connect::probe(&client, &server, cfg.informers_sync_timeout).await?;
        }
        let node = connect::node_name(&client, env).await?;
        Ok((client, node))
    };
    match setup.await {
        Ok((client, node)) => {
            tracing::info!(%server, %node, "Kubernetes metadata on: watching this node's Pods.");
            Ok(Some(spawn(client, node, cfg, discovery, cancel)))
        }
        Err(e) if required => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes metadata off.");
            Ok(None)
        }
    }
}

/// Starts the watcher of `node`'s Pods with production settings.
pub fn spawn(
    client: Client,
    node: String,
    cfg: &KubeConfig,
    discovery: &DiscoveryConfig,
    cancel: CancellationToken,
) -> KubeMetadata {
    let settings = WatchSettings::new(
        node,
        AnnotationFilter::from_config(discovery),
        cfg.informers_resync_period,
    );
    spawn_with(client, settings, cfg, discovery, cancel)
}

/// Starts a watcher with explicit settings.
pub fn spawn_with(
    client: Client,
    settings: WatchSettings,
    cfg: &KubeConfig,
    discovery: &DiscoveryConfig,
    cancel: CancellationToken,
) -> KubeMetadata {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let watcher = tokio::spawn(PodWatcher::new(client, settings, tx).run(cancel));
    KubeMetadata {
        discovery: KubeDiscovery::new(
            PodStore::new(MAX_PODS, cfg.cluster_name.clone()),
            cfg.informers_sync_timeout,
            discovery,
            Some(rx),
        ),
        watcher,
    }
}
