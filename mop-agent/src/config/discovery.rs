//! `discovery` (which processes to instrument): OBI's `discovery.instrument`,
//! `exclude_instrument` and `default_exclude_instrument` selectors, the top-level `open_port`
//! key, and the `OTEL_EBPF_OPEN_PORT` / `OTEL_EBPF_AUTO_TARGET_EXE` variables.
//!
//! As in OBI, `open_port` / `OTEL_EBPF_OPEN_PORT` and `OTEL_EBPF_AUTO_TARGET_EXE` (alias
//! `OTEL_GO_AUTO_TARGET_EXE`) together add one more selector at the end of `instrument`; when
//! both are set, a process must match both.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Deserialize;

use super::{
    error::{ConfigError, Origin},
    glob::Glob,
    value::{self, Bad, Ctx, Parsed},
    yaml::{self, Node, map, text},
};

/// `OTEL_EBPF_OPEN_PORT`: the ports of the selector added from the environment.
pub const ENV_OPEN_PORT: &str = "OTEL_EBPF_OPEN_PORT";
/// `OTEL_EBPF_AUTO_TARGET_EXE`: the executable glob of the selector added from the environment.
pub const ENV_AUTO_TARGET_EXE: &str = "OTEL_EBPF_AUTO_TARGET_EXE";
/// `OTEL_GO_AUTO_TARGET_EXE`: OBI's alias of [`ENV_AUTO_TARGET_EXE`], read when that is unset.
pub const ENV_GO_AUTO_TARGET_EXE: &str = "OTEL_GO_AUTO_TARGET_EXE";
const ENV_POLL_INTERVAL: &str = "OTEL_EBPF_DISCOVERY_POLL_INTERVAL";

/// Default of `discovery.poll_interval`: new processes must be seen within 2 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Executables never instrumented unless `default_exclude_instrument` is overridden: mop
/// itself, OBI and its predecessors, and OpenTelemetry collectors (OBI's list plus mop).
pub const DEFAULT_EXCLUDE_EXE: &str = "{*/mop-agent,*/obi,*beyla,*alloy,*ebpf-instrument,*otelcol,*otelcol-contrib,*otelcol-contrib[!/]*}";
/// Kubernetes namespaces excluded by default, as in OBI.
pub const DEFAULT_EXCLUDE_K8S_NAMESPACES: &str = "{kube-system,kube-node-lease,local-path-storage,grafana-alloy,\
cert-manager,monitoring,gke-connect,gke-gmp-system,gke-managed-cim,gke-managed-filestorecsi,\
gke-managed-metrics-server,gke-managed-system,gke-system,gke-managed-volumepopulator,gatekeeper-system}";

/// Which processes to instrument, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// A process is instrumented when it matches any of these (and no exclusion); empty means
    /// "every process listening on a TCP port".
    pub instrument: Vec<Selector>,
    /// Processes matching any of these are never instrumented.
    pub exclude_instrument: Vec<Selector>,
    /// Like `exclude_instrument`, with defaults that keep collectors and system namespaces out.
    pub default_exclude_instrument: Vec<Selector>,
    /// How often `/proc` is scanned for new and exited processes (`discovery.poll_interval`).
    pub poll_interval: Duration,
    /// Never instrument the agent's own pid (mop extension `discovery.skip_self`, default true).
    pub skip_self: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            instrument: Vec::new(),
            exclude_instrument: Vec::new(),
            default_exclude_instrument: default_excludes(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            skip_self: true,
        }
    }
}

fn default_excludes() -> Vec<Selector> {
    let glob = |p: &str| Some(Glob::new(p).expect("default globs are valid"));
    vec![
        Selector {
            exe_path: glob(DEFAULT_EXCLUDE_EXE),
            ..Selector::default()
        },
        Selector {
            k8s_namespace: glob(DEFAULT_EXCLUDE_K8S_NAMESPACES),
            ..Selector::default()
        },
    ]
}

