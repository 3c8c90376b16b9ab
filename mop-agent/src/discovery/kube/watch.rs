//! Watching the Pods of this node and resolving their owners.
//!
//! One kube-rs watcher lists and watches `/api/v1/pods?fieldSelector=spec.nodeName=<node>`:
//! the API server filters, so the agent only ever receives its own node's Pods. kube-rs
//! re-lists when a watch expires (`410 Gone` as an ERROR event); a `410` answer to the watch
//! request itself, and each `informers_resync_period`, restart the watcher here, which
//! re-lists too. Errors (API server down or restarting) are retried with capped exponential
//! backoff.
//!
//! Owners: a Pod names its controller (`ReplicaSet`, `StatefulSet`, `DaemonSet`, Job) by kind,
//! name and uid. The Deployment behind a `ReplicaSet` and the `CronJob` behind a Job are read
//! with one metadata-only GET per distinct owner uid, cached until the next resync. No
//! `ReplicaSet` watch: `ReplicaSet`s cannot be field-selected by node, and a cluster-wide watch
//! would hold every old revision of every Deployment of the cluster (ten per Deployment by
//! default) on each node, while a node runs a few dozen owners whose owner references do not
//! change for the life of their uid. When a lookup fails (RBAC, API error), a `ReplicaSet`
//! named `<deployment>-<pod-template-hash>` (the Pod's label) is attributed to that
//! Deployment, as OBI does.

use std::{borrow::Cow, collections::HashMap, fmt::Debug, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::ReplicaSet, batch::v1::Job},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Api, Client, Resource, runtime::watcher};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    naming::ANNOTATION_PREFIX,
    store::{KubeEvent, OwnerKind, PodInfo},
};
use crate::config::discovery::DiscoveryConfig;

/// A Pod with only the fields discovery reads; serde skips the rest of the object.
#[derive(Clone, Debug, Deserialize)]
pub struct WatchedPod {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    ephemeral_container_statuses: Option<Vec<ContainerStatus>>,
}

#[derive(Clone, Debug, Deserialize)]
struct ContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

