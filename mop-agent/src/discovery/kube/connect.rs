//! Whether Kubernetes metadata is on, and how the API server is reached.
//!
//! `attributes.kubernetes.enable`:
//! - `autodetect` (default): on when the agent runs in a Pod (`KUBERNETES_SERVICE_HOST` and
//!   `_PORT` set, service account token mounted) or a kubeconfig is given
//!   (`attributes.kubernetes.kubeconfig_path` / `KUBECONFIG`) or found at `~/.kube/config`;
//!   an API server that does not answer is retried in the background (decisions that wait
//!   for metadata give up after `informers_sync_timeout`).
//! - `true`: as autodetect, but no API server configured, or none answering within
//!   `informers_sync_timeout`, stops the agent with an error naming what is missing.
//! - `false`: off.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use kube::{
    Client,
    config::{
        AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, NamedAuthInfo,
        NamedCluster, NamedContext,
    },
};
use thiserror::Error;

use crate::config::{KubeConfig, KubeEnable};

/// Where a Pod's service account is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Environment facts the Kubernetes module needs (the variables come through `config`).
#[derive(Clone, Debug, Default)]
pub struct KubeEnvironment {
    /// `KUBERNETES_SERVICE_HOST`.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// `KUBE_NODE_NAME` (the Downward API's `spec.nodeName`).
    pub node_name: Option<String>,
    /// `HOME`, for `~/.kube/config`.
    pub home: Option<PathBuf>,
    /// The service account directory (normally [`SERVICE_ACCOUNT_DIR`]).
    pub service_account: PathBuf,
    /// This Pod's host name (its name, when not on the host network), to find the node when
    /// `KUBE_NODE_NAME` is unset.
    pub pod_name: Option<String>,
}

impl KubeEnvironment {
    /// From the variables the config module read, and this Pod's host name.
    pub fn new(
        vars: &crate::config::attributes::KubeEnvironmentVars,
        hostname: Option<String>,
    ) -> Self {
        Self {
            service_host: vars.service_host.clone(),
            service_port: vars.service_port.clone(),
            node_name: vars.node_name.clone(),
            home: vars.home.clone(),
            service_account: PathBuf::from(SERVICE_ACCOUNT_DIR),
            pod_name: hostname,
        }
    }
}

/// Why Kubernetes metadata could not be set up.
#[derive(Debug, Error)]
pub enum KubeError {
    /// `enable: true` but nothing says where the API server is.
    #[error(
        "attributes.kubernetes.enable is true but no Kubernetes API server is configured: not in a Pod \
         (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT unset or no service account token in {service_account}) \
         and no kubeconfig (attributes.kubernetes.kubeconfig_path, KUBECONFIG, ~/.kube/config)"
    )]
    NoApiServer {
        /// Where the token was looked for.
        service_account: String,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The client could not be built.
    #[error("kubernetes client for {server}: {source}")]
    Client {
        /// The API server.
        server: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer.
    #[error("kubernetes API server {server} is not reachable: {reason}")]
    Unreachable {
        /// The API server.
        server: String,
        /// The error, or the timeout.
        reason: String,
    },
    /// The node could not be determined.
    #[error(
        "cannot tell which node this agent runs on: set KUBE_NODE_NAME from the Downward API (fieldRef spec.nodeName){detail}"
    )]
    NoNodeName {
        /// What was tried.
        detail: String,
    },
}

/// Where the API server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// In a Pod: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` with the service
    /// account's token and CA.
    InCluster {
        /// The API server URL.
        server: String,
        /// The service account directory.
        service_account: PathBuf,
    },
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

impl ApiSource {
    /// For logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Self::InCluster { server, .. } => server.clone(),
            Self::Kubeconfig(path) => format!("kubeconfig {}", path.display()),
        }
    }
}

