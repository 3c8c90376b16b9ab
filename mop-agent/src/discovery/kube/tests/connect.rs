//! `attributes.kubernetes.enable`: autodetect, true and false, and starting from a kubeconfig.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{FakeApi, KubeEvent, all_fixtures, fake_api::ApiState};
use crate::{
    config::{DiscoveryConfig, KubeConfig, KubeEnable},
    discovery::kube::{
        KubeEnvironment, KubeError,
        connect::{ApiSource, api_source},
        start,
    },
};

/// A temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mop-kube-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn env(dir: &Path) -> KubeEnvironment {
    KubeEnvironment {
        service_account: dir.join("serviceaccount"),
        ..KubeEnvironment::default()
    }
}

fn enable(enable: KubeEnable) -> KubeConfig {
    KubeConfig {
        enable,
        informers_sync_timeout: Duration::from_secs(2),
        ..KubeConfig::default()
    }
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n\
         users:\n- name: test\n  user:\n    token: not-a-real-token\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
         current-context: test\n"
    );
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn false_is_off_whatever_the_environment() {
    let dir = Dir::new("false");
    let mut e = env(&dir.0);
    e.service_host = Some("10.96.0.1".into());
    e.service_port = Some("443".into());
    let cfg = KubeConfig {
        kubeconfig_path: Some(dir.0.join("kubeconfig")),
        ..enable(KubeEnable::False)
    };
    assert_eq!(api_source(&cfg, &e).unwrap(), None);
}

#[test]
fn autodetect_is_on_in_a_pod_or_with_a_kubeconfig() {
    let dir = Dir::new("autodetect");
    let auto = enable(KubeEnable::Autodetect);
    let mut e = env(&dir.0);
    assert_eq!(api_source(&auto, &e).unwrap(), None, "nothing configured");
    e.service_host = Some("10.96.0.1".into());
    e.service_port = Some("443".into());
    assert_eq!(
        api_source(&auto, &e).unwrap(),
        None,
        "no service account token"
    );
    fs::create_dir_all(&e.service_account).unwrap();
    fs::write(e.service_account.join("token"), "eyJhbGciOi").unwrap();
    assert_eq!(
        api_source(&auto, &e).unwrap(),
        Some(ApiSource::InCluster {
            server: "https://10.96.0.1:443".into(),
            service_account: e.service_account.clone(),
        })
    );
    e.service_host = Some("fd00:10:96::1".into());
    assert!(matches!(
        api_source(&auto, &e).unwrap(),
        Some(ApiSource::InCluster { server, .. }) if server == "https://[fd00:10:96::1]:443"
    ));
    // An explicit kubeconfig wins.
    let cfg = KubeConfig {
        kubeconfig_path: Some(dir.0.join("kc")),
        ..auto.clone()
    };
    assert_eq!(
        api_source(&cfg, &e).unwrap(),
        Some(ApiSource::Kubeconfig(dir.0.join("kc")))
    );
    // ~/.kube/config off-cluster.
    let mut e = env(&dir.0);
    e.home = Some(dir.0.clone());
    assert_eq!(api_source(&auto, &e).unwrap(), None);
    fs::create_dir_all(dir.0.join(".kube")).unwrap();
    fs::write(dir.0.join(".kube/config"), "").unwrap();
    assert_eq!(
        api_source(&auto, &e).unwrap(),
        Some(ApiSource::Kubeconfig(dir.0.join(".kube/config")))
    );
}

#[test]
fn true_without_an_api_server_is_an_error() {
    let dir = Dir::new("true");
    let err = api_source(&enable(KubeEnable::True), &env(&dir.0)).unwrap_err();
    let message = err.to_string();
    for needle in [
        "attributes.kubernetes.enable is true",
        "KUBERNETES_SERVICE_HOST",
        "KUBECONFIG",
        "kubeconfig_path",
    ] {
        assert!(message.contains(needle), "{message}");
    }
}

async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn true_fails_when_the_api_server_does_not_answer() {
    let dir = Dir::new("unreachable");
    let server = format!("http://127.0.0.1:{}", closed_port().await);
    let cfg = KubeConfig {
        kubeconfig_path: Some(kubeconfig(&dir.0, &server)),
        ..enable(KubeEnable::True)
    };
    let mut e = env(&dir.0);
    e.node_name = Some("node-a".into());
    let err = start(
        &cfg,
        &DiscoveryConfig::default(),
        &e,
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("an error");
    assert!(matches!(err, KubeError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("not reachable"), "{err}");
    // Under autodetect, without a node name either, metadata is just off.
    let cfg = KubeConfig {
        enable: KubeEnable::Autodetect,
        ..cfg
    };
    let off = start(
        &cfg,
        &DiscoveryConfig::default(),
        &env(&dir.0),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(off.is_none());
}

#[tokio::test]
async fn starts_from_a_kubeconfig_and_finds_its_node_through_its_own_pod() {
    let dir = Dir::new("start");
    let api = FakeApi::start(ApiState::with(all_fixtures())).await;
    let server = format!("http://127.0.0.1:{}", api.port());
    let cfg = KubeConfig {
        kubeconfig_path: Some(kubeconfig(&dir.0, &server)),
        ..enable(KubeEnable::True)
    };
    // No KUBE_NODE_NAME: the agent's own Pod (named like its host) says where it runs.
    let mut e = env(&dir.0);
    fs::create_dir_all(&e.service_account).unwrap();
    fs::write(e.service_account.join("namespace"), "default").unwrap();
    e.pod_name = Some("debug-shell".into());
    let cancel = CancellationToken::new();
    let mut meta = start(&cfg, &DiscoveryConfig::default(), &e, cancel.clone())
        .await
        .unwrap()
        .expect("on");
    let mut events = meta.discovery.take_events().unwrap();
    let mut pods = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(KubeEvent::Pod(_))) => pods += 1,
            Ok(Some(KubeEvent::ListDone)) => break,
            Ok(Some(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pods, 8);
    let requests = api.with_state(|s| s.requests.clone());
    assert!(
        requests.iter().any(|r| r == "GET /version"),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/default/pods?")
                && r.contains("fieldSelector=metadata.name=debug-shell")),
        "{requests:#?}"
    );
    cancel.cancel();
    meta.watcher.await.unwrap();
}
