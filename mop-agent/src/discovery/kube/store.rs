//! The Pods of this node as discovery needs them: a bounded, compact cache owned by the
//! discovery stage and fed by the watcher's [`KubeEvent`]s.
//!
//! Each Pod keeps only what selection and naming read: uid, name, namespace, node, start time,
//! labels, the annotations the watcher kept (see `watch::AnnotationFilter`), the owner chain
//! and its containers' ids and names. Strings that repeat across Pods (namespaces, label keys
//! and values, owner and container names) are interned; uids and container ids are kept as
//! bytes. At most `capacity` Pods are kept: beyond that the oldest entry is evicted and
//! counted.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    mem::size_of,
    sync::Arc,
};

use super::cgroup::{CgroupIds, ContainerId, PodUid};

/// The kind of a Pod owner, as far as naming and selection distinguish them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// `apps/v1` `ReplicaSet` (usually owned by a Deployment).
    ReplicaSet,
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` `StatefulSet`.
    StatefulSet,
    /// `apps/v1` `DaemonSet`.
    DaemonSet,
    /// `batch/v1` Job (owned by a `CronJob` when scheduled).
    Job,
    /// `batch/v1` `CronJob`.
    CronJob,
    /// Any other controller (an operator's custom resource, for instance).
    Other,
}

impl OwnerKind {
    /// From an owner reference's `kind`.
    pub fn from_kind(kind: &str) -> Self {
        match kind {
            "ReplicaSet" => Self::ReplicaSet,
            "Deployment" => Self::Deployment,
            "StatefulSet" => Self::StatefulSet,
            "DaemonSet" => Self::DaemonSet,
            "Job" => Self::Job,
            "CronJob" => Self::CronJob,
            _ => Self::Other,
        }
    }

    /// The resource attribute naming an owner of this kind (`k8s.deployment.name`, ...).
    pub fn attribute(self) -> Option<&'static str> {
        Some(match self {
            Self::ReplicaSet => "k8s.replicaset.name",
            Self::Deployment => "k8s.deployment.name",
            Self::StatefulSet => "k8s.statefulset.name",
            Self::DaemonSet => "k8s.daemonset.name",
            Self::Job => "k8s.job.name",
            Self::CronJob => "k8s.cronjob.name",
            Self::Other => return None,
        })
    }
}

/// A Pod as the watcher reports it: owned strings, interned by the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.startTime` (RFC 3339), once the kubelet has started the Pod.
    pub start_time: Option<String>,
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// The `metadata.annotations` that selection and naming read.
    pub annotations: Vec<(String, String)>,
    /// The owner chain, the Pod's controller first (`ReplicaSet`, then its Deployment).
    pub owners: Vec<(OwnerKind, String)>,
    /// `(containerID, name)` of every container status that has an id (init, app and
    /// ephemeral containers).
    pub containers: Vec<(String, String)>,
}

/// What the watcher tells discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeEvent {
    /// A full list starts (first sync, or re-list after a watch expired): Pods not reported
    /// again before [`KubeEvent::ListDone`] are gone.
    ListStarted,
    /// A Pod was added or changed.
    Pod(Box<PodInfo>),
    /// A Pod was deleted (by uid).
    PodDeleted(String),
    /// The list is complete: the cache is in sync with the API server.
    ListDone,
}

/// One cached Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    uid: PodUid,
    name: Box<str>,
    namespace: Arc<str>,
    node: Arc<str>,
    start_time: Option<Box<str>>,
    labels: Box<[(Arc<str>, Arc<str>)]>,
    annotations: Box<[(Arc<str>, Arc<str>)]>,
    owners: Box<[(OwnerKind, Arc<str>)]>,
    containers: Box<[(ContainerId, Arc<str>)]>,
}

/// A Pod seen from one of its processes: the Pod, and the container when known.
#[derive(Clone, Copy, Debug)]
pub struct PodView<'a> {
    meta: &'a PodMeta,
    container: Option<&'a str>,
    cluster: Option<&'a str>,
}

