// Infrastructure: one namespace per system, with the Pod Security Standard each can meet.
local k = import 'k.libsonnet';

{
  namespaces: {
    local ns = $._config.namespaces,
    local pss(level) = {
      'pod-security.kubernetes.io/enforce': level,
      'pod-security.kubernetes.io/enforce-version': 'latest',
      'pod-security.kubernetes.io/warn': level,
      'pod-security.kubernetes.io/audit': level,
    },
    local labels(name) = { 'app.kubernetes.io/part-of': 'mop', 'kubernetes.io/metadata.name': name },

    // The agent needs hostPID, hostPath mounts and eBPF capabilities: "privileged" is the
    // only standard that admits them. Nothing else runs in this namespace.
    agent: k.core.namespace(ns.agent, labels(ns.agent) + pss('privileged')),
    // The Grafana stack runs as non-root, with no capabilities and the runtime's seccomp
    // profile, so its namespaces enforce "restricted".
    traces: k.core.namespace(ns.traces, labels(ns.traces) + pss('restricted')),
    metrics: k.core.namespace(ns.metrics, labels(ns.metrics) + pss('restricted')),
    logs: k.core.namespace(ns.logs, labels(ns.logs) + pss('restricted')),
  },
}