impl Resource for WatchedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        "Pod".into()
    }

    fn group((): &()) -> Cow<'_, str> {
        "".into()
    }

    fn version((): &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural((): &()) -> Cow<'_, str> {
        "pods".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Longest annotation value kept; longer ones (serialized configs) are dropped.
const MAX_ANNOTATION_VALUE: usize = 1024;

/// Which annotations are kept: those some selector reads, and `resource.opentelemetry.io/*`.
#[derive(Clone, Debug, Default)]
pub struct AnnotationFilter {
    keys: Vec<String>,
}

impl AnnotationFilter {
    /// The annotation keys the selectors of `config` read.
    pub fn from_config(config: &DiscoveryConfig) -> Self {
        let mut keys: Vec<String> = config
            .instrument
            .iter()
            .chain(&config.exclude_instrument)
            .chain(&config.default_exclude_instrument)
            .flat_map(|s| s.k8s_pod_annotations.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        Self { keys }
    }

    fn keeps(&self, key: &str, value: &str) -> bool {
        value.len() <= MAX_ANNOTATION_VALUE
            && (key.starts_with(ANNOTATION_PREFIX) || self.keys.iter().any(|k| k == key))
    }
}

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    /// The node whose Pods are watched (`spec.nodeName`).
    pub node_name: String,
    /// Annotations kept.
    pub annotations: AnnotationFilter,
    /// Full re-list (and owner re-read) period: `informers_resync_period`.
    pub resync_period: Duration,
    /// First retry delay after an error.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Pods per list page.
    pub page_size: u32,
}

impl WatchSettings {
    /// Production settings for `node_name`.
    pub fn new(node_name: String, annotations: AnnotationFilter, resync_period: Duration) -> Self {
        Self {
            node_name,
            annotations,
            resync_period,
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            page_size: 500,
        }
    }
}

/// The watcher task: Pods in, [`KubeEvent`]s out.
pub struct PodWatcher {
    client: Client,
    settings: WatchSettings,
    owners: OwnerCache,
    out: mpsc::Sender<KubeEvent>,
}

/// Why the inner watch loop ended.
enum Restart {
    /// Re-list now (resync period, watch expired).
    Relist,
    /// Cancelled, or discovery is gone.
    Stop,
}

impl PodWatcher {
    /// A watcher that sends to `out`.
    pub fn new(client: Client, settings: WatchSettings, out: mpsc::Sender<KubeEvent>) -> Self {
        Self {
            client,
            settings,
            owners: OwnerCache::default(),
            out,
        }
    }

    /// Watches until cancelled or until discovery drops its receiver.
    pub async fn run(mut self, cancel: CancellationToken) {
        let api: Api<WatchedPod> = Api::all(self.client.clone());
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let config = watcher::Config::default()
                .fields(&format!("spec.nodeName={}", self.settings.node_name))
                .page_size(self.settings.page_size);
            let stream = watcher(api.clone(), config);
            match self.watch(stream, &mut backoff, &cancel).await {
                Restart::Relist => self.owners.clear(),
                Restart::Stop => return,
            }
        }
    }

    async fn watch(
        &mut self,
        stream: impl futures_util::Stream<Item = watcher::Result<watcher::Event<WatchedPod>>>,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Restart {
        let mut stream = std::pin::pin!(stream);
        let resync = tokio::time::sleep(self.settings.resync_period);
        let mut resync = std::pin::pin!(resync);
        let mut failing = false;
        loop {
            let item = tokio::select! {
                biased;
                () = cancel.cancelled() => return Restart::Stop,
                () = &mut resync => {
                    tracing::debug!("Kubernetes resync: re-listing Pods.");
                    return Restart::Relist;
                }
                item = stream.next() => item,
            };
            let event = match item {
                None => return Restart::Relist,
                Some(Ok(event)) => {
                    if failing {
                        tracing::info!("Kubernetes watch recovered.");
                        failing = false;
                    }
                    backoff.reset();
                    event
                }
                Some(Err(error)) => {
                    if failing {
                        tracing::debug!(%error, "Kubernetes Pod watch still failing.");
                    } else {
                        tracing::warn!(%error, "Kubernetes Pod watch failed; retrying.");
                        failing = true;
                    }
                    if is_gone(&error) {
                        return Restart::Relist;
                    }
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Restart::Stop,
                        () = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            };
            let out = match event {
                watcher::Event::Init => KubeEvent::ListStarted,
                watcher::Event::InitDone => KubeEvent::ListDone,
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let owners = self.owners.resolve(&self.client, &pod.metadata).await;
                    KubeEvent::Pod(Box::new(pod_info(pod, owners, &self.settings.annotations)))
                }
                watcher::Event::Delete(pod) => {
                    let Some(uid) = pod.metadata.uid else {
                        continue;
                    };
                    KubeEvent::PodDeleted(uid)
                }
            };
            let sent = tokio::select! {
                biased;
                () = cancel.cancelled() => return Restart::Stop,
                sent = self.out.send(out) => sent,
            };
            if sent.is_err() {
                return Restart::Stop;
            }
        }
    }
}

/// A `410 Gone` that kube-rs would retry with the same (expired) resource version.
fn is_gone(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410
    )
}

/// Capped exponential backoff (doubling, with up to a quarter of jitter).
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter_seed: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let jitter_seed = u64::from(std::process::id()) | 1;
        Self {
            min,
            max,
            next: min,
            jitter_seed,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift: enough to keep agents restarted together from retrying in lockstep.
        self.jitter_seed ^= self.jitter_seed << 13;
        self.jitter_seed ^= self.jitter_seed >> 7;
        self.jitter_seed ^= self.jitter_seed << 17;
        let quarter = delay / 4;
        let nanos = u64::try_from(quarter.as_nanos()).unwrap_or(u64::MAX).max(1);
        delay.saturating_sub(quarter) + Duration::from_nanos(self.jitter_seed % nanos)
    }
}