impl<'a> PodView<'a> {
    /// `k8s.namespace.name`.
    pub fn namespace(&self) -> &'a str {
        &self.meta.namespace
    }

    /// `k8s.pod.name`.
    pub fn name(&self) -> &'a str {
        &self.meta.name
    }

    /// `k8s.pod.uid`.
    pub fn uid(&self) -> PodUid {
        self.meta.uid
    }

    /// `k8s.node.name`.
    pub fn node(&self) -> &'a str {
        &self.meta.node
    }

    /// `k8s.pod.start_time`.
    pub fn start_time(&self) -> Option<&'a str> {
        self.meta.start_time.as_deref()
    }

    /// `k8s.container.name`: unknown until the kubelet reports the container's id.
    pub fn container(&self) -> Option<&'a str> {
        self.container
    }

    /// `k8s.cluster.name`, when configured.
    pub fn cluster(&self) -> Option<&'a str> {
        self.cluster
    }

    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        find(&self.meta.labels, key)
    }

    /// An annotation's value (only the annotations the watcher keeps).
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        find(&self.meta.annotations, key)
    }

    /// Every kept annotation.
    pub fn annotations(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.meta.annotations.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The owner chain, the Pod's controller first.
    pub fn owners(&self) -> impl Iterator<Item = (OwnerKind, &'a str)> {
        self.meta.owners.iter().map(|(k, n)| (*k, &**n))
    }

    /// The name of the owner of this kind in the chain.
    pub fn owner(&self, kind: OwnerKind) -> Option<&'a str> {
        self.owners().find(|(k, _)| *k == kind).map(|(_, n)| n)
    }

    /// The top of the owner chain (the Deployment of a `ReplicaSet`'s Pod), if any.
    pub fn top_owner(&self) -> Option<(OwnerKind, &'a str)> {
        self.owners().last()
    }
}

fn find<'a>(pairs: &'a [(Arc<str>, Arc<str>)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
}

/// How an event changed the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touched {
    /// Nothing discovery needs to look at again.
    Nothing,
    /// This Pod was added or changed.
    Pod(PodUid),
    /// A full list completed (the cache just synced, or re-synced).
    Listed,
}

struct Entry {
    meta: PodMeta,
    generation: u64,
    seq: u64,
}

/// The bounded Pod cache.
pub struct PodStore {
    pods: HashMap<PodUid, Entry>,
    containers: HashMap<ContainerId, PodUid>,
    /// Insertion order for eviction: `(uid, seq)`; entries whose seq no longer matches are
    /// stale (the Pod was removed) and skipped.
    order: VecDeque<(PodUid, u64)>,
    strings: HashSet<Arc<str>>,
    removed_since_purge: usize,
    capacity: usize,
    evictions: u64,
    generation: u64,
    next_seq: u64,
    synced: bool,
    cluster: Option<Box<str>>,
}

impl PodStore {
    /// An empty cache of at most `capacity` Pods; `cluster` is `k8s.cluster.name`.
    pub fn new(capacity: usize, cluster: Option<String>) -> Self {
        Self {
            pods: HashMap::new(),
            containers: HashMap::new(),
            order: VecDeque::new(),
            strings: HashSet::new(),
            removed_since_purge: 0,
            capacity: capacity.max(1),
            evictions: 0,
            generation: 0,
            next_seq: 0,
            synced: false,
            cluster: cluster.map(String::into_boxed_str),
        }
    }

    /// Applies one watcher event.
    pub fn apply(&mut self, event: KubeEvent) -> Touched {
        match event {
            KubeEvent::ListStarted => {
                self.generation += 1;
                Touched::Nothing
            }
            KubeEvent::Pod(info) => self.upsert(*info),
            KubeEvent::PodDeleted(uid) => {
                if let Some(uid) = PodUid::parse(&uid) {
                    self.remove(uid);
                }
                Touched::Nothing
            }
            KubeEvent::ListDone => {
                let generation = self.generation;
                let stale: Vec<PodUid> = self
                    .pods
                    .iter()
                    .filter(|(_, e)| e.generation != generation)
                    .map(|(uid, _)| *uid)
                    .collect();
                for uid in stale {
                    self.remove(uid);
                }
                self.synced = true;
                Touched::Listed
            }
        }
    }

