"""Property tests of the rendered manifests (python3 -m unittest discover -s deploy/tests).

Every check of checks.py must hold for every environment in deploy/manifests, and must fail
on a copy of the default environment broken in the way the check is about, and on the
hand-written broken fixture.
"""

from __future__ import annotations

import copy
import json
import sys
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checks  # noqa: E402

MANIFESTS = checks.DEPLOY / "manifests"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_dir(directory: Path) -> list[dict]:
    objects = []
    for path in sorted(directory.glob("*.yaml")):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return objects


def environments() -> dict[str, list[dict]]:
    return {p.name: load_dir(p) for p in sorted(MANIFESTS.iterdir()) if p.is_dir()}


class RenderedManifests(unittest.TestCase):
    """Every property holds for every committed environment."""

    def test_environments_exist(self) -> None:
        envs = environments()
        self.assertIn("default", envs)
        self.assertGreaterEqual(len(envs), 2, "the default environment and at least one example")
        for env, objects in envs.items():
            self.assertTrue(objects, f"{env}: no objects")

    def test_properties(self) -> None:
        for env, objects in environments().items():
            for check in checks.CHECKS:
                with self.subTest(env=env, check=check.__name__):
                    self.assertEqual(check(objects), [], check.__doc__)

    def test_production_overrides(self) -> None:
        """The example environment overrides configuration, and the render shows it."""
        prod = environments()["production"]
        for sts in checks.of_kind(prod, "StatefulSet"):
            for claim in sts["spec"]["volumeClaimTemplates"]:
                self.assertEqual(claim["spec"].get("storageClassName"), "fast-ssd", checks.name(sts))
        cfg = checks.agent_config(prod)
        self.assertEqual(cfg["discovery"]["instrument"], [{"k8s_namespace": "shop"}, {"k8s_namespace": "payments"}])
        default = environments()["default"]
        for sts in checks.of_kind(default, "StatefulSet"):
            for claim in sts["spec"]["volumeClaimTemplates"]:
                self.assertNotIn("storageClassName", claim["spec"], "default uses the cluster's StorageClass")


# ---------------------------------------------------------------------------------------------
# Each check must be able to fail.


def find(objects: list[dict], kind: str, name: str) -> dict:
    obj = checks.find(objects, kind, name)
    assert obj is not None, f"{kind}/{name} not in the default environment"
    return obj


def agent_container(objects: list[dict]) -> dict:
    return checks.pod_spec(find(objects, "DaemonSet", "mop-agent"))["containers"][0]


def edit_config(objects: list[dict], cm: str, key: str, edit) -> None:
    obj = find(objects, "ConfigMap", cm)
    value = yaml.safe_load(obj["data"][key])
    edit(value)
    obj["data"][key] = yaml.safe_dump(value)


def edit_dashboard(objects: list[dict], uid: str, edit) -> None:
    obj = find(objects, "ConfigMap", f"grafana-dashboard-{uid}")
    model = json.loads(obj["data"][f"{uid}.json"])
    edit(model)
    obj["data"][f"{uid}.json"] = json.dumps(model)


def first_target(model: dict) -> dict:
    return next(p for p in model["panels"] if p.get("targets"))["targets"][0]


def privileged(o):
    agent_container(o)["securityContext"]["privileged"] = True


def sys_admin(o):
    agent_container(o)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")


