"""Properties every rendered environment must have.

Each check takes the Kubernetes objects of one environment and returns a list of violations
(empty when the property holds). test_manifests.py runs every check on every environment in
deploy/manifests, and runs each check again on a deliberately broken copy to show it fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
AGENT_LIBSONNET = DEPLOY / "lib" / "agent.libsonnet"

WORKLOAD_KINDS = {"DaemonSet", "Deployment", "StatefulSet"}
READ_VERBS = {"get", "list", "watch"}
AGENT_NAME = "mop-agent"
NAMESPACES = {"mop-system": "privileged", "mop-traces": "restricted", "mop-metrics": "restricted", "mop-logs": "restricted"}

# Capabilities the agent may be granted. SYS_ADMIN is never among them.
AGENT_CAPABILITIES = {"BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE"}

# The agent's configuration keys (OBI v1 YAML) that the agent's strict parser accepts.
# A dict lists allowed children; a list marks a list whose items allow the given children;
# None is a scalar.
AGENT_CONFIG_SCHEMA = {
    "log_level": None,
    "discovery": {
        "instrument": [{"open_ports": None, "k8s_namespace": None}],
        "exclude_instrument": [{"k8s_namespace": None}],
    },
    "otel_traces_export": {"endpoint": None, "protocol": None},
    "otel_metrics_export": {"endpoint": None, "protocol": None, "interval": None},
    "prometheus_export": {"port": None, "path": None},
    "attributes": {"kubernetes": {"enable": None}},
    "routes": {"unmatched": None},
}
AGENT_SELF_METRICS = ["mop_events_lost_total", "mop_export_errors_total", "mop_probes_attached"]
REQUIRED_DASHBOARDS = {"mop-red", "mop-grpc", "mop-agent", "mop-validation"}


# ---------------------------------------------------------------------------------------------
# Helpers


def name(obj: dict) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def of_kind(objects: list[dict], *kinds: str) -> list[dict]:
    return [o for o in objects if o.get("kind") in kinds]


def pod_spec(obj: dict) -> dict:
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("containers", []) + spec.get("initContainers", [])


def workloads(objects: list[dict]) -> list[dict]:
    return of_kind(objects, *WORKLOAD_KINDS)


def find(objects: list[dict], kind: str, obj_name: str, namespace: str | None = None) -> dict | None:
    for o in objects:
        meta = o.get("metadata", {})
        if o.get("kind") == kind and meta.get("name") == obj_name and (namespace is None or meta.get("namespace") == namespace):
            return o
    return None


def agent_daemonset(objects: list[dict]) -> dict | None:
    return find(objects, "DaemonSet", AGENT_NAME)


def config_file(objects: list[dict], cm_name: str, key: str) -> str | None:
    cm = find(objects, "ConfigMap", cm_name)
    return None if cm is None else cm.get("data", {}).get(key)


def dig(value: object, *path: object) -> object:
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            return None
    return value


def dashboards(objects: list[dict]) -> dict[str, tuple[str, str]]:
    """Dashboard file name -> (ConfigMap name, JSON text)."""
    found = {}
    for cm in of_kind(objects, "ConfigMap"):
        if cm.get("metadata", {}).get("labels", {}).get("grafana.com/dashboard") == "true":
            for key, text in cm.get("data", {}).items():
                found[key] = (cm["metadata"]["name"], text)
    return found


def datasources(objects: list[dict]) -> list[dict]:
    text = config_file(objects, "grafana-datasources", "datasources.yaml")
    return (yaml.safe_load(text) or {}).get("datasources", []) if text else []


# ---------------------------------------------------------------------------------------------
# Security


def check_no_privileged(objects: list[dict]) -> list[str]:
    """No container is privileged, escalates privileges, keeps default capabilities or gets SYS_ADMIN."""
    out = []
    for w in workloads(objects):
        for c in containers(w):
            sc = c.get("securityContext", {})
            where = f"{name(w)} container {c.get('name')}"
            if sc.get("privileged") is not False:
                out.append(f"{where}: privileged must be false")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation must be false")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"]:
                out.append(f"{where}: capabilities must drop ALL")
            added = set(caps.get("add", []))
            if added & {"SYS_ADMIN", "CAP_SYS_ADMIN", "ALL"}:
                out.append(f"{where}: adds {sorted(added & {'SYS_ADMIN', 'CAP_SYS_ADMIN', 'ALL'})}")
    return out


def check_read_only_root(objects: list[dict]) -> list[str]:
    """Every container's root filesystem is read-only."""
    return [
        f"{name(w)} container {c.get('name')}: readOnlyRootFilesystem must be true"
        for w in workloads(objects)
        for c in containers(w)
        if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True
    ]