/// One `instrument` / `exclude_instrument` entry: a process matches when every set field
/// matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// The process listens on one of these ports.
    pub open_ports: Option<PortSet>,
    /// Glob on the full executable path (`*` matches `/` too).
    pub exe_path: Option<Glob>,
    /// Service name for matching processes (OBI's `name`, deprecated there but honoured).
    pub name: Option<String>,
    /// Service namespace for matching processes (OBI's `namespace`).
    pub namespace: Option<String>,
    /// Glob on the Pod's namespace.
    pub k8s_namespace: Option<Glob>,
    /// Glob on the Pod name.
    pub k8s_pod_name: Option<Glob>,
    /// Glob on the owning Deployment.
    pub k8s_deployment_name: Option<Glob>,
    /// Glob on the owning `ReplicaSet`.
    pub k8s_replicaset_name: Option<Glob>,
    /// Glob on the owning `StatefulSet`.
    pub k8s_statefulset_name: Option<Glob>,
    /// Glob on the owning `DaemonSet`.
    pub k8s_daemonset_name: Option<Glob>,
    /// Glob on the owning Job.
    pub k8s_job_name: Option<Glob>,
    /// Glob on the owning `CronJob`.
    pub k8s_cronjob_name: Option<Glob>,
    /// Glob on the top owner of any kind (`Deployment`, `ReplicaSet`, `DaemonSet`, `StatefulSet`).
    pub k8s_owner_name: Option<Glob>,
    /// Glob on the container name inside the Pod.
    pub k8s_container_name: Option<Glob>,
    /// Every listed label must exist on the Pod with a value matching the glob.
    pub k8s_pod_labels: BTreeMap<String, Glob>,
    /// Every listed annotation must exist on the Pod with a value matching the glob.
    pub k8s_pod_annotations: BTreeMap<String, Glob>,
}

impl Selector {
    /// Whether any Kubernetes field is set (such a selector needs Kubernetes metadata).
    pub fn uses_kubernetes(&self) -> bool {
        self.k8s_globs().any(|(_, g)| g.is_some())
            || !self.k8s_pod_labels.is_empty()
            || !self.k8s_pod_annotations.is_empty()
    }

    /// The single-valued Kubernetes globs with their OBI key names.
    pub fn k8s_globs(&self) -> impl Iterator<Item = (&'static str, Option<&Glob>)> {
        [
            ("k8s_namespace", self.k8s_namespace.as_ref()),
            ("k8s_pod_name", self.k8s_pod_name.as_ref()),
            ("k8s_deployment_name", self.k8s_deployment_name.as_ref()),
            ("k8s_replicaset_name", self.k8s_replicaset_name.as_ref()),
            ("k8s_statefulset_name", self.k8s_statefulset_name.as_ref()),
            ("k8s_daemonset_name", self.k8s_daemonset_name.as_ref()),
            ("k8s_job_name", self.k8s_job_name.as_ref()),
            ("k8s_cronjob_name", self.k8s_cronjob_name.as_ref()),
            ("k8s_owner_name", self.k8s_owner_name.as_ref()),
            ("k8s_container_name", self.k8s_container_name.as_ref()),
        ]
        .into_iter()
    }

    fn has_criteria(&self) -> bool {
        self.open_ports.is_some() || self.exe_path.is_some() || self.uses_kubernetes()
    }
}

/// A set of TCP ports written `80,443,8000-8999`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// Parses `80,443,8000-8999` (spaces allowed); ports are 1-65535, ranges `low-high`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for entry in s.split(',') {
            let entry = entry.trim();
            let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p != 0);
            let range = match entry.split_once('-') {
                Some((lo, hi)) => port(lo).zip(port(hi)).filter(|(lo, hi)| lo <= hi),
                None => port(entry).map(|p| (p, p)),
            };
            ranges.push(range.ok_or_else(|| {
                format!("bad entry `{entry}`: ports are 1-65535 and ranges are written low-high")
            })?);
        }
        Ok(Self { ranges })
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&port))
    }

    /// The ranges as written (a single port is `(p, p)`).
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// Parser for a port set value (`8080` or `"80,443,8000-8999"`).
pub(super) fn port_set(node: &Node) -> Parsed<PortSet> {
    const EXPECTED: &str =
        "a comma-separated list of ports (1-65535) and ranges, like 80,443,8000-8999";
    let s = value::scalar(node, EXPECTED)?;
    PortSet::parse(&s).map_err(|e| Bad::Invalid(format!("{EXPECTED} ({e})")))
}

