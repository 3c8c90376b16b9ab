// Default configuration of the whole stack. Environments override any of it with
// `_config+:: { ... }`; components read it through `$._config`.
//
// Image tags are pinned to releases; update them here only (the tests reject `latest`).
{
  _config:: {
    // Namespaces, one per system. The agent's namespace must allow privileged pods
    // (hostPID, hostPath); the others enforce the "restricted" Pod Security Standard.
    namespaces: {
      agent: 'mop-system',
      traces: 'mop-traces',
      metrics: 'mop-metrics',
      logs: 'mop-logs',
    },

    clusterDomain: 'cluster.local',

    // Storage for every StatefulSet; null uses the cluster's default StorageClass.
    storageClass: null,

    agent: {
      name: 'mop-agent',
      image: { repository: 'ghcr.io/mop-observability/mop-agent', tag: '0.1.0' },
      port: 9400,
      logLevel: 'info',
      resources: {
        requests: { cpu: '100m', memory: '128Mi' },
        limits: { cpu: '1', memory: '512Mi' },
      },
      // Node agents run on every node, tainted ones included.
      tolerations: [{ operator: 'Exists' }],
      nodeSelector: { 'kubernetes.io/os': 'linux' },
      priorityClass: { name: 'mop-node-agent', value: 1000000 },
      // Voluntary evictions (descheduler, eviction API) take at most this many agents down.
      maxUnavailable: 1,
      // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; only there does the agent need
      // CAP_SYS_RESOURCE to raise it. Leave false on 5.11+ (memory is cgroup-accounted).
      kernelBefore511: false,
      // The container runtimes' default seccomp profiles (containerd's among them) allow
      // bpf(2) and perf_event_open(2) only with CAP_SYS_ADMIN, which the agent never gets;
      // and their default AppArmor profiles deny reading other processes' /proc entries.
      // Point these at Localhost profiles where a cluster ships them.
      seccompProfile: { type: 'Unconfined' },
      appArmorProfile: { type: 'Unconfined' },
      // Where the host mounts tracefs and the cgroup v2 hierarchy.
      hostPaths: {
        cgroup: '/sys/fs/cgroup',
        tracefs: '/sys/kernel/tracing',
      },
      // The agent's own configuration file, OBI v1 YAML. Only keys the agent implements.
      config: {
        log_level: $._config.agent.logLevel,
        discovery: {
          instrument: [
            { open_ports: '80,443,8000-9999' },
          ],
          exclude_instrument: [
            { k8s_namespace: 'mop-*' },
          ],
        },
        otel_traces_export: {
          endpoint: 'http://%s:%d' % [$._config.tempo.host, $._config.tempo.ports['otlp-grpc']],
          protocol: 'grpc',
        },
        otel_metrics_export: {
          endpoint: 'http://%s:%d/otlp/v1/metrics' % [$._config.mimir.host, $._config.mimir.ports.http],
          protocol: 'http/protobuf',
          interval: '15s',
        },
        prometheus_export: {
          port: $._config.agent.port,
          path: '/metrics',
        },
        attributes: {
          kubernetes: { enable: true },
        },
        routes: {
          unmatched: 'heuristic',
        },
      },
    },

    tempo: {
      name: 'tempo',
      image: { repository: 'grafana/tempo', tag: '3.0.3' },
      // Monolithic Tempo with local storage: one replica (0 to stop it).
      replicas: 1,
      host: '%s.%s.svc.%s' % [self.name, $._config.namespaces.traces, $._config.clusterDomain],
      ports: { http: 3200, grpc: 9095, 'otlp-grpc': 4317, 'otlp-http': 4318 },
      storage: { size: '10Gi', class: $._config.storageClass },
      retention: '336h',
      resources: {
        requests: { cpu: '250m', memory: '512Mi' },
        limits: { memory: '2Gi' },
      },
      uid: 10001,
    },

    mimir: {
      name: 'mimir',
      image: { repository: 'grafana/mimir', tag: '3.1.4' },
      replicas: 1,
      host: '%s.%s.svc.%s' % [self.name, $._config.namespaces.metrics, $._config.clusterDomain],
      ports: { http: 8080, grpc: 9095 },
      storage: { size: '20Gi', class: $._config.storageClass },
      retention: '15d',
      resources: {
        requests: { cpu: '250m', memory: '1Gi' },
        limits: { memory: '4Gi' },
      },
      uid: 10001,
    },

    loki: {
      name: 'loki',
      image: { repository: 'grafana/loki', tag: '3.7.7' },
      replicas: 1,
      host: '%s.%s.svc.%s' % [self.name, $._config.namespaces.logs, $._config.clusterDomain],
      ports: { http: 3100, grpc: 9095 },
      storage: { size: '10Gi', class: $._config.storageClass },
      retention: '168h',
      resources: {
        requests: { cpu: '100m', memory: '256Mi' },
        limits: { memory: '1Gi' },
      },
      uid: 10001,
    },

    grafana: {
      name: 'grafana',
      image: { repository: 'grafana/grafana', tag: '13.2.1' },
      // Grafana keeps users and sessions in SQLite on its volume: one replica.
      replicas: 1,
      namespace: $._config.namespaces.metrics,
      ports: { http: 3000 },
      storage: { size: '2Gi', class: $._config.storageClass },
      // Anonymous viewers see the dashboards without logging in; the admin password comes
      // from the Secret `grafana-admin` (key `password`) when it exists.
      anonymousViewer: true,
      adminSecret: 'grafana-admin',
      resources: {
        requests: { cpu: '100m', memory: '256Mi' },
        limits: { memory: '1Gi' },
      },
      uid: 472,
      // Data source uids; dashboards refer to these.
      datasources: { metrics: 'mimir', traces: 'tempo', logs: 'loki' },
    },

    // Grafana Alloy on every node: ships pod logs to Loki (through the API server, so no
    // hostPath) and scrapes the agent's self-metrics into Mimir.
    collector: {
      enabled: true,
      name: 'alloy',
      image: { repository: 'grafana/alloy', tag: 'v1.18.1' },
      namespace: $._config.namespaces.logs,
      port: 12345,
      scrapeInterval: '15s',
      tolerations: [{ operator: 'Exists' }],
      resources: {
        requests: { cpu: '50m', memory: '128Mi' },
        limits: { memory: '512Mi' },
      },
      uid: 473,
    },
  },
}