def writable_root(o):
    checks.pod_spec(find(o, "StatefulSet", "tempo"))["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


def unjustified_capability(o):
    agent_container(o)["securityContext"]["capabilities"]["add"].append("NET_RAW")


def write_verb(o):
    find(o, "ClusterRole", "mop-agent")["rules"][0]["verbs"].append("patch")


def secrets_access(o):
    find(o, "ClusterRole", "alloy")["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})


def host_path_in_restricted(o):
    checks.pod_spec(find(o, "StatefulSet", "loki"))["volumes"].append({"name": "x", "hostPath": {"path": "/"}})


def no_readiness(o):
    del checks.pod_spec(find(o, "StatefulSet", "mimir"))["containers"][0]["readinessProbe"]


def latest_tag(o):
    checks.pod_spec(find(o, "StatefulSet", "grafana"))["containers"][0]["image"] = "grafana/grafana:latest"


def old_agent_image(o):
    agent_container(o)["image"] = "ghcr.io/mop-observability/mop-agent:0.0.9"


def no_memory_limit(o):
    del agent_container(o)["resources"]["limits"]["memory"]


def wrong_selector(o):
    find(o, "Service", "tempo")["spec"]["selector"] = {"app.kubernetes.io/name": "nothing"}


def no_claims(o):
    find(o, "StatefulSet", "mimir")["spec"]["volumeClaimTemplates"] = []


def writable_cgroup(o):
    for m in agent_container(o)["volumeMounts"]:
        if m["mountPath"] == "/sys/fs/cgroup":
            m["readOnly"] = False


def unknown_agent_key(o):
    edit_config(o, "mop-agent", "config.yaml", lambda c: c.update(ebpf={"context_propagation": "all"}))


def legacy_tempo_block(o):
    edit_config(o, "tempo", "tempo.yaml", lambda c: c.update(ingester={"max_block_duration": "5m"}))


def loki_old_schema(o):
    edit_config(o, "loki", "loki.yaml", lambda c: c["schema_config"]["configs"][0].update(schema="v12", store="boltdb-shipper"))


def wrong_endpoint(o):
    edit_config(o, "mop-agent", "config.yaml",
                lambda c: c["otel_traces_export"].update(endpoint="http://tempo.mop-traces.svc.cluster.local:14317"))


def unescaped_dollar(o):
    cm = find(o, "ConfigMap", "grafana-datasources")
    cm["data"]["datasources.yaml"] = cm["data"]["datasources.yaml"].replace("$${__value.raw}", "${__value.raw}")


def overlapping_panels(o):
    def edit(model):
        model["panels"][2]["gridPos"] = dict(model["panels"][1]["gridPos"])
    edit_dashboard(o, "mop-red", edit)


def unbalanced_query(o):
    edit_dashboard(o, "mop-grpc", lambda m: first_target(m).update(expr="sum(rate(x[5m])"))


def broken_json(o):
    cm = find(o, "ConfigMap", "grafana-dashboard-mop-agent")
    cm["data"]["mop-agent.json"] = cm["data"]["mop-agent.json"][:-10]


def unknown_datasource(o):
    edit_dashboard(o, "mop-red", lambda m: first_target(m)["datasource"].update(uid="prometheus"))


def unlinked_traces(o):
    edit_config(o, "grafana-datasources", "datasources.yaml",
                lambda c: [d["jsonData"].pop("tracesToLogsV2") for d in c["datasources"] if d["type"] == "tempo"])


BREAKAGES = {
    checks.check_no_privileged: [privileged, sys_admin],
    checks.check_read_only_root: [writable_root],
    checks.check_agent_capabilities: [unjustified_capability, sys_admin],
    checks.check_rbac_read_only: [write_verb, secrets_access],
    checks.check_pod_security: [host_path_in_restricted],
    checks.check_probes: [no_readiness],
    checks.check_images_pinned: [latest_tag],
    checks.check_agent_image_version: [old_agent_image],
    checks.check_resources: [no_memory_limit],
    checks.check_selectors: [wrong_selector],
    checks.check_storage: [no_claims],
    checks.check_agent_daemonset: [writable_cgroup],
    checks.check_agent_config: [unknown_agent_key],
    checks.check_program_configs: [legacy_tempo_block, loki_old_schema],
    checks.check_endpoints: [wrong_endpoint],
    checks.check_provisioning_escapes: [unescaped_dollar],
    checks.check_dashboards: [overlapping_panels, unbalanced_query, broken_json],
    checks.check_datasource_uids: [unknown_datasource, unlinked_traces],
}


class ChecksFail(unittest.TestCase):
    """Each check reports a deliberately broken copy of the default environment."""

    def test_every_check_has_a_breakage(self) -> None:
        self.assertEqual(set(BREAKAGES), set(checks.CHECKS))

    def test_breakages_are_detected(self) -> None:
        default = environments()["default"]
        for check, breakages in BREAKAGES.items():
            for breakage in breakages:
                with self.subTest(check=check.__name__, breakage=breakage.__name__):
                    broken = copy.deepcopy(default)
                    breakage(broken)
                    self.assertNotEqual(check(broken), [], f"{breakage.__name__} went unnoticed")

    def test_broken_fixture(self) -> None:
        """A hand-written DaemonSet with every classic mistake is reported by each check concerned."""
        broken = load_dir(FIXTURES)
        expected = {
            checks.check_no_privileged: "privileged must be false",
            checks.check_read_only_root: "readOnlyRootFilesystem",
            checks.check_rbac_read_only: "write verbs",
            checks.check_probes: "no readinessProbe",
            checks.check_images_pinned: "not pinned",
            checks.check_resources: "no resources",
            checks.check_agent_daemonset: "hostPID",
        }
        for check, message in expected.items():
            with self.subTest(check=check.__name__):
                found = check(broken)
                self.assertTrue(any(message in v for v in found), f"{message!r} not in {found}")


if __name__ == "__main__":
    unittest.main()
