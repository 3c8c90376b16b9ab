//! Selection on Kubernetes fields: every `k8s_*` selector, labels and annotations, exclusions
//! and the default namespace exclusions, against fake metadata.

use std::collections::BTreeMap;

use super::{
    CgroupIds, ContainerId, KubeEvent, PodInfo, PodStore, container_id, pod, with_deployment,
};
use crate::{
    config::{DiscoveryConfig, PortSet, Selector, glob::Glob},
    discovery::{
        kube::store::OwnerKind,
        matcher::{self, Candidate},
    },
};

/// `(short name, container digit, Pod)`.
fn pods() -> Vec<(&'static str, char, PodInfo)> {
    let mut web = with_deployment(
        pod(
            "frontend-7d9c5b8f6d-x2x9k",
            "shop",
            "e93a6229-ed5f-4f16-999d-2912d8872338",
        ),
        "frontend",
        "7d9c5b8f6d",
    );
    web.labels = vec![
        ("app".into(), "frontend".into()),
        ("tier".into(), "web".into()),
    ];
    web.annotations = vec![("team".into(), "payments".into())];
    let mut db = pod("postgres-0", "data", "1c0e7d62-8b53-4f0c-9a7e-0f4b2d7c9e11");
    db.owners = vec![(OwnerKind::StatefulSet, "postgres".into())];
    db.labels = vec![("app.kubernetes.io/name".into(), "postgresql".into())];
    let dns = with_deployment(
        pod(
            "coredns-668d6bf9bc-4hzrv",
            "kube-system",
            "5a4f3e2d-1c0b-4a98-8776-655443322110",
        ),
        "coredns",
        "668d6bf9bc",
    );
    let mut cron = pod(
        "report-29012340-q7x4z",
        "batch-jobs",
        "7b6a5948-3726-4150-8f9e-8d7c6b5a4938",
    );
    cron.owners = vec![
        (OwnerKind::Job, "report-29012340".into()),
        (OwnerKind::CronJob, "report".into()),
    ];
    let mut ds = pod(
        "fluent-bit-7xk2p",
        "logging",
        "2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b",
    );
    ds.owners = vec![(OwnerKind::DaemonSet, "fluent-bit".into())];
    let bare = pod(
        "debug-shell",
        "default",
        "9f8e7d6c-5b4a-4392-8180-7f6e5d4c3b2a",
    );
    let mut out = vec![
        ("web", 'a', web),
        ("db", 'b', db),
        ("dns", 'c', dns),
        ("cron", 'd', cron),
        ("ds", 'e', ds),
        ("bare", 'f', bare),
    ];
    let names = [
        "frontend",
        "postgresql",
        "coredns",
        "report",
        "fluent-bit",
        "shell",
    ];
    for ((_, digit, p), name) in out.iter_mut().zip(names) {
        p.containers = vec![(
            format!("containerd://{}", container_id(*digit)),
            name.to_owned(),
        )];
    }
    out
}

fn store() -> PodStore {
    let mut store = PodStore::new(64, None);
    store.apply(KubeEvent::ListStarted);
    for (_, _, p) in pods() {
        store.apply(KubeEvent::Pod(Box::new(p)));
    }
    store.apply(KubeEvent::ListDone);
    store
}

/// A selector field's glob.
#[expect(clippy::unnecessary_wraps, reason = "selector fields are options")]
fn glob(p: &str) -> Option<Glob> {
    Some(Glob::new(p).unwrap())
}

fn globs(pairs: &[(&str, &str)]) -> BTreeMap<String, Glob> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Glob::new(v).unwrap()))
        .collect()
}

/// The short names of the Pods whose process (listening on `ports`) `config` selects.
fn selected(config: &DiscoveryConfig, ports: &[u16]) -> Vec<&'static str> {
    let store = store();
    pods()
        .into_iter()
        .filter(|(_, digit, _)| {
            let ids = CgroupIds {
                container: ContainerId::from_status(&container_id(*digit)),
                pod: None,
            };
            let candidate = Candidate {
                exe: "/app/server",
                ports,
                pod: store.lookup(&ids),
            };
            matcher::select(config, &candidate).is_some()
        })
        .map(|(name, _, _)| name)
        .collect()
}