def check_agent_capabilities(objects: list[dict]) -> list[str]:
    """The agent adds only known capabilities, each justified by a comment in agent.libsonnet."""
    ds = agent_daemonset(objects)
    if ds is None:
        return ["the agent DaemonSet is missing"]
    source = AGENT_LIBSONNET.read_text()
    out = []
    for c in containers(ds):
        added = c.get("securityContext", {}).get("capabilities", {}).get("add", [])
        if not added:
            out.append(f"{name(ds)}: the agent adds no capability (it cannot load eBPF programs)")
        for cap in added:
            if cap not in AGENT_CAPABILITIES:
                out.append(f"{name(ds)}: capability {cap} is not among the agent's justified ones")
            elif not re.search(rf"//\s*{cap}:", source):
                out.append(f"{name(ds)}: capability {cap} has no `// {cap}:` justification in {AGENT_LIBSONNET.name}")
        if "BPF" not in added or "PERFMON" not in added:
            out.append(f"{name(ds)}: the agent needs BPF and PERFMON")
    return out


def check_rbac_read_only(objects: list[dict]) -> list[str]:
    """RBAC grants only get/list/watch, never wildcards or Secrets."""
    out = []
    for role in of_kind(objects, "ClusterRole", "Role"):
        for rule in role.get("rules", []):
            verbs = set(rule.get("verbs", []))
            if not verbs <= READ_VERBS:
                out.append(f"{name(role)}: write verbs {sorted(verbs - READ_VERBS)}")
            for field in ("verbs", "resources", "apiGroups"):
                if "*" in rule.get(field, []):
                    out.append(f"{name(role)}: wildcard in {field}")
            if "secrets" in rule.get("resources", []):
                out.append(f"{name(role)}: grants access to secrets")
    return out


def check_pod_security(objects: list[dict]) -> list[str]:
    """Namespaces carry their Pod Security level; pods outside mop-system meet "restricted"."""
    out = []
    for ns, level in NAMESPACES.items():
        obj = find(objects, "Namespace", ns)
        if obj is None:
            out.append(f"namespace {ns} is missing")
        elif obj["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != level:
            out.append(f"namespace {ns} must enforce the {level} Pod Security Standard")
    for w in workloads(objects):
        if w["metadata"].get("namespace") == "mop-system":
            continue
        spec = pod_spec(w)
        for field in ("hostPID", "hostNetwork", "hostIPC"):
            if spec.get(field):
                out.append(f"{name(w)}: {field} outside mop-system")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            out.append(f"{name(w)}: hostPath volume outside mop-system")
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            out.append(f"{name(w)}: pod must set runAsNonRoot")
        for c in containers(w):
            sc = c.get("securityContext", {})
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                out.append(f"{name(w)} container {c.get('name')}: seccompProfile must be RuntimeDefault")
            if sc.get("runAsNonRoot") is not True:
                out.append(f"{name(w)} container {c.get('name')}: runAsNonRoot must be true")
    return out


# ---------------------------------------------------------------------------------------------
# Workload shape


def check_probes(objects: list[dict]) -> list[str]:
    """Every container has readiness and liveness probes; the agent's use /readyz and /healthz."""
    out = []
    for w in workloads(objects):
        for c in containers(w):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    out.append(f"{name(w)} container {c.get('name')}: no {probe}")
    ds = agent_daemonset(objects)
    if ds is not None:
        for c in containers(ds):
            if dig(c, "readinessProbe", "httpGet", "path") != "/readyz":
                out.append(f"{name(ds)}: readiness probe must GET /readyz")
            if dig(c, "livenessProbe", "httpGet", "path") != "/healthz":
                out.append(f"{name(ds)}: liveness probe must GET /healthz")
    return out


TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][0-9A-Za-z.]+)?$")


