//! `attributes`: Kubernetes metadata decoration, the instance id and host id overrides.
//!
//! OBI keys: `attributes.kubernetes.{enable, cluster_name, kubeconfig_path,
//! informers_sync_timeout, informers_resync_period, meta_restrict_local_node}`,
//! `attributes.instance_id.{dns, override_hostname}` and `attributes.host_id.override`, with
//! their `OTEL_EBPF_*` variables (and `KUBECONFIG`).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    value::{self, Ctx},
    yaml::{Node, map, text},
};

/// Attribute decoration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributesConfig {
    /// Kubernetes metadata.
    pub kubernetes: KubeConfig,
    /// How `service.instance.id` is built.
    pub instance_id: InstanceIdConfig,
    /// Replaces the detected `host.id` (`attributes.host_id.override`, `OTEL_EBPF_HOST_ID`).
    pub host_id_override: Option<String>,
}

/// Kubernetes metadata decoration (OBI's `attributes.kubernetes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeConfig {
    /// Whether to decorate with Kubernetes metadata (default `autodetect`).
    pub enable: KubeEnable,
    /// Overrides the detected `k8s.cluster.name`.
    pub cluster_name: Option<String>,
    /// Kubeconfig file; unset means in-cluster config, then the usual locations.
    pub kubeconfig_path: Option<PathBuf>,
    /// Longest wait for the first metadata sync before starting (default 30 s).
    pub informers_sync_timeout: Duration,
    /// Full resync period of the informers (default 30 min).
    pub informers_resync_period: Duration,
    /// Only watch Pods on this node (default false).
    pub meta_restrict_local_node: bool,
    /// Where the agent runs, from the environment Kubernetes gives its Pods.
    pub environment: KubeEnvironmentVars,
}

/// The environment variables that locate the API server and this node (no YAML keys: the
/// Pod spec sets them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeEnvironmentVars {
    /// `KUBERNETES_SERVICE_HOST`: set in every Pod; the in-cluster API server.
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT`.
    pub service_port: Option<String>,
    /// `KUBE_NODE_NAME` (the Downward API's `spec.nodeName`): whose Pods to watch.
    pub node_name: Option<String>,
    /// `HOME`, for `~/.kube/config` off the cluster.
    pub home: Option<PathBuf>,
}

impl Default for KubeConfig {
    fn default() -> Self {
        Self {
            enable: KubeEnable::Autodetect,
            cluster_name: None,
            kubeconfig_path: None,
            informers_sync_timeout: Duration::from_secs(30),
            informers_resync_period: Duration::from_mins(30),
            meta_restrict_local_node: false,
            environment: KubeEnvironmentVars::default(),
        }
    }
}

/// `attributes.kubernetes.enable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeEnable {
    /// On when running in a Pod (service account token and `KUBERNETES_SERVICE_HOST`).
    Autodetect,
    /// Always on; failing to reach the API is an error.
    True,
    /// Off.
    False,
}

impl KubeEnable {
    const CHOICES: &[(&str, Self)] = &[
        ("autodetect", Self::Autodetect),
        ("true", Self::True),
        ("false", Self::False),
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("autodetect", |(n, _)| n)
    }
}

/// How the host part of `service.instance.id` is found (OBI's `attributes.instance_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceIdConfig {
    /// Resolve the local host name through DNS (default true).
    pub dns: bool,
    /// Use this instead of the host name.
    pub override_hostname: Option<String>,
}

impl Default for InstanceIdConfig {
    fn default() -> Self {
        Self {
            dns: true,
            override_hostname: None,
        }
    }
}