fn instrument(sel: Selector) -> DiscoveryConfig {
    DiscoveryConfig {
        instrument: vec![sel],
        ..DiscoveryConfig::default()
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one row per selector field")]
fn every_kubernetes_field_selects_its_pods() {
    let s = Selector::default;
    let table: Vec<(&str, Selector, Vec<&str>)> = vec![
        (
            "namespace",
            Selector {
                k8s_namespace: glob("shop"),
                ..s()
            },
            vec!["web"],
        ),
        // kube-system is excluded by default.
        (
            "any namespace",
            Selector {
                k8s_namespace: glob("*"),
                ..s()
            },
            vec!["web", "db", "cron", "ds", "bare"],
        ),
        (
            "pod name",
            Selector {
                k8s_pod_name: glob("postgres-*"),
                ..s()
            },
            vec!["db"],
        ),
        (
            "deployment",
            Selector {
                k8s_deployment_name: glob("*"),
                ..s()
            },
            vec!["web"],
        ),
        (
            "replicaset",
            Selector {
                k8s_replicaset_name: glob("frontend-*"),
                ..s()
            },
            vec!["web"],
        ),
        (
            "statefulset",
            Selector {
                k8s_statefulset_name: glob("postgres"),
                ..s()
            },
            vec!["db"],
        ),
        (
            "daemonset",
            Selector {
                k8s_daemonset_name: glob("fluent-*"),
                ..s()
            },
            vec!["ds"],
        ),
        (
            "job",
            Selector {
                k8s_job_name: glob("report-*"),
                ..s()
            },
            vec!["cron"],
        ),
        (
            "cronjob",
            Selector {
                k8s_cronjob_name: glob("report"),
                ..s()
            },
            vec!["cron"],
        ),
        (
            "top owner (or the Pod itself)",
            Selector {
                k8s_owner_name: glob("{frontend,postgres,report,debug-shell}"),
                ..s()
            },
            vec!["web", "db", "cron", "bare"],
        ),
        (
            "container",
            Selector {
                k8s_container_name: glob("postgres*"),
                ..s()
            },
            vec!["db"],
        ),
        (
            "label",
            Selector {
                k8s_pod_labels: globs(&[("tier", "web")]),
                ..s()
            },
            vec!["web"],
        ),
        (
            "label glob",
            Selector {
                k8s_pod_labels: globs(&[("app.kubernetes.io/name", "postgres*")]),
                ..s()
            },
            vec!["db"],
        ),
        (
            "every label must match",
            Selector {
                k8s_pod_labels: globs(&[("tier", "web"), ("app", "backend")]),
                ..s()
            },
            vec![],
        ),
        (
            "missing label",
            Selector {
                k8s_pod_labels: globs(&[("missing", "*")]),
                ..s()
            },
            vec![],
        ),
        (
            "annotation",
            Selector {
                k8s_pod_annotations: globs(&[("team", "pay*")]),
                ..s()
            },
            vec!["web"],
        ),
        (
            "kubernetes and port",
            Selector {
                k8s_namespace: glob("{shop,data}"),
                open_ports: Some(PortSet::parse("5432").unwrap()),
                ..s()
            },
            vec![],
        ),
    ];
    for (what, sel, want) in table {
        assert_eq!(selected(&instrument(sel), &[8080]), want, "{what}");
    }
    let both = Selector {
        k8s_namespace: glob("shop"),
        open_ports: Some(PortSet::parse("8080").unwrap()),
        ..s()
    };
    assert_eq!(selected(&instrument(both.clone()), &[8080]), ["web"]);
    assert_eq!(selected(&instrument(both), &[]), Vec::<&str>::new());
}

#[test]
fn exclusions_and_default_namespace_exclusions() {
    let everything = Selector {
        k8s_namespace: glob("*"),
        ..Selector::default()
    };
    let mut config = instrument(everything.clone());
    config.exclude_instrument = vec![Selector {
        k8s_pod_labels: globs(&[("tier", "web")]),
        ..Selector::default()
    }];
    assert_eq!(selected(&config, &[8080]), ["db", "cron", "ds", "bare"]);
    // `default_exclude_instrument: []` lets kube-system in.
    let mut config = instrument(everything);
    config.default_exclude_instrument.clear();
    assert_eq!(
        selected(&config, &[8080]),
        ["web", "db", "dns", "cron", "ds", "bare"]
    );
    // No selector: every listening process, but not in the excluded namespaces.
    assert_eq!(
        selected(&DiscoveryConfig::default(), &[8080]),
        ["web", "db", "cron", "ds", "bare"]
    );
    assert_eq!(
        selected(&DiscoveryConfig::default(), &[]),
        Vec::<&str>::new()
    );
}

#[test]
fn kubernetes_selectors_never_match_outside_a_pod() {
    let config = instrument(Selector {
        k8s_namespace: glob("*"),
        ..Selector::default()
    });
    let host = Candidate {
        exe: "/usr/sbin/nginx",
        ports: &[80],
        pod: None,
    };
    assert!(matcher::select(&config, &host).is_none());
    // An unknown container is outside any known Pod too.
    let store = store();
    let ids = CgroupIds {
        container: ContainerId::from_status(&container_id('9')),
        pod: None,
    };
    assert!(store.lookup(&ids).is_none());
}
