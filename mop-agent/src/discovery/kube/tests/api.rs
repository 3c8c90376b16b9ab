//! The watcher against the fake API server: recorded objects to attributes and names, watch
//! events, re-list after `410 Gone`, recovery after a restart, and 10 000 Pods.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{
    CgroupIds, FakeApi, NODE, PodUid, Pump, all_fixtures, cgroups_of, fake_api::ApiState, fixture,
    settings,
};
use crate::{
    discovery::{
        identity::{self, IdentityContext, ProcessIdentity},
        kube::{MAX_PODS, cgroup::ContainerId, naming},
        matcher::Selection,
    },
    span::AttrValue,
};

fn attrs(view: &crate::discovery::kube::PodView<'_>) -> HashMap<String, String> {
    naming::attributes(view)
        .into_iter()
        .map(|(k, v)| match v {
            AttrValue::Str(s) => (k, s),
            other => panic!("{k}: {other:?}"),
        })
        .collect()
}

/// A recorded Pod, its `service.name` and `service.namespace`, and the attributes it must have.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

async fn synced(state: ApiState) -> (FakeApi, Pump) {
    let api = FakeApi::start(state).await;
    let mut pump = Pump::start(&api, settings());
    pump.until("the first list", |p| p.lists_done == 1).await;
    api.wait_for_watches(1).await;
    (api, pump)
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one row per recorded Pod")]
async fn recorded_pods_get_their_owners_names_and_attributes() {
    let (api, pump) = synced(ApiState::with(all_fixtures())).await;
    // Only this node's Pods, asked for with a field selector.
    assert_eq!(pump.store.len(), 8);
    let requests = api.with_state(|s| s.requests.clone());
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName=node-a")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/pods"))
            .all(|r| r.contains("fieldSelector=spec.nodeName=node-a"))
    );
    // One metadata-only GET per ReplicaSet and Job; StatefulSets and DaemonSets need none.
    let mut owner_gets: Vec<&str> = requests
        .iter()
        .filter(|r| r.starts_with("GET /apis/"))
        .map(String::as_str)
        .collect();
    owner_gets.sort_unstable();
    assert_eq!(
        owner_gets,
        [
            "GET /apis/apps/v1/namespaces/kube-system/replicasets/coredns-668d6bf9bc [meta]",
            "GET /apis/apps/v1/namespaces/shop/replicasets/checkout-5f7b9c6d48 [meta]",
            "GET /apis/apps/v1/namespaces/shop/replicasets/frontend-7d9c5b8f6d [meta]",
            "GET /apis/batch/v1/namespaces/batch-jobs/jobs/report-29012340 [meta]",
            "GET /apis/batch/v1/namespaces/shop/jobs/db-migrate [meta]",
        ]
    );

    // service.name precedence: annotation, app.kubernetes.io/name label, owner (the CronJob,
    // not its Job), pod name; owner attributes per kind.
    let table: &[Row] = &[
        (
            "pod-frontend.json",
            "frontend",
            "shop",
            &[
                ("k8s.deployment.name", "frontend"),
                ("k8s.replicaset.name", "frontend-7d9c5b8f6d"),
            ],
        ),
        (
            "pod-checkout.json",
            "checkout-api",
            "shop-prod",
            &[
                ("k8s.deployment.name", "checkout"),
                ("k8s.replicaset.name", "checkout-5f7b9c6d48"),
                ("deployment.environment.name", "production"),
            ],
        ),
        (
            "pod-postgres.json",
            "postgresql",
            "data",
            &[("k8s.statefulset.name", "postgres")],
        ),
        (
            "pod-fluent-bit.json",
            "fluent-bit",
            "logging",
            &[("k8s.daemonset.name", "fluent-bit")],
        ),
        (
            "pod-report.json",
            "report",
            "batch-jobs",
            &[
                ("k8s.job.name", "report-29012340"),
                ("k8s.cronjob.name", "report"),
            ],
        ),
        (
            "pod-db-migrate.json",
            "db-migrate",
            "shop",
            &[("k8s.job.name", "db-migrate")],
        ),
        ("pod-debug-shell.json", "debug-shell", "default", &[]),
        (
            "pod-coredns.json",
            "coredns",
            "kube-system",
            &[
                ("k8s.deployment.name", "coredns"),
                ("k8s.replicaset.name", "coredns-668d6bf9bc"),
            ],
        ),
    ];
    let owner_keys = [
        "k8s.deployment.name",
        "k8s.replicaset.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.job.name",
        "k8s.cronjob.name",
    ];
    for (file, name, namespace, expected) in table {
        let recorded = fixture(file);
        let view = pump.store.lookup(&cgroups_of(&recorded)).unwrap();
        assert_eq!(naming::service_name(&view), *name, "{file}");
        assert_eq!(naming::service_namespace(&view), *namespace, "{file}");
        let got = attrs(&view);
        for key in owner_keys {
            let want = expected.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            assert_eq!(got.get(key).map(String::as_str), want, "{file} {key}");
        }
        for (k, v) in *expected {
            assert_eq!(got.get(*k).map(String::as_str), Some(*v), "{file} {k}");
        }
        assert_eq!(
            got["k8s.pod.uid"],
            recorded["metadata"]["uid"].as_str().unwrap()
        );
        assert_eq!(got["k8s.node.name"], NODE);
    }

    pump.stop().await;
}