def check_images_pinned(objects: list[dict]) -> list[str]:
    """Every image is pinned to a release tag (or a digest), never latest."""
    out = []
    for w in workloads(objects):
        for c in containers(w):
            image = c.get("image", "")
            if "@sha256:" in image:
                continue
            repo, _, tag = image.rpartition(":")
            if not repo or "/" in tag or not TAG.match(tag):
                out.append(f"{name(w)} container {c.get('name')}: image {image!r} is not pinned to a release tag")
    return out


def workspace_version() -> str:
    import tomllib

    with open(DEPLOY.parent / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def check_agent_image_version(objects: list[dict]) -> list[str]:
    """The agent image is ghcr.io/mop-observability/mop-agent at the workspace version."""
    ds = agent_daemonset(objects)
    if ds is None:
        return ["the agent DaemonSet is missing"]
    expected = f"ghcr.io/mop-observability/mop-agent:{workspace_version()}"
    return [
        f"{name(ds)}: image {c.get('image')!r}, expected {expected!r} (the workspace version)"
        for c in containers(ds)
        if c.get("image") != expected
    ]


def check_resources(objects: list[dict]) -> list[str]:
    """Every container requests CPU and memory and has a memory limit."""
    out = []
    for w in workloads(objects):
        for c in containers(w):
            r = c.get("resources", {})
            for path in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if dig(r, *path) is None:
                    out.append(f"{name(w)} container {c.get('name')}: no resources.{'.'.join(path)}")
    return out


def check_selectors(objects: list[dict]) -> list[str]:
    """Workload selectors match their pod labels; Services select pods and name their ports."""
    out = []
    pods = []
    for w in workloads(objects):
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        selector = w["spec"].get("selector", {}).get("matchLabels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            out.append(f"{name(w)}: selector does not match the pod template labels")
        ports = {p.get("name") for c in containers(w) for p in c.get("ports", [])}
        pods.append((w["metadata"].get("namespace"), labels, ports))
    for svc in of_kind(objects, "Service"):
        selector = svc["spec"].get("selector", {})
        ns = svc["metadata"].get("namespace")
        matches = [p for p in pods if p[0] == ns and all(p[1].get(k) == v for k, v in selector.items())]
        if not selector or not matches:
            out.append(f"{name(svc)}: selects no pod")
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and not any(target in m[2] for m in matches):
                out.append(f"{name(svc)}: targetPort {target!r} is not a container port")
    return out


def check_storage(objects: list[dict]) -> list[str]:
    """Stateful components keep their data on PersistentVolumeClaims from volumeClaimTemplates."""
    out = []
    for sts in of_kind(objects, "StatefulSet"):
        claims = sts["spec"].get("volumeClaimTemplates", [])
        if not claims:
            out.append(f"{name(sts)}: no volumeClaimTemplates")
        claim_names = {c["metadata"]["name"] for c in claims}
        mounted = {m["name"] for c in containers(sts) for m in c.get("volumeMounts", [])}
        for claim in claim_names - mounted:
            out.append(f"{name(sts)}: claim {claim} is not mounted")
        for claim in claims:
            if not dig(claim, "spec", "resources", "requests", "storage"):
                out.append(f"{name(sts)}: claim {claim['metadata']['name']} has no size")
    return out


def check_agent_daemonset(objects: list[dict]) -> list[str]:
    """The agent runs on every node with host PIDs, read-only host mounts, its node name and a priority."""
    ds = agent_daemonset(objects)
    if ds is None:
        return ["the agent DaemonSet is missing"]
    spec = pod_spec(ds)
    out = []
    if spec.get("hostPID") is not True:
        out.append("agent: hostPID must be true (processes are found through the host's /proc)")
    if spec.get("hostNetwork"):
        out.append("agent: hostNetwork is not needed")
    if not spec.get("tolerations"):
        out.append("agent: no tolerations: tainted nodes would go unobserved")
    pc = spec.get("priorityClassName")
    if not pc or find(objects, "PriorityClass", pc) is None:
        out.append("agent: priorityClassName must name a PriorityClass of the stack")
    pdb = [p for p in of_kind(objects, "PodDisruptionBudget")
           if p["spec"]["selector"].get("matchLabels") == ds["spec"]["selector"]["matchLabels"]]
    if not pdb:
        out.append("agent: no PodDisruptionBudget selects the agent")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(ds):
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for path in ("/sys/fs/cgroup", "/sys/kernel/tracing"):
            m = mounts.get(path)
            if m is None:
                out.append(f"agent: {path} is not mounted")
                continue
            if m.get("readOnly") is not True:
                out.append(f"agent: {path} must be mounted read-only")
            if dig(volumes.get(m["name"], {}), "hostPath", "path") != path:
                out.append(f"agent: {path} must come from the host's {path}")
        env = {e["name"]: e for e in c.get("env", [])}
        if dig(env.get("KUBE_NODE_NAME", {}), "valueFrom", "fieldRef", "fieldPath") != "spec.nodeName":
            out.append("agent: KUBE_NODE_NAME must come from spec.nodeName")
        if c.get("args", [])[:1] != ["--config"]:
            out.append("agent: must run with --config")
        if 9400 not in {p.get("containerPort") for p in c.get("ports", [])}:
            out.append("agent: port 9400 is not exposed")
    svc = find(objects, "Service", AGENT_NAME)
    if svc is None or svc["spec"].get("clusterIP") != "None":
        out.append("agent: needs a headless Service for scraping")
    return out


# ---------------------------------------------------------------------------------------------
# Configuration files


def _keys_outside(value: object, schema: object, path: str) -> list[str]:
    if schema is None:
        return [] if not isinstance(value, (dict, list)) else [f"{path}: expected a scalar"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [v for i, item in enumerate(value) for v in _keys_outside(item, schema[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    out = []
    for key, child in value.items():
        if key not in schema:
            out.append(f"{path}.{key}: unknown key" if path else f"{key}: unknown key")
        else:
            out += _keys_outside(child, schema[key], f"{path}.{key}" if path else key)
    return out


def agent_config(objects: list[dict]) -> object:
    text = config_file(objects, AGENT_NAME, "config.yaml")
    return None if text is None else yaml.safe_load(text)


def check_agent_config(objects: list[dict]) -> list[str]:
    """The agent's ConfigMap is OBI YAML with only the keys the agent implements, and all it needs."""
    cfg = agent_config(objects)
    if not isinstance(cfg, dict):
        return ["agent: config.yaml is missing or not a mapping"]
    out = [f"agent config: {v}" for v in _keys_outside(cfg, AGENT_CONFIG_SCHEMA, "")]
    for path in (("otel_traces_export", "endpoint"), ("otel_metrics_export", "endpoint"), ("prometheus_export", "port")):
        if dig(cfg, *path) is None:
            out.append(f"agent config: {'.'.join(path)} is required")
    if dig(cfg, "otel_traces_export", "protocol") not in ("grpc", "http/protobuf"):
        out.append("agent config: otel_traces_export.protocol must be grpc or http/protobuf")
    if dig(cfg, "otel_metrics_export", "protocol") != "http/protobuf" or not str(
            dig(cfg, "otel_metrics_export", "endpoint")).endswith("/otlp/v1/metrics"):
        out.append("agent config: metrics go to Mimir's /otlp/v1/metrics over http/protobuf")
    if dig(cfg, "prometheus_export", "port") != 9400:
        out.append("agent config: prometheus_export.port must be 9400 (probes and scraping use it)")
    if dig(cfg, "attributes", "kubernetes", "enable") is not True:
        out.append("agent config: attributes.kubernetes.enable must be true")
    if dig(cfg, "routes", "unmatched") not in ("heuristic", "path", "wildcard", "unset"):
        out.append("agent config: routes.unmatched has an unknown value")
    return out


def _yaml(objects: list[dict], cm: str, key: str, out: list[str]) -> dict:
    text = config_file(objects, cm, key)
    if text is None:
        out.append(f"ConfigMap {cm} has no {key}")
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        out.append(f"ConfigMap {cm} {key}: not YAML: {err}")
        return {}
    if not isinstance(value, dict):
        out.append(f"ConfigMap {cm} {key}: not a mapping")
        return {}
    return value


def _require(cfg: dict, what: str, requirements: dict[tuple, object], out: list[str]) -> None:
    """requirements: key path -> expected value (or a callable predicate, or ... for "present")."""
    for path, expected in requirements.items():
        value = dig(cfg, *path)
        key = ".".join(map(str, path))
        if expected is ... and value is None:
            out.append(f"{what}: {key} is required")
        elif callable(expected) and not expected(value):
            out.append(f"{what}: {key} = {value!r} is not acceptable")
        elif expected is not ... and not callable(expected) and value != expected:
            out.append(f"{what}: {key} must be {expected!r}, not {value!r}")


def check_program_configs(objects: list[dict]) -> list[str]:
    """Tempo, Mimir, Loki and Grafana configs parse as YAML and set what each program requires."""
    out: list[str] = []
    tempo = _yaml(objects, "tempo", "tempo.yaml", out)
    _require(tempo, "tempo.yaml", {
        ("server", "http_listen_port"): ...,
        ("distributor", "receivers", "otlp", "protocols", "grpc", "endpoint"): lambda v: str(v).endswith(":4317"),
        ("distributor", "receivers", "otlp", "protocols", "http", "endpoint"): lambda v: str(v).endswith(":4318"),
        ("storage", "trace", "backend"): "local",
        ("storage", "trace", "local", "path"): ...,
        ("storage", "trace", "wal", "path"): ...,
        ("metrics_generator", "storage", "path"): ...,
        ("metrics_generator", "storage", "remote_write", 0, "url"): lambda v: str(v).endswith("/api/v1/push"),
        ("overrides", "defaults", "metrics_generator", "processors"): lambda v: isinstance(v, list) and "service-graphs" in v,
    }, out)
    for legacy in ("ingester", "compactor", "ingester_client", "metrics_generator_client"):
        if legacy in tempo:
            out.append(f"tempo.yaml: {legacy} was removed in Tempo 3")

    mimir = _yaml(objects, "mimir", "mimir.yaml", out)
    _require(mimir, "mimir.yaml", {
        ("multitenancy_enabled",): False,
        ("target",): "all",
        ("server", "http_listen_port"): ...,
        ("blocks_storage", "backend"): "filesystem",
        ("blocks_storage", "filesystem", "dir"): ...,
        ("blocks_storage", "tsdb", "dir"): ...,
        ("compactor", "data_dir"): ...,
        # Mimir writes ./metrics-activity.log by default: on a read-only root it must move.
        ("activity_tracker", "filepath"): lambda v: str(v).startswith("/data/"),
        ("limits", "otel_metric_suffixes_enabled"): True,
        ("limits", "promote_otel_resource_attributes"): lambda v: isinstance(v, str) and "service.name" in v.split(","),
    }, out)

    loki = _yaml(objects, "loki", "loki.yaml", out)
    _require(loki, "loki.yaml", {
        ("auth_enabled",): False,
        ("server", "http_listen_port"): ...,
        ("common", "storage", "filesystem", "chunks_directory"): ...,
        ("schema_config", "configs", 0, "store"): "tsdb",
        ("schema_config", "configs", 0, "schema"): "v13",
        ("schema_config", "configs", 0, "object_store"): "filesystem",
        ("compactor", "working_directory"): ...,
    }, out)
    if dig(loki, "compactor", "retention_enabled") and not dig(loki, "compactor", "delete_request_store"):
        out.append("loki.yaml: retention needs compactor.delete_request_store")

    ds = _yaml(objects, "grafana-datasources", "datasources.yaml", out)
    _require(ds, "datasources.yaml", {("apiVersion",): 1, ("datasources",): lambda v: isinstance(v, list) and len(v) == 3}, out)
    types = {d.get("type") for d in ds.get("datasources", [])}
    if types != {"prometheus", "tempo", "loki"}:
        out.append(f"datasources.yaml: expected prometheus, tempo and loki, got {sorted(map(str, types))}")
    for d in ds.get("datasources", []):
        for field in ("name", "uid", "type", "url"):
            if not d.get(field):
                out.append(f"datasources.yaml: a data source has no {field}")

    providers = _yaml(objects, "grafana-dashboard-providers", "providers.yaml", out)
    _require(providers, "providers.yaml", {
        ("apiVersion",): 1,
        ("providers", 0, "type"): "file",
        ("providers", 0, "options", "path"): ...,
    }, out)

    alloy = config_file(objects, "alloy", "config.alloy")
    if alloy is not None:
        for fragment in ("loki.write", "prometheus.remote_write", 'sys.env("NODE_NAME")', "mop_.+"):
            if fragment not in alloy:
                out.append(f"config.alloy: missing {fragment!r}")
        if alloy.count("{") != alloy.count("}"):
            out.append("config.alloy: unbalanced braces")
    return out


def _urls(objects: list[dict]) -> list[tuple[str, str]]:
    """(where, URL) for every URL one component uses to reach another."""
    found = []
    cfg = agent_config(objects) or {}
    for sig in ("otel_traces_export", "otel_metrics_export"):
        if dig(cfg, sig, "endpoint"):
            found.append((f"agent {sig}", cfg[sig]["endpoint"]))
    tempo = yaml.safe_load(config_file(objects, "tempo", "tempo.yaml") or "{}") or {}
    for rw in dig(tempo, "metrics_generator", "storage", "remote_write") or []:
        found.append(("tempo remote_write", rw.get("url")))
    for d in datasources(objects):
        found.append((f"grafana data source {d.get('name')}", d.get("url")))
    alloy = config_file(objects, "alloy", "config.alloy") or ""
    for url in re.findall(r'url\s*=\s*"([^"]+)"', alloy):
        found.append(("alloy", url))
    return found


def check_endpoints(objects: list[dict]) -> list[str]:
    """Every in-cluster URL names a Service of the stack and one of its ports."""
    out = []
    for where, url in _urls(objects):
        parsed = urlparse(url or "")
        host = parsed.hostname or ""
        parts = host.split(".")
        if len(parts) < 3 or parts[2] != "svc":
            out.append(f"{where}: {url!r} is not an in-cluster Service URL")
            continue
        svc = find(objects, "Service", parts[0], parts[1])
        if svc is None:
            out.append(f"{where}: {url!r}: no Service {parts[1]}/{parts[0]}")
        elif parsed.port not in {p.get("port") for p in svc["spec"].get("ports", [])}:
            out.append(f"{where}: {url!r}: Service {parts[1]}/{parts[0]} has no port {parsed.port}")
    return out


def check_provisioning_escapes(objects: list[dict]) -> list[str]:
    """Grafana expands $VAR in provisioning files: literal dollars must be written $$."""
    out = []
    for cm, key in (("grafana-datasources", "datasources.yaml"), ("grafana-dashboard-providers", "providers.yaml")):
        text = config_file(objects, cm, key) or ""
        for m in re.finditer(r"(?<!\$)\$(?!\$)(\{|[A-Za-z_])", text.replace("$$", "")):
            out.append(f"{key}: unescaped ${m.group(1)}... would be expanded from the environment")
    return out


# ---------------------------------------------------------------------------------------------
# Dashboards


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for p in dashboard.get("panels", []):
        found.append(p)
        found += p.get("panels", [])
    return found


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    in_string = False
    for ch in expr:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and not in_string


def check_dashboards(objects: list[dict]) -> list[str]:
    """Dashboards are valid JSON models: unique ids, panels on the grid, queries well-formed."""
    out = []
    found = dashboards(objects)
    uids = set()
    for file, (cm, text) in sorted(found.items()):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            out.append(f"{cm}/{file}: invalid JSON: {err}")
            continue
        uid = d.get("uid")
        uids.add(uid)
        if not uid or file != f"{uid}.json":
            out.append(f"{cm}/{file}: uid {uid!r} must match the file name")
        for field in ("title", "panels", "schemaVersion"):
            if not d.get(field):
                out.append(f"{cm}/{file}: no {field}")
        ids = [p.get("id") for p in _panels(d)]
        if len(ids) != len(set(ids)) or None in ids:
            out.append(f"{cm}/{file}: panel ids must be unique")
        cells = set()
        for p in _panels(d):
            g = p.get("gridPos", {})
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
                out.append(f"{cm}/{file}: panel {p.get('title')!r} is off the grid")
                continue
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        out.append(f"{cm}/{file}: panel {p.get('title')!r} overlaps another")
                        break
                    cells.add((x, y))
                else:
                    continue
                break
            if p.get("type") == "row":
                continue
            targets = p.get("targets", [])
            if not targets:
                out.append(f"{cm}/{file}: panel {p.get('title')!r} has no query")
            for t in targets:
                query = t.get("expr", t.get("query"))
                if t.get("queryType") == "serviceMap":
                    continue
                if not query:
                    out.append(f"{cm}/{file}: panel {p.get('title')!r} has an empty query")
                elif not _balanced(query):
                    out.append(f"{cm}/{file}: panel {p.get('title')!r}: unbalanced query {query!r}")
    missing = REQUIRED_DASHBOARDS - uids
    if missing:
        out.append(f"dashboards missing: {sorted(missing)}")
    agent = next((t for f, (_, t) in found.items() if f == "mop-agent.json"), "")
    for metric in AGENT_SELF_METRICS:
        if metric not in agent:
            out.append(f"mop-agent.json: does not show {metric}")
    return out


def _datasource_refs(value: object, where: str) -> list[tuple[str, str]]:
    refs = []
    if isinstance(value, dict):
        ds = value.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            refs.append((where, ds["uid"]))
        for k, v in value.items():
            refs += _datasource_refs(v, where)
    elif isinstance(value, list):
        for v in value:
            refs += _datasource_refs(v, where)
    return refs


def check_datasource_uids(objects: list[dict]) -> list[str]:
    """Every data source uid used by a dashboard or a data-source link is provisioned."""
    ds = datasources(objects)
    known = {d.get("uid") for d in ds}
    out = []
    if len(known) != len(ds):
        out.append("datasources.yaml: data source uids must be unique")
    for file, (_, text) in sorted(dashboards(objects).items()):
        try:
            model = json.loads(text)
        except json.JSONDecodeError:
            continue  # check_dashboards reports it
        for where, uid in _datasource_refs(model, file):
            if uid not in known:
                out.append(f"{where}: data source uid {uid!r} is not provisioned")
    for d in ds:
        jd = d.get("jsonData", {})
        links = [
            dig(jd, "serviceMap", "datasourceUid"),
            dig(jd, "tracesToLogsV2", "datasourceUid"),
            dig(jd, "tracesToMetrics", "datasourceUid"),
            dig(jd, "lokiSearch", "datasourceUid"),
        ] + [e.get("datasourceUid") for e in jd.get("exemplarTraceIdDestinations", [])] \
          + [f.get("datasourceUid") for f in jd.get("derivedFields", [])]
        for uid in links:
            if uid is not None and uid not in known:
                out.append(f"data source {d.get('name')}: links to unknown uid {uid!r}")
    # Traces, metrics and logs link to each other.
    by_type = {d.get("type"): d.get("jsonData", {}) for d in ds}
    if not dig(by_type, "tempo", "tracesToLogsV2", "datasourceUid"):
        out.append("Tempo data source: no link to logs")
    if not dig(by_type, "tempo", "tracesToMetrics", "datasourceUid"):
        out.append("Tempo data source: no link to metrics")
    if not dig(by_type, "prometheus", "exemplarTraceIdDestinations"):
        out.append("Mimir data source: no exemplar link to traces")
    if not dig(by_type, "loki", "derivedFields"):
        out.append("Loki data source: no link to traces")
    return out


CHECKS = [
    check_no_privileged,
    check_read_only_root,
    check_agent_capabilities,
    check_rbac_read_only,
    check_pod_security,
    check_probes,
    check_images_pinned,
    check_agent_image_version,
    check_resources,
    check_selectors,
    check_storage,
    check_agent_daemonset,
    check_agent_config,
    check_program_configs,
    check_endpoints,
    check_provisioning_escapes,
    check_dashboards,
    check_datasource_uids,
]