/// Decides whether metadata is on and where the API server is: `None` when off.
pub fn api_source(cfg: &KubeConfig, env: &KubeEnvironment) -> Result<Option<ApiSource>, KubeError> {
    if cfg.enable == KubeEnable::False {
        return Ok(None);
    }
    if let Some(path) = &cfg.kubeconfig_path {
        return Ok(Some(ApiSource::Kubeconfig(path.clone())));
    }
    let token = env.service_account.join("token");
    if let (Some(host), Some(port)) = (&env.service_host, &env.service_port)
        && token.exists()
    {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        return Ok(Some(ApiSource::InCluster {
            server: format!("https://{host}:{port}"),
            service_account: env.service_account.clone(),
        }));
    }
    if let Some(home) = &env.home {
        let path = home.join(".kube/config");
        if path.is_file() {
            return Ok(Some(ApiSource::Kubeconfig(path)));
        }
    }
    match cfg.enable {
        KubeEnable::True => Err(KubeError::NoApiServer {
            service_account: env.service_account.display().to_string(),
        }),
        KubeEnable::Autodetect | KubeEnable::False => Ok(None),
    }
}

/// A client for `source`.
pub async fn client(source: &ApiSource) -> Result<Client, KubeError> {
    let (kubeconfig, path) = match source {
        ApiSource::Kubeconfig(path) => (
            Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?,
            path.display().to_string(),
        ),
        ApiSource::InCluster {
            server,
            service_account,
        } => (in_cluster(server, service_account), server.clone()),
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    Client::try_from(config).map_err(|source| KubeError::Client {
        server: path,
        source,
    })
}

/// The in-cluster configuration as a kubeconfig: the token file is re-read as it rotates.
fn in_cluster(server: &str, service_account: &Path) -> Kubeconfig {
    let file = |name: &str| Some(service_account.join(name).display().to_string());
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: "in-cluster".to_owned(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority: file("ca.crt"),
                ..Cluster::default()
            }),
            other: BTreeMap::new(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "service-account".to_owned(),
            auth_info: Some(AuthInfo {
                token_file: file("token"),
                ..AuthInfo::default()
            }),
            other: BTreeMap::new(),
        }],
        contexts: vec![NamedContext {
            name: "in-cluster".to_owned(),
            context: Some(Context {
                cluster: "in-cluster".to_owned(),
                user: Some("service-account".to_owned()),
                ..Context::default()
            }),
            other: BTreeMap::new(),
        }],
        current_context: Some("in-cluster".to_owned()),
        ..Kubeconfig::default()
    }
}

/// Asks the API server for its version, within `timeout`.
pub async fn probe(client: &Client, server: &str, timeout: Duration) -> Result<(), KubeError> {
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(version)) => {
            tracing::info!(server, version = %version.git_version, "Kubernetes API server reached.");
            Ok(())
        }
        Ok(Err(e)) => Err(KubeError::Unreachable {
            server: server.to_owned(),
            reason: e.to_string(),
        }),
        Err(_) => Err(KubeError::Unreachable {
            server: server.to_owned(),
            reason: format!(
                "no answer within {timeout:?} (attributes.kubernetes.informers_sync_timeout)"
            ),
        }),
    }
}

/// The node this agent runs on: `KUBE_NODE_NAME`, else the node of the Pod named like this
/// host in the service account's namespace (as OBI finds it).
pub async fn node_name(client: &Client, env: &KubeEnvironment) -> Result<String, KubeError> {
    if let Some(node) = &env.node_name {
        return Ok(node.clone());
    }
    let namespace = std::fs::read_to_string(env.service_account.join("namespace")).ok();
    let (Some(pod), Some(namespace)) = (&env.pod_name, namespace) else {
        return Err(KubeError::NoNodeName {
            detail: String::new(),
        });
    };
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace.trim());
    let params = kube::api::ListParams::default().fields(&format!("metadata.name={pod}"));
    match api.list(&params).await {
        Ok(list) => list
            .items
            .into_iter()
            .find_map(|p| p.spec?.node_name)
            .ok_or_else(|| KubeError::NoNodeName {
                detail: format!("; no Pod {pod} in namespace {}", namespace.trim()),
            }),
        Err(e) => Err(KubeError::NoNodeName {
            detail: format!("; looking up Pod {pod}: {e}"),
        }),
    }
}
