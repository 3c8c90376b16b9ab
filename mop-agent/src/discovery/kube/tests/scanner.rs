//! Discovery with Kubernetes metadata on fake `/proc` trees: held decisions, announcements
//! when metadata arrives, re-announcements when it changes, exclusions.

use std::{collections::BTreeMap, fs, sync::Arc, time::Duration};

use super::{KubeEvent, PodInfo, PodStore, container_id, pod, with_deployment};
use crate::{
    config::{DiscoveryConfig, Selector, glob::Glob},
    discovery::{
        Change, Scanner, identity::IdentityContext, kube::KubeDiscovery, procfs::ProcFs,
        tests::FakeProc,
    },
    span::{AttrValue, ServiceResource},
};

const WEB_UID: &str = "e93a6229-ed5f-4f16-999d-2912d8872338";

fn scanner(fake: &FakeProc, config: DiscoveryConfig, hold: Duration) -> Scanner {
    let kube = KubeDiscovery::new(PodStore::new(64, None), hold, &config, None);
    let identity = IdentityContext {
        host_name: "node-a".into(),
        service_name_override: None,
    };
    Scanner::new(ProcFs::new(&fake.root), config, identity).with_kube(kube)
}

/// Listening sockets of every fake process (they share one network namespace): inode `pid`
/// on port 8080.
const LISTENERS: &[(u64, u16)] = &[
    (10, 8080),
    (11, 8080),
    (20, 8080),
    (30, 8080),
    (31, 8080),
    (40, 8080),
    (50, 8080),
    (51, 8080),
    (52, 8080),
    (60, 8080),
    (70, 8080),
];

/// A process listening on 8080, in container `digit` of the Pod `uid` (systemd driver,
/// containerd), or on the host when `uid` is `None`.
fn add(fake: &FakeProc, pid: u32, exe: &str, digit: char, uid: Option<&str>) {
    fake.add(pid, exe, 1, &[u64::from(pid)]);
    fake.set_listeners(pid, LISTENERS);
    let cgroup = match uid {
        Some(uid) => format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope\n",
            uid.replace('-', "_"),
            container_id(digit)
        ),
        None => "0::/system.slice/nginx.service\n".to_owned(),
    };
    fs::write(fake.root.join(pid.to_string()).join("cgroup"), cgroup).unwrap();
}

/// The frontend Pod, its `frontend` container with id `a...` when `with_container`.
fn web(with_container: bool) -> PodInfo {
    let mut p = with_deployment(
        pod("frontend-7d9c5b8f6d-x2x9k", "shop", WEB_UID),
        "frontend",
        "7d9c5b8f6d",
    );
    p.labels = vec![("tier".into(), "web".into())];
    if with_container {
        p.containers = vec![(
            format!("containerd://{}", container_id('a')),
            "frontend".into(),
        )];
    }
    p
}

fn event(p: PodInfo) -> KubeEvent {
    KubeEvent::Pod(Box::new(p))
}

fn started(changes: &[Change]) -> Vec<(u32, Arc<ServiceResource>)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Started { pid, resource } => Some((*pid, Arc::clone(resource))),
            Change::Exited(_) | Change::Rejected(_) => None,
        })
        .collect()
}

fn names(changes: &[Change]) -> Vec<(u32, String)> {
    started(changes)
        .into_iter()
        .map(|(pid, r)| (pid, r.service_name.clone()))
        .collect()
}

fn attr<'a>(r: &'a ServiceResource, key: &str) -> Option<&'a str> {
    r.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| match v {
            AttrValue::Str(s) => s.as_str(),
            other => panic!("{key}: {other:?}"),
        })
}

const HOUR: Duration = Duration::from_hours(1);