#[tokio::test]
async fn a_containers_whole_resource() {
    let (_api, pump) = synced(ApiState::with(all_fixtures())).await;
    // The whole resource of the frontend container, through identity.
    let recorded = fixture("pod-frontend.json");
    let view = pump.store.lookup(&cgroups_of(&recorded)).unwrap();
    assert_eq!(view.container(), Some("frontend"));
    let env = HashMap::new();
    let ctx = IdentityContext {
        host_name: "node-a".into(),
        service_name_override: None,
    };
    let p = ProcessIdentity {
        pid: 4242,
        exe: "/usr/local/bin/frontend",
        environ: &env,
        pod: Some(view),
    };
    let r = identity::resource(&ctx, &p, &Selection { selector: None });
    assert_eq!(r.service_name, "frontend");
    assert_eq!(r.service_namespace.as_deref(), Some("shop"));
    assert_eq!(
        r.service_instance_id,
        "shop.frontend-7d9c5b8f6d-x2x9k.frontend"
    );
    let k8s: Vec<(&str, &AttrValue)> = r
        .attributes
        .iter()
        .filter(|(k, _)| k.starts_with("k8s."))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let s = |v: &str| AttrValue::Str(v.to_owned());
    assert_eq!(
        k8s,
        [
            ("k8s.cluster.name", &s("prod-eu1")),
            ("k8s.container.name", &s("frontend")),
            ("k8s.deployment.name", &s("frontend")),
            ("k8s.namespace.name", &s("shop")),
            ("k8s.node.name", &s("node-a")),
            ("k8s.owner.name", &s("frontend")),
            ("k8s.pod.name", &s("frontend-7d9c5b8f6d-x2x9k")),
            ("k8s.pod.start_time", &s("2025-05-12T09:14:03Z")),
            ("k8s.pod.uid", &s("e93a6229-ed5f-4f16-999d-2912d8872338")),
            ("k8s.replicaset.name", &s("frontend-7d9c5b8f6d")),
        ]
    );
    // The istio sidecar of the same Pod is its own instance.
    let sidecar = recorded["status"]["containerStatuses"][1]["containerID"]
        .as_str()
        .unwrap();
    let mut ids = cgroups_of(&recorded);
    ids.container = ContainerId::from_status(sidecar);
    let view = pump.store.lookup(&ids).unwrap();
    assert_eq!(
        naming::service_instance_id(&view),
        "shop.frontend-7d9c5b8f6d-x2x9k.istio-proxy"
    );
    pump.stop().await;
}

