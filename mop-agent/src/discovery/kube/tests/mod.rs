//! Kubernetes metadata tests: the watcher against an in-process API server serving recorded
//! objects (`tests/fixtures/kube/`), the Pod cache's bounds, selection and naming on fake
//! `/proc` trees with fake metadata, and the enable logic.

mod api;
mod connect;
mod fake_api;
mod namespaces;
mod scanner;
mod selectors;

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::fake_api::{FakeApi, fixture};
use super::{
    KubeEvent, PodStore,
    cgroup::{CgroupIds, ContainerId, PodUid},
    store::{OwnerKind, PodInfo},
    watch::{AnnotationFilter, WatchSettings},
};
use crate::config::{DiscoveryConfig, KubeConfig};

/// The node the agent under test runs on (the fixtures' Pods but one are there).
const NODE: &str = "node-a";
/// Every recorded object.
const FIXTURES: &[&str] = &[
    "cronjob-report.json",
    "daemonset-fluent-bit.json",
    "deployment-checkout.json",
    "deployment-frontend.json",
    "job-db-migrate.json",
    "job-report.json",
    "pod-checkout.json",
    "pod-coredns.json",
    "pod-db-migrate.json",
    "pod-debug-shell.json",
    "pod-fluent-bit.json",
    "pod-frontend.json",
    "pod-other-node.json",
    "pod-postgres.json",
    "pod-report.json",
    "replicaset-checkout.json",
    "replicaset-coredns.json",
    "replicaset-frontend.json",
    "statefulset-postgres.json",
];

fn all_fixtures() -> Vec<Value> {
    FIXTURES.iter().map(|f| fixture(f)).collect()
}

/// The cgroups of a process in the first container of a recorded Pod.
fn cgroups_of(pod: &Value) -> CgroupIds {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap();
    CgroupIds {
        container: ContainerId::from_status(id),
        pod: PodUid::parse(pod["metadata"]["uid"].as_str().unwrap()),
    }
}

fn kube_config() -> KubeConfig {
    KubeConfig {
        cluster_name: Some("prod-eu1".to_owned()),
        ..KubeConfig::default()
    }
}

/// Watcher settings for tests: quick retries.
fn settings() -> WatchSettings {
    WatchSettings {
        node_name: NODE.to_owned(),
        annotations: AnnotationFilter::default(),
        resync_period: Duration::from_hours(1),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        page_size: 500,
    }
}

/// A watcher against a fake API server, its events applied to a store as discovery would.
struct Pump {
    events: mpsc::Receiver<KubeEvent>,
    store: PodStore,
    lists_started: usize,
    lists_done: usize,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Pump {
    fn start(api: &FakeApi, settings: WatchSettings) -> Self {
        let cancel = CancellationToken::new();
        let mut meta = super::spawn_with(
            api.client(),
            settings,
            &kube_config(),
            &DiscoveryConfig::default(),
            cancel.clone(),
        );
        Self {
            events: meta.discovery.take_events().unwrap(),
            store: PodStore::new(super::MAX_PODS, kube_config().cluster_name),
            lists_started: 0,
            lists_done: 0,
            cancel,
            task: meta.watcher,
        }
    }

    /// Applies events until `done` holds (15 s at most).
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !done(self) {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("the watcher stopped");
            match event {
                KubeEvent::ListStarted => self.lists_started += 1,
                KubeEvent::ListDone => self.lists_done += 1,
                _ => {}
            }
            self.store.apply(event);
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// A Pod for fake metadata.
fn pod(name: &str, namespace: &str, uid: &str) -> PodInfo {
    PodInfo {
        uid: uid.to_owned(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        node: NODE.to_owned(),
        ..PodInfo::default()
    }
}

/// A 64-digit container id made of one repeated hex digit.
fn container_id(digit: char) -> String {
    std::iter::repeat_n(digit, 64).collect()
}

fn with_deployment(mut p: PodInfo, deployment: &str, hash: &str) -> PodInfo {
    p.owners = vec![
        (OwnerKind::ReplicaSet, format!("{deployment}-{hash}")),
        (OwnerKind::Deployment, deployment.to_owned()),
    ];
    p
}