#[test]
fn decisions_wait_for_pod_metadata_then_announce_kubernetes_names() {
    let fake = FakeProc::new("kube-wait");
    add(&fake, 10, "/usr/sbin/nginx", 'a', Some(WEB_UID));
    add(&fake, 11, "/usr/sbin/nginx", 'b', None);
    let mut s = scanner(&fake, DiscoveryConfig::default(), HOUR);
    // The host process is decided at once; the container's waits for its Pod.
    assert_eq!(names(&s.scan()), [(11, "nginx".to_owned())]);
    assert!(s.scan().is_empty());
    assert!(s.kube_update(KubeEvent::ListStarted).is_empty());
    let changes = s.kube_update(event(web(true)));
    let got = started(&changes);
    assert_eq!(got.len(), 1);
    let (pid, r) = &got[0];
    assert_eq!((*pid, r.service_name.as_str()), (10, "frontend"));
    assert_eq!(r.service_namespace.as_deref(), Some("shop"));
    assert_eq!(
        r.service_instance_id,
        "shop.frontend-7d9c5b8f6d-x2x9k.frontend"
    );
    assert_eq!(attr(r, "k8s.deployment.name"), Some("frontend"));
    assert_eq!(attr(r, "k8s.container.name"), Some("frontend"));
    assert_eq!(attr(r, "process.executable.name"), Some("nginx"));
    assert!(s.kube_update(KubeEvent::ListDone).is_empty());
    // The same metadata again changes nothing; the next pass neither.
    assert!(s.kube_update(event(web(true))).is_empty());
    assert!(s.scan().is_empty());
    assert_eq!(s.instrumented(), 2);
}

#[test]
fn pods_in_excluded_namespaces_are_never_announced() {
    let fake = FakeProc::new("kube-excluded");
    add(&fake, 20, "/coredns", 'c', Some(WEB_UID));
    let mut s = scanner(&fake, DiscoveryConfig::default(), HOUR);
    assert!(s.scan().is_empty());
    let mut dns = web(false);
    dns.namespace = "kube-system".into();
    dns.containers = vec![(
        format!("containerd://{}", container_id('c')),
        "coredns".into(),
    )];
    assert!(s.kube_update(event(dns)).is_empty());
    assert!(s.scan().is_empty());
    assert_eq!(s.instrumented(), 0);
}

#[test]
fn after_the_hold_processes_are_decided_then_renamed_or_dropped_when_metadata_comes() {
    let fake = FakeProc::new("kube-late");
    add(&fake, 30, "/usr/sbin/nginx", 'a', Some(WEB_UID));
    let mut s = scanner(&fake, DiscoveryConfig::default(), Duration::ZERO);
    // No metadata within the hold: decided on what is known (a listener, named by its exe).
    assert_eq!(names(&s.scan()), [(30, "nginx".to_owned())]);
    // Metadata arrives: re-announced (an update for the span stage), then renamed.
    assert_eq!(
        names(&s.kube_update(event(web(true)))),
        [(30, "frontend".to_owned())]
    );
    let mut renamed = web(true);
    renamed
        .labels
        .push(("app.kubernetes.io/name".into(), "storefront".into()));
    assert_eq!(
        names(&s.kube_update(event(renamed))),
        [(30, "storefront".to_owned())]
    );
    // A process whose Pod turns out to be in an excluded namespace is dropped.
    add(
        &fake,
        31,
        "/coredns",
        'c',
        Some("5a4f3e2d-1c0b-4a98-8776-655443322110"),
    );
    assert_eq!(names(&s.scan()), [(31, "coredns".to_owned())]);
    let mut dns = with_deployment(
        pod(
            "coredns-668d6bf9bc-4hzrv",
            "kube-system",
            "5a4f3e2d-1c0b-4a98-8776-655443322110",
        ),
        "coredns",
        "668d6bf9bc",
    );
    dns.containers = vec![(
        format!("containerd://{}", container_id('c')),
        "coredns".into(),
    )];
    assert_eq!(s.kube_update(event(dns)), [Change::Exited(31)]);
    assert_eq!(s.instrumented(), 1);
}

#[test]
fn a_label_change_can_deselect() {
    let fake = FakeProc::new("kube-deselect");
    add(&fake, 40, "/app/server", 'a', Some(WEB_UID));
    let config = DiscoveryConfig {
        instrument: vec![Selector {
            k8s_pod_labels: BTreeMap::from([("tier".to_owned(), Glob::new("web").unwrap())]),
            ..Selector::default()
        }],
        ..DiscoveryConfig::default()
    };
    let mut s = scanner(&fake, config, HOUR);
    assert!(s.scan().is_empty());
    assert_eq!(
        names(&s.kube_update(event(web(true)))),
        [(40, "frontend".to_owned())]
    );
    let mut relabelled = web(true);
    relabelled.labels = vec![("tier".into(), "batch".into())];
    assert_eq!(s.kube_update(event(relabelled)), [Change::Exited(40)]);
    assert_eq!(s.instrumented(), 0);
}