#[tokio::test]
async fn the_targets_own_variables_win_over_kubernetes_names() {
    let (_api, pump) = synced(ApiState::with(all_fixtures())).await;
    let view = pump
        .store
        .lookup(&cgroups_of(&fixture("pod-checkout.json")))
        .unwrap();
    let ctx = IdentityContext {
        host_name: "node-a".into(),
        service_name_override: None,
    };
    let name = |env: &[(&str, &str)]| {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let p = ProcessIdentity {
            pid: 1,
            exe: "/app/checkout",
            environ: &env,
            pod: Some(view),
        };
        let r = identity::resource(&ctx, &p, &Selection { selector: None });
        (r.service_name, r.service_namespace, r.service_instance_id)
    };
    assert_eq!(name(&[("OTEL_SERVICE_NAME", "from-env")]).0, "from-env");
    assert_eq!(
        name(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=attrs,service.namespace=ns1,service.instance.id=i-1"
        )]),
        ("attrs".to_owned(), Some("ns1".to_owned()), "i-1".to_owned())
    );
    assert_eq!(
        name(&[]),
        (
            "checkout-api".to_owned(),
            Some("shop-prod".to_owned()),
            "shop.checkout-5f7b9c6d48-9pzl2.checkout".to_owned()
        )
    );
    let env = HashMap::new();
    let p = ProcessIdentity {
        pid: 1,
        exe: "/app/checkout",
        environ: &env,
        pod: None,
    };
    assert_eq!(
        identity::resource(&ctx, &p, &Selection { selector: None }).service_name,
        "checkout"
    );
}