/// Parser for a glob value; an empty string means "unset", as in OBI.
pub(super) fn glob(node: &Node) -> Parsed<Option<Glob>> {
    let s = value::scalar(node, "a glob pattern")?;
    if s.is_empty() {
        return Ok(None);
    }
    Glob::new(&s)
        .map(Some)
        .map_err(|e| Bad::Invalid(format!("a glob pattern ({e})")))
}

/// The `discovery` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDiscovery {
    instrument: Vec<RawSelector>,
    exclude_instrument: Vec<RawSelector>,
    #[serde(deserialize_with = "yaml::present")]
    default_exclude_instrument: Option<Vec<RawSelector>>,
    poll_interval: Option<Node>,
    skip_self: Option<Node>,
}

/// One selector as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSelector {
    name: Option<Node>,
    namespace: Option<Node>,
    open_ports: Option<Node>,
    exe_path: Option<Node>,
    k8s_namespace: Option<Node>,
    k8s_pod_name: Option<Node>,
    k8s_deployment_name: Option<Node>,
    k8s_replicaset_name: Option<Node>,
    k8s_statefulset_name: Option<Node>,
    k8s_daemonset_name: Option<Node>,
    k8s_job_name: Option<Node>,
    k8s_cronjob_name: Option<Node>,
    k8s_owner_name: Option<Node>,
    k8s_container_name: Option<Node>,
    k8s_pod_labels: Option<Node>,
    k8s_pod_annotations: Option<Node>,
}

/// Validates `discovery`, the top-level `open_port` key and the discovery variables.
pub(super) fn build(
    raw: RawDiscovery,
    open_port: Option<&Node>,
    ctx: &mut Ctx<'_>,
) -> DiscoveryConfig {
    let mut config = DiscoveryConfig {
        instrument: selectors(raw.instrument, "discovery.instrument", ctx),
        exclude_instrument: selectors(raw.exclude_instrument, "discovery.exclude_instrument", ctx),
        default_exclude_instrument: raw
            .default_exclude_instrument
            .map_or_else(default_excludes, |list| {
                selectors(list, "discovery.default_exclude_instrument", ctx)
            }),
        poll_interval: ctx
            .get(
                "discovery.poll_interval",
                raw.poll_interval.as_ref(),
                &[ENV_POLL_INTERVAL],
                value::duration(Duration::from_millis(10), Duration::from_hours(1)),
            )
            .unwrap_or(DEFAULT_POLL_INTERVAL),
        skip_self: ctx
            .yaml(
                "discovery.skip_self",
                raw.skip_self.as_ref(),
                value::boolean,
            )
            .unwrap_or(true),
    };
    let ports = ctx.get("open_port", open_port, &[ENV_OPEN_PORT], port_set);
    let exe = ctx
        .env(&[ENV_AUTO_TARGET_EXE, ENV_GO_AUTO_TARGET_EXE], glob)
        .flatten();
    if ports.is_some() || exe.is_some() {
        config.instrument.push(Selector {
            open_ports: ports,
            exe_path: exe,
            ..Selector::default()
        });
    }
    config
}

fn selectors(raw: Vec<RawSelector>, key: &str, ctx: &mut Ctx<'_>) -> Vec<Selector> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let key = format!("{key}[{i}]");
            let shown = raw.name.as_ref().map_or_else(|| "{}".to_owned(), |n| format!("{{name: {}}}", n.display()));
            let selector = selector(raw, &key, ctx);
            // An entry whose keys were all refused already has its errors.
            let prefix = format!("{key}.");
            let refused = ctx.errors.iter().any(|e| match e {
                ConfigError::UnknownKey { key, .. }
                | ConfigError::UnsupportedKey { key, .. }
                | ConfigError::InvalidValue { origin: Origin::Key(key), .. } => key.starts_with(&prefix),
                _ => false,
            });
            if !selector.has_criteria() && !refused {
                ctx.invalid(
                    Origin::Key(key),
                    shown,
                    "a selector with at least one of open_ports, exe_path, k8s_* (name and namespace only rename)",
                );
            }
            selector.has_criteria().then_some(selector)
        })
        .collect()
}