#[test]
fn an_execd_program_waiting_for_metadata_is_rejected_or_started_later() {
    let fake = FakeProc::new("kube-exec");
    let config = DiscoveryConfig {
        instrument: vec![Selector {
            exe_path: Some(Glob::new("*/server").unwrap()),
            ..Selector::default()
        }],
        ..DiscoveryConfig::default()
    };
    let mut s = scanner(&fake, config, HOUR);
    add(
        &fake,
        50,
        "/app/server",
        'c',
        Some("5a4f3e2d-1c0b-4a98-8776-655443322110"),
    );
    add(&fake, 51, "/app/server", 'a', Some(WEB_UID));
    // Undecided: no rejection yet (the capture stage keeps what it captured meanwhile).
    assert!(s.exec(50, None).is_empty());
    assert!(s.exec(51, None).is_empty());
    let mut dns = pod(
        "coredns-668d6bf9bc-4hzrv",
        "kube-system",
        "5a4f3e2d-1c0b-4a98-8776-655443322110",
    );
    dns.containers = vec![(
        format!("containerd://{}", container_id('c')),
        "coredns".into(),
    )];
    assert_eq!(s.kube_update(event(dns)), [Change::Rejected(50)]);
    assert_eq!(
        names(&s.kube_update(event(web(true)))),
        [(51, "frontend".to_owned())]
    );
    // A pending exec'd process that exits is rejected too.
    add(
        &fake,
        52,
        "/app/server",
        'd',
        Some("7b6a5948-3726-4150-8f9e-8d7c6b5a4938"),
    );
    assert!(s.exec(52, None).is_empty());
    fake.remove(52);
    assert_eq!(s.scan(), [Change::Rejected(52)]);
}

#[test]
fn a_container_not_yet_reported_is_found_by_its_pod_uid() {
    let fake = FakeProc::new("kube-pod-uid");
    add(&fake, 60, "/usr/sbin/nginx", 'a', Some(WEB_UID));
    let mut s = scanner(&fake, DiscoveryConfig::default(), HOUR);
    assert!(s.scan().is_empty());
    // The kubelet has not reported the container's id yet: the Pod is enough to decide.
    let got = started(&s.kube_update(event(web(false))));
    let (_, r) = &got[0];
    assert_eq!(r.service_name, "frontend");
    assert_eq!(attr(r, "k8s.container.name"), None);
    assert_eq!(r.service_instance_id, "shop.frontend-7d9c5b8f6d-x2x9k");
    // Once it is, the resource gains the container.
    let got = started(&s.kube_update(event(web(true))));
    let (_, r) = &got[0];
    assert_eq!(attr(r, "k8s.container.name"), Some("frontend"));
    assert_eq!(
        r.service_instance_id,
        "shop.frontend-7d9c5b8f6d-x2x9k.frontend"
    );
}

#[test]
fn a_container_name_selector_waits_for_the_container_id() {
    let fake = FakeProc::new("kube-container");
    add(&fake, 70, "/usr/sbin/nginx", 'a', Some(WEB_UID));
    let config = DiscoveryConfig {
        instrument: vec![Selector {
            k8s_container_name: Some(Glob::new("frontend").unwrap()),
            ..Selector::default()
        }],
        ..DiscoveryConfig::default()
    };
    let mut s = scanner(&fake, config, HOUR);
    assert!(s.scan().is_empty());
    assert!(s.kube_update(event(web(false))).is_empty());
    assert!(s.scan().is_empty());
    assert_eq!(
        names(&s.kube_update(event(web(true)))),
        [(70, "frontend".to_owned())]
    );
}

#[test]
fn after_sync_containers_outside_any_pod_are_not_held() {
    let fake = FakeProc::new("kube-docker");
    // `docker run` on the node: a container cgroup without a Pod.
    fake.add(80, "/usr/sbin/nginx", 1, &[80]);
    fake.set_listeners(80, &[(80, 8080)]);
    let docker = format!("0::/system.slice/docker-{}.scope\n", container_id('e'));
    fs::write(fake.root.join("80/cgroup"), docker).unwrap();
    let mut s = scanner(&fake, DiscoveryConfig::default(), HOUR);
    assert!(s.scan().is_empty(), "held until the first sync");
    s.kube_update(KubeEvent::ListStarted);
    assert_eq!(
        names(&s.kube_update(KubeEvent::ListDone)),
        [(80, "nginx".to_owned())]
    );
}