/// A copy of the debug-shell Pod under another name and uid.
fn new_pod(name: &str, uid: &str) -> Value {
    let mut p = fixture("pod-debug-shell.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(uid);
    let id = format!("containerd://{}", uid.replace('-', "").repeat(2));
    p["status"]["containerStatuses"][0]["containerID"] = json!(id);
    p
}

const NEW_UID: &str = "0b7c3f9e-2d41-4c8e-9a55-5f0e7d6c1a23";

fn has(pump: &Pump, uid: &str) -> bool {
    let ids = CgroupIds {
        container: None,
        pod: PodUid::parse(uid),
    };
    pump.store.lookup(&ids).is_some()
}

fn debug_shell_uid() -> String {
    fixture("pod-debug-shell.json")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn watch_events_update_the_cache() {
    let (api, mut pump) = synced(ApiState::with(all_fixtures())).await;
    let mut frontend = fixture("pod-frontend.json");
    frontend["metadata"]["labels"]["app.kubernetes.io/name"] = json!("storefront");
    api.emit("MODIFIED", frontend.clone());
    let ids = cgroups_of(&frontend);
    pump.until("the relabelled Pod", |p| {
        p.store
            .lookup(&ids)
            .is_some_and(|v| naming::service_name(&v) == "storefront")
    })
    .await;
    api.emit("ADDED", new_pod("scratch", NEW_UID));
    pump.until("the new Pod", |p| has(p, NEW_UID)).await;
    api.emit("DELETED", frontend);
    pump.until("the deletion", |p| p.store.lookup(&ids).is_none())
        .await;
    // Another node's Pod never reaches this agent.
    let mut elsewhere = new_pod("elsewhere", "6f1d2c3b-4a59-4e68-8b77-9c0d1e2f3a4b");
    elsewhere["spec"]["nodeName"] = json!("node-b");
    api.emit("ADDED", elsewhere);
    api.emit("DELETED", new_pod("scratch", NEW_UID));
    pump.until("the second deletion", |p| !has(p, NEW_UID))
        .await;
    assert_eq!(pump.store.len(), 7);
    assert_eq!(pump.lists_started, 1, "no re-list was needed");
    pump.stop().await;
}

/// While the watch is broken: one Pod deleted, one added, history compacted.
fn change_behind_the_watch(state: &mut ApiState) {
    state.apply_offline("DELETED", fixture("pod-debug-shell.json"));
    state.apply_offline("ADDED", new_pod("scratch", NEW_UID));
    state.compact();
}

#[tokio::test]
async fn relists_after_a_410_gone_watch_event() {
    let (api, mut pump) = synced(ApiState::with(all_fixtures())).await;
    api.with_state(change_behind_the_watch);
    api.expire_watches();
    pump.until("the re-list", |p| p.lists_done == 2).await;
    assert!(has(&pump, NEW_UID));
    assert!(
        !has(&pump, &debug_shell_uid()),
        "gone from the re-list, so gone from the cache"
    );
    assert_eq!(pump.lists_started, 2);
    assert_eq!(api.with_state(|s| s.pod_lists()), 2);
    pump.stop().await;
}

#[tokio::test]
async fn relists_when_the_watch_request_itself_is_410() {
    let (api, mut pump) = synced(ApiState::with(all_fixtures())).await;
    api.with_state(change_behind_the_watch);
    api.close_watches_then_gone();
    pump.until("the re-list", |p| p.lists_done == 2).await;
    assert!(has(&pump, NEW_UID));
    assert!(!has(&pump, &debug_shell_uid()));
    // The resumed watch was refused with HTTP 410; kube-rs alone would retry it forever.
    assert_eq!(api.with_state(|s| s.gone_answers), 1);
    pump.stop().await;
}

#[tokio::test]
async fn recovers_after_the_api_server_restarts() {
    let (api, mut pump) = synced(ApiState::with(all_fixtures())).await;
    let port = api.port();
    let down = api.stop();
    // Let the watcher notice and fail a few reconnections.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    down.with_state(change_behind_the_watch);
    let api = down.restart().await;
    assert_eq!(api.port(), port);
    pump.until("the re-list after the restart", |p| p.lists_done == 2)
        .await;
    assert!(has(&pump, NEW_UID));
    assert!(!has(&pump, &debug_shell_uid()));
    // And it keeps watching.
    api.emit("DELETED", new_pod("scratch", NEW_UID));
    pump.until("a deletion after the restart", |p| !has(p, NEW_UID))
        .await;
    pump.stop().await;
}

#[tokio::test]
async fn ten_thousand_pods_stay_within_the_cache_bounds() {
    const PODS: usize = 10_000;
    const OWNERS: usize = 10;
    let template = fixture("pod-frontend.json");
    let mut objects = Vec::with_capacity(PODS + OWNERS);
    for r in 0..OWNERS {
        let mut rs = fixture("replicaset-frontend.json");
        rs["metadata"]["name"] = json!(format!("frontend-{r:010}"));
        rs["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{r:012}"));
        objects.push(rs);
    }
    for i in 0..PODS {
        let mut p = template.clone();
        let m = &mut p["metadata"];
        m["name"] = json!(format!("frontend-{:010}-{i:05}", i % OWNERS));
        m["uid"] = json!(format!("{i:08x}-0000-4000-8000-000000000000"));
        m["ownerReferences"][0]["name"] = json!(format!("frontend-{:010}", i % OWNERS));
        m["ownerReferences"][0]["uid"] =
            json!(format!("00000000-0000-4000-8000-{:012}", i % OWNERS));
        m["labels"]["pod-template-hash"] = json!(format!("{:010}", i % OWNERS));
        m.as_object_mut().unwrap().remove("managedFields");
        let statuses = [
            ("initContainerStatuses", 0),
            ("containerStatuses", 0),
            ("containerStatuses", 1),
        ];
        for (tag, (key, index)) in statuses.into_iter().enumerate() {
            p["status"][key][index]["containerID"] =
                json!(format!("containerd://{i:08x}{tag:x}{:055x}", 0));
        }
        objects.push(p);
    }
    let (api, pump) = synced(ApiState::with(objects)).await;
    assert_eq!(pump.store.len(), MAX_PODS);
    assert_eq!(pump.store.evictions(), (PODS - MAX_PODS) as u64);
    // Each kept Pod indexes its init, app and sidecar containers.
    assert_eq!(pump.store.containers(), 3 * MAX_PODS);
    // Shared strings (namespace, node, labels, owners, container names) are stored once.
    assert!(
        pump.store.interned() < 100,
        "{} interned strings",
        pump.store.interned()
    );
    let bytes = pump.store.approx_bytes();
    assert!(bytes < MAX_PODS * 1024, "{bytes} bytes for {MAX_PODS} Pods");
    // The newest Pods are kept, the oldest evicted.
    let id = |i: usize| CgroupIds {
        container: None,
        pod: PodUid::parse(&format!("{i:08x}-0000-4000-8000-000000000000")),
    };
    assert!(pump.store.lookup(&id(PODS - 1)).is_some());
    assert!(pump.store.lookup(&id(0)).is_none());
    // Owners are read once each, in pages of 500 Pods.
    let requests = api.with_state(|s| s.requests.clone());
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.contains("/replicasets/"))
            .count(),
        OWNERS
    );
    assert_eq!(api.with_state(|s| s.pod_lists()), PODS / 500);
    pump.stop().await;
}