fn selector(raw: RawSelector, key: &str, ctx: &mut Ctx<'_>) -> Selector {
    let mut glob_at = |field: &str, node: Option<Node>| {
        ctx.yaml(&format!("{key}.{field}"), node.as_ref(), glob)
            .flatten()
    };
    let mut s = Selector {
        exe_path: glob_at("exe_path", raw.exe_path),
        k8s_namespace: glob_at("k8s_namespace", raw.k8s_namespace),
        k8s_pod_name: glob_at("k8s_pod_name", raw.k8s_pod_name),
        k8s_deployment_name: glob_at("k8s_deployment_name", raw.k8s_deployment_name),
        k8s_replicaset_name: glob_at("k8s_replicaset_name", raw.k8s_replicaset_name),
        k8s_statefulset_name: glob_at("k8s_statefulset_name", raw.k8s_statefulset_name),
        k8s_daemonset_name: glob_at("k8s_daemonset_name", raw.k8s_daemonset_name),
        k8s_job_name: glob_at("k8s_job_name", raw.k8s_job_name),
        k8s_cronjob_name: glob_at("k8s_cronjob_name", raw.k8s_cronjob_name),
        k8s_owner_name: glob_at("k8s_owner_name", raw.k8s_owner_name),
        k8s_container_name: glob_at("k8s_container_name", raw.k8s_container_name),
        ..Selector::default()
    };
    s.open_ports = ctx.yaml(
        &format!("{key}.open_ports"),
        raw.open_ports.as_ref(),
        port_set,
    );
    s.name = ctx.yaml(&format!("{key}.name"), raw.name.as_ref(), value::string);
    s.namespace = ctx.yaml(
        &format!("{key}.namespace"),
        raw.namespace.as_ref(),
        value::string,
    );
    s.k8s_pod_labels = glob_map(
        raw.k8s_pod_labels.as_ref(),
        &format!("{key}.k8s_pod_labels"),
        ctx,
    );
    s.k8s_pod_annotations = glob_map(
        raw.k8s_pod_annotations.as_ref(),
        &format!("{key}.k8s_pod_annotations"),
        ctx,
    );
    s
}

fn glob_map(node: Option<&Node>, key: &str, ctx: &mut Ctx<'_>) -> BTreeMap<String, Glob> {
    let entries = ctx.yaml(key, node, |n| match n {
        Node::Map(entries) => Ok(entries.clone()),
        _ => Err(Bad::WrongType(
            "a mapping of names to glob patterns".to_owned(),
        )),
    });
    entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            let glob = ctx.yaml(&format!("{key}.{name}"), Some(&value), glob)?;
            Some((name, glob.unwrap_or_else(|| Glob::new("*").expect("valid"))))
        })
        .collect()
}

impl DiscoveryConfig {
    /// The effective `discovery` section in OBI's key names.
    pub(super) fn to_node(&self) -> Node {
        let list = |v: &[Selector]| Some(Node::Seq(v.iter().map(Selector::to_node).collect()));
        map([
            ("instrument", list(&self.instrument)),
            ("exclude_instrument", list(&self.exclude_instrument)),
            (
                "default_exclude_instrument",
                list(&self.default_exclude_instrument),
            ),
            (
                "poll_interval",
                Some(text(value::format_duration(self.poll_interval))),
            ),
            ("skip_self", Some(Node::Bool(self.skip_self))),
        ])
    }
}

impl Selector {
    fn to_node(&self) -> Node {
        let globs = |m: &BTreeMap<String, Glob>| {
            (!m.is_empty()).then(|| {
                Node::Map(
                    m.iter()
                        .map(|(k, g)| (k.clone(), text(g.as_str())))
                        .collect(),
                )
            })
        };
        let mut entries = vec![
            ("name", self.name.clone().map(text)),
            ("namespace", self.namespace.clone().map(text)),
            (
                "open_ports",
                self.open_ports.as_ref().map(|p| text(p.to_string())),
            ),
            ("exe_path", self.exe_path.as_ref().map(|g| text(g.as_str()))),
        ];
        entries.extend(
            self.k8s_globs()
                .map(|(k, g)| (k, g.map(|g| text(g.as_str())))),
        );
        entries.push(("k8s_pod_labels", globs(&self.k8s_pod_labels)));
        entries.push(("k8s_pod_annotations", globs(&self.k8s_pod_annotations)));
        map(entries)
    }
}