/// The compact form of a watched Pod.
fn pod_info(pod: WatchedPod, owners: Vec<(OwnerKind, String)>, keep: &AnnotationFilter) -> PodInfo {
    let meta = pod.metadata;
    let status = pod.status.unwrap_or_default();
    let containers = [
        status.init_container_statuses,
        status.container_statuses,
        status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|c| Some((c.container_id.filter(|id| !id.is_empty())?, c.name)))
    .collect();
    PodInfo {
        uid: meta.uid.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        namespace: meta.namespace.unwrap_or_default(),
        node: pod.spec.and_then(|s| s.node_name).unwrap_or_default(),
        start_time: status.start_time,
        labels: meta.labels.unwrap_or_default().into_iter().collect(),
        annotations: meta
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| keep.keeps(k, v))
            .collect(),
        owners,
        containers,
    }
}

/// The controlling owner reference (or the first one, when none is marked controller).
fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let refs = meta.owner_references.as_deref()?;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

/// Most owner entries kept between resyncs.
const MAX_OWNERS: usize = 4096;

/// The owners of `ReplicaSet`s and Jobs, by uid; `None` when the object has none.
#[derive(Default)]
struct OwnerCache {
    parents: HashMap<String, Option<(OwnerKind, String)>>,
    warned: bool,
}

impl OwnerCache {
    fn clear(&mut self) {
        self.parents.clear();
    }

    /// The owner chain of a Pod: its controller, then the controller's own controller.
    async fn resolve(&mut self, client: &Client, meta: &ObjectMeta) -> Vec<(OwnerKind, String)> {
        let Some(owner) = controller(meta) else {
            return Vec::new();
        };
        let kind = OwnerKind::from_kind(&owner.kind);
        let ns = meta.namespace.as_deref().unwrap_or_default();
        let parent = match (kind, owner.api_version.as_str()) {
            (OwnerKind::ReplicaSet, "apps/v1") => self
                .parent::<ReplicaSet>(client, ns, owner)
                .await
                .unwrap_or_else(|()| deployment_by_hash(meta, &owner.name)),
            (OwnerKind::Job, "batch/v1") => {
                self.parent::<Job>(client, ns, owner).await.ok().flatten()
            }
            _ => None,
        };
        let mut chain = vec![(kind, owner.name.clone())];
        chain.extend(parent);
        chain
    }

    /// The controller of the owner `r` (one metadata-only GET per uid); `Err` when it cannot
    /// be read.
    async fn parent<K>(
        &mut self,
        client: &Client,
        ns: &str,
        r: &OwnerReference,
    ) -> Result<Option<(OwnerKind, String)>, ()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        if let Some(hit) = self.parents.get(&r.uid) {
            return Ok(hit.clone());
        }
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let found = match api.get_metadata(&r.name).await {
            // A different uid: the owner was deleted and another took its name.
            Ok(object) if object.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                controller(&object.metadata)
                    .map(|o| (OwnerKind::from_kind(&o.kind), o.name.clone()))
            }
            Ok(_) => return Err(()),
            Err(error) => {
                let forbidden = matches!(&error, kube::Error::Api(s) if s.code == 403);
                if forbidden && !self.warned {
                    self.warned = true;
                    tracing::warn!(%error, kind = %r.kind, "Cannot read Pod owners: grant get on replicasets and jobs; owner names are guessed.");
                } else {
                    tracing::debug!(%error, kind = %r.kind, name = %r.name, "Cannot read a Pod owner.");
                }
                return Err(());
            }
        };
        if self.parents.len() >= MAX_OWNERS {
            self.parents.clear();
        }
        self.parents.insert(r.uid.clone(), found.clone());
        Ok(found)
    }
}

/// The Deployment of a `ReplicaSet` named `<deployment>-<pod-template-hash>`.
fn deployment_by_hash(pod: &ObjectMeta, replicaset: &str) -> Option<(OwnerKind, String)> {
    let hash = pod.labels.as_ref()?.get("pod-template-hash")?;
    let deployment = replicaset.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!deployment.is_empty()).then(|| (OwnerKind::Deployment, deployment.to_owned()))
}