    /// The Pod (and container) a process's cgroups point at: by container id, else by the
    /// Pod uid in the cgroup path (a container the kubelet has not reported yet).
    pub fn lookup(&self, ids: &CgroupIds) -> Option<PodView<'_>> {
        let cluster = self.cluster.as_deref();
        if let Some(id) = ids.container
            && let Some(entry) = self.containers.get(&id).and_then(|u| self.pods.get(u))
        {
            let container = entry
                .meta
                .containers
                .iter()
                .find(|(c, _)| *c == id)
                .map(|(_, n)| &**n);
            return Some(PodView {
                meta: &entry.meta,
                container,
                cluster,
            });
        }
        let entry = self.pods.get(&ids.pod?)?;
        Some(PodView {
            meta: &entry.meta,
            container: None,
            cluster,
        })
    }

    /// Whether a full list has completed at least once.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Pods cached.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no Pod is cached.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Containers indexed.
    pub fn containers(&self) -> usize {
        self.containers.len()
    }

    /// Distinct interned strings.
    pub fn interned(&self) -> usize {
        self.strings.len()
    }

    /// Pods evicted because the cache was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// An estimate of the heap the cache holds, in bytes: entries, index tables (at their
    /// capacity) and each interned string once.
    pub fn approx_bytes(&self) -> usize {
        let pair = size_of::<(Arc<str>, Arc<str>)>();
        let entries: usize = self
            .pods
            .values()
            .map(|e| {
                let m = &e.meta;
                m.name.len()
                    + m.start_time.as_ref().map_or(0, |s| s.len())
                    + (m.labels.len() + m.annotations.len()) * pair
                    + m.owners.len() * size_of::<(OwnerKind, Arc<str>)>()
                    + m.containers.len() * size_of::<(ContainerId, Arc<str>)>()
            })
            .sum();
        let tables = self.pods.capacity() * (size_of::<PodUid>() + size_of::<Entry>() + 1)
            + self.containers.capacity() * (size_of::<ContainerId>() + size_of::<PodUid>() + 1)
            + self.order.capacity() * size_of::<(PodUid, u64)>()
            + self.strings.capacity() * (size_of::<Arc<str>>() + 1);
        // An `Arc<str>` allocation holds two counters before the bytes.
        let strings: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        entries + tables + strings
    }

    fn upsert(&mut self, info: PodInfo) -> Touched {
        let Some(uid) = PodUid::parse(&info.uid) else {
            tracing::debug!(pod = %info.name, uid = %info.uid, "Pod uid is not a UUID; ignored.");
            return Touched::Nothing;
        };
        let meta = self.compact(uid, info);
        let generation = self.generation;
        if let Some(entry) = self.pods.get_mut(&uid) {
            entry.generation = generation;
            if entry.meta == meta {
                return Touched::Nothing;
            }
            for (id, _) in &entry.meta.containers {
                self.containers.remove(id);
            }
            for (id, _) in &meta.containers {
                self.containers.insert(*id, uid);
            }
            entry.meta = meta;
            self.removed_since_purge += 1;
            self.maybe_purge();
            return Touched::Pod(uid);
        }
        while self.pods.len() >= self.capacity {
            self.evict_one();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((uid, seq));
        for (id, _) in &meta.containers {
            self.containers.insert(*id, uid);
        }
        self.pods.insert(
            uid,
            Entry {
                meta,
                generation,
                seq,
            },
        );
        if self.order.len() > 2 * self.capacity {
            let pods = &self.pods;
            self.order
                .retain(|(uid, seq)| pods.get(uid).is_some_and(|e| e.seq == *seq));
        }
        Touched::Pod(uid)
    }

    fn evict_one(&mut self) {
        while let Some((uid, seq)) = self.order.pop_front() {
            if self.pods.get(&uid).is_some_and(|e| e.seq == seq) {
                self.remove(uid);
                self.evictions += 1;
                return;
            }
        }
    }

    fn remove(&mut self, uid: PodUid) {
        if let Some(entry) = self.pods.remove(&uid) {
            for (id, _) in &entry.meta.containers {
                if self.containers.get(id) == Some(&uid) {
                    self.containers.remove(id);
                }
            }
            self.removed_since_purge += 1;
            self.maybe_purge();
        }
    }

    /// Drops interned strings no Pod uses any more, once enough Pods changed or left.
    fn maybe_purge(&mut self) {
        if self.removed_since_purge > 64.max(self.pods.len() / 2) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.removed_since_purge = 0;
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(have) = self.strings.get(s) {
            return Arc::clone(have);
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&new));
        new
    }

    fn compact(&mut self, uid: PodUid, info: PodInfo) -> PodMeta {
        let pairs = |list: Vec<(String, String)>, store: &mut Self| {
            let mut out: Vec<(Arc<str>, Arc<str>)> = list
                .iter()
                .map(|(k, v)| (store.intern(k), store.intern(v)))
                .collect();
            out.sort();
            out.into_boxed_slice()
        };
        let labels = pairs(info.labels, self);
        let annotations = pairs(info.annotations, self);
        let owners = info
            .owners
            .iter()
            .map(|(kind, name)| (*kind, self.intern(name)))
            .collect();
        let mut containers: Vec<(ContainerId, Arc<str>)> = info
            .containers
            .iter()
            .filter_map(|(id, name)| Some((ContainerId::from_status(id)?, self.intern(name))))
            .collect();
        containers.sort();
        PodMeta {
            uid,
            name: info.name.into_boxed_str(),
            namespace: self.intern(&info.namespace),
            node: self.intern(&info.node),
            start_time: info.start_time.map(String::into_boxed_str),
            labels,
            annotations,
            owners,
            containers: containers.into_boxed_slice(),
        }
    }
}