/// `attributes` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAttributes {
    kubernetes: RawKube,
    instance_id: RawInstanceId,
    host_id: RawHostId,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKube {
    enable: Option<Node>,
    cluster_name: Option<Node>,
    kubeconfig_path: Option<Node>,
    informers_sync_timeout: Option<Node>,
    informers_resync_period: Option<Node>,
    meta_restrict_local_node: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawInstanceId {
    dns: Option<Node>,
    override_hostname: Option<Node>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHostId {
    #[serde(rename = "override")]
    override_: Option<Node>,
}

/// Validates `attributes` and its variables.
pub(super) fn build(raw: &RawAttributes, ctx: &mut Ctx<'_>) -> AttributesConfig {
    let d = KubeConfig::default();
    let k = &raw.kubernetes;
    let timeouts = value::duration(Duration::from_secs(1), Duration::from_hours(24));
    let kubernetes = KubeConfig {
        enable: ctx
            .get(
                "attributes.kubernetes.enable",
                k.enable.as_ref(),
                &["OTEL_EBPF_KUBE_METADATA_ENABLE"],
                value::choice(KubeEnable::CHOICES, &[]),
            )
            .unwrap_or(d.enable),
        cluster_name: ctx.get(
            "attributes.kubernetes.cluster_name",
            k.cluster_name.as_ref(),
            &["OTEL_EBPF_KUBE_CLUSTER_NAME"],
            value::string,
        ),
        kubeconfig_path: ctx
            .get(
                "attributes.kubernetes.kubeconfig_path",
                k.kubeconfig_path.as_ref(),
                &["KUBECONFIG"],
                value::string,
            )
            .map(PathBuf::from),
        informers_sync_timeout: ctx
            .get(
                "attributes.kubernetes.informers_sync_timeout",
                k.informers_sync_timeout.as_ref(),
                &["OTEL_EBPF_KUBE_INFORMERS_SYNC_TIMEOUT"],
                &timeouts,
            )
            .unwrap_or(d.informers_sync_timeout),
        informers_resync_period: ctx
            .get(
                "attributes.kubernetes.informers_resync_period",
                k.informers_resync_period.as_ref(),
                &["OTEL_EBPF_KUBE_INFORMERS_RESYNC_PERIOD"],
                &timeouts,
            )
            .unwrap_or(d.informers_resync_period),
        meta_restrict_local_node: ctx
            .get(
                "attributes.kubernetes.meta_restrict_local_node",
                k.meta_restrict_local_node.as_ref(),
                &["OTEL_EBPF_KUBE_META_RESTRICT_LOCAL_NODE"],
                value::boolean,
            )
            .unwrap_or(d.meta_restrict_local_node),
        environment: KubeEnvironmentVars {
            service_host: ctx
                .env(&["KUBERNETES_SERVICE_HOST"], value::string)
                .filter(|v| !v.is_empty()),
            service_port: ctx
                .env(&["KUBERNETES_SERVICE_PORT"], value::string)
                .filter(|v| !v.is_empty()),
            node_name: ctx
                .env(&["KUBE_NODE_NAME"], value::string)
                .filter(|v| !v.is_empty()),
            home: ctx
                .env(&["HOME"], value::string)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        },
    };
    let instance_id = InstanceIdConfig {
        dns: ctx
            .get(
                "attributes.instance_id.dns",
                raw.instance_id.dns.as_ref(),
                &["OTEL_EBPF_HOSTNAME_DNS_RESOLUTION"],
                value::boolean,
            )
            .unwrap_or(true),
        override_hostname: ctx.get(
            "attributes.instance_id.override_hostname",
            raw.instance_id.override_hostname.as_ref(),
            &["OTEL_EBPF_HOSTNAME"],
            value::string,
        ),
    };
    let host_id_override = ctx.get(
        "attributes.host_id.override",
        raw.host_id.override_.as_ref(),
        &["OTEL_EBPF_HOST_ID"],
        value::string,
    );
    AttributesConfig {
        kubernetes,
        instance_id,
        host_id_override,
    }
}

impl AttributesConfig {
    /// The effective `attributes` section.
    pub(super) fn to_node(&self) -> Node {
        let k = &self.kubernetes;
        map([
            (
                "kubernetes",
                Some(map([
                    ("enable", Some(text(k.enable.as_str()))),
                    ("cluster_name", k.cluster_name.clone().map(text)),
                    (
                        "kubeconfig_path",
                        k.kubeconfig_path
                            .as_ref()
                            .map(|p| text(p.display().to_string())),
                    ),
                    (
                        "informers_sync_timeout",
                        Some(text(value::format_duration(k.informers_sync_timeout))),
                    ),
                    (
                        "informers_resync_period",
                        Some(text(value::format_duration(k.informers_resync_period))),
                    ),
                    (
                        "meta_restrict_local_node",
                        Some(Node::Bool(k.meta_restrict_local_node)),
                    ),
                ])),
            ),
            (
                "instance_id",
                Some(map([
                    ("dns", Some(Node::Bool(self.instance_id.dns))),
                    (
                        "override_hostname",
                        self.instance_id.override_hostname.clone().map(text),
                    ),
                ])),
            ),
            (
                "host_id",
                Some(map([("override", self.host_id_override.clone().map(text))])),
            ),
        ])
    }
}
