//! Selection and naming from Pod metadata.
//!
//! Names follow OBI and the OpenTelemetry Kubernetes guidance (semantic conventions,
//! "Specify resource attributes using Kubernetes annotations"): after the target's own
//! `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` (see `discovery::identity`), `service.name`
//! is the Pod annotation `resource.opentelemetry.io/service.name`, the label
//! `app.kubernetes.io/name`, the owner (Deployment, `StatefulSet`, `DaemonSet`, `CronJob`, another
//! controller, then `ReplicaSet` or Job), then the Pod name. `service.namespace` is the
//! annotation `resource.opentelemetry.io/service.namespace`, else the Pod's namespace;
//! `service.instance.id` is the annotation `resource.opentelemetry.io/service.instance.id`,
//! else `<namespace>.<pod>.<container>`. Every other `resource.opentelemetry.io/<key>`
//! annotation becomes the resource attribute `<key>`.

use super::store::{OwnerKind, PodView};
use crate::{config::discovery::Selector, span::AttrValue};

/// Prefix of the annotations that become resource attributes.
pub const ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";
/// Annotation naming the service.
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// Annotation naming the service namespace.
pub const SERVICE_NAMESPACE_ANNOTATION: &str = "resource.opentelemetry.io/service.namespace";
/// Annotation naming the service instance.
pub const SERVICE_INSTANCE_ANNOTATION: &str = "resource.opentelemetry.io/service.instance.id";
/// The well-known label naming the application.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";

/// Owner kinds in the order they name a service: the top-level controllers before the
/// `ReplicaSet` or Job they manage.
const NAMING_ORDER: [OwnerKind; 7] = [
    OwnerKind::Deployment,
    OwnerKind::StatefulSet,
    OwnerKind::DaemonSet,
    OwnerKind::CronJob,
    OwnerKind::Other,
    OwnerKind::ReplicaSet,
    OwnerKind::Job,
];

/// Whether every Kubernetes field that `sel` sets matches the Pod (fields it leaves unset
/// match anything; a field naming an owner the Pod lacks does not match).
pub fn selector_matches(sel: &Selector, pod: &PodView<'_>) -> bool {
    let top_owner = pod.top_owner().map_or(pod.name(), |(_, name)| name);
    let fields = [
        (&sel.k8s_namespace, Some(pod.namespace())),
        (&sel.k8s_pod_name, Some(pod.name())),
        (&sel.k8s_deployment_name, pod.owner(OwnerKind::Deployment)),
        (&sel.k8s_replicaset_name, pod.owner(OwnerKind::ReplicaSet)),
        (&sel.k8s_statefulset_name, pod.owner(OwnerKind::StatefulSet)),
        (&sel.k8s_daemonset_name, pod.owner(OwnerKind::DaemonSet)),
        (&sel.k8s_job_name, pod.owner(OwnerKind::Job)),
        (&sel.k8s_cronjob_name, pod.owner(OwnerKind::CronJob)),
        (&sel.k8s_owner_name, Some(top_owner)),
        (&sel.k8s_container_name, pod.container()),
    ];
    fields.iter().all(|(glob, value)| {
        glob.as_ref()
            .is_none_or(|g| value.is_some_and(|v| g.matches(v)))
    }) && sel
        .k8s_pod_labels
        .iter()
        .all(|(k, g)| pod.label(k).is_some_and(|v| g.matches(v)))
        && sel
            .k8s_pod_annotations
            .iter()
            .all(|(k, g)| pod.annotation(k).is_some_and(|v| g.matches(v)))
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// `service.name` from the Pod.
pub fn service_name<'a>(pod: &PodView<'a>) -> &'a str {
    non_empty(pod.annotation(SERVICE_NAME_ANNOTATION))
        .or_else(|| non_empty(pod.label(NAME_LABEL)))
        .or_else(|| NAMING_ORDER.iter().find_map(|k| pod.owner(*k)))
        .unwrap_or(pod.name())
}

/// `service.namespace` from the Pod.
pub fn service_namespace<'a>(pod: &PodView<'a>) -> &'a str {
    non_empty(pod.annotation(SERVICE_NAMESPACE_ANNOTATION)).unwrap_or(pod.namespace())
}

/// `service.instance.id` from the Pod: `<namespace>.<pod>.<container>` (just
/// `<namespace>.<pod>` while the container is not known yet).
pub fn service_instance_id(pod: &PodView<'_>) -> String {
    if let Some(id) = non_empty(pod.annotation(SERVICE_INSTANCE_ANNOTATION)) {
        return id.to_owned();
    }
    match pod.container() {
        Some(c) => format!("{}.{}.{c}", pod.namespace(), pod.name()),
        None => format!("{}.{}", pod.namespace(), pod.name()),
    }
}

/// The `k8s.*` resource attributes of a process in this Pod, then the attributes from its
/// `resource.opentelemetry.io/` annotations (other than the service name, namespace and
/// instance, which name the service itself).
pub fn attributes(pod: &PodView<'_>) -> Vec<(String, AttrValue)> {
    let s = |v: &str| AttrValue::Str(v.to_owned());
    let mut out = vec![
        ("k8s.namespace.name".to_owned(), s(pod.namespace())),
        ("k8s.pod.name".to_owned(), s(pod.name())),
        (
            "k8s.pod.uid".to_owned(),
            AttrValue::Str(pod.uid().to_string()),
        ),
        ("k8s.node.name".to_owned(), s(pod.node())),
        (
            "k8s.owner.name".to_owned(),
            s(pod.top_owner().map_or(pod.name(), |(_, n)| n)),
        ),
    ];
    if let Some(c) = pod.container() {
        out.push(("k8s.container.name".to_owned(), s(c)));
    }
    if let Some(t) = pod.start_time() {
        out.push(("k8s.pod.start_time".to_owned(), s(t)));
    }
    if let Some(c) = pod.cluster() {
        out.push(("k8s.cluster.name".to_owned(), s(c)));
    }
    for (kind, name) in pod.owners() {
        if let Some(key) = kind.attribute() {
            out.push((key.to_owned(), s(name)));
        }
    }
    for (key, value) in pod.annotations() {
        if let Some(attr) = key.strip_prefix(ANNOTATION_PREFIX)
            && !attr.is_empty()
            && !matches!(
                attr,
                "service.name" | "service.namespace" | "service.instance.id"
            )
        {
            out.push((attr.to_owned(), s(value)));
        }
    }
    out
}
