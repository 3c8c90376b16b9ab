// Mimir, monolithic (-target=all): filesystem block storage, no multitenancy. Receives OTLP
// metrics from the agents (/otlp/v1/metrics) and remote-write from Tempo's
// metrics-generator and the collector (/api/v1/push); Grafana queries /prometheus.
local stateful = import 'stateful.libsonnet';

{
  mimir: {
    local cfg = $._config.mimir,
    // Every ring lives in this one process.
    local ring = { kvstore: { store: 'inmemory' }, instance_addr: '127.0.0.1' },

    local config = {
      target: 'all',
      multitenancy_enabled: false,
      server: {
        http_listen_port: cfg.ports.http,
        grpc_listen_port: cfg.ports.grpc,
        log_level: 'info',
      },
      distributor: { ring: ring },
      ingester: { ring: ring { replication_factor: 1 } },
      compactor: { data_dir: '/data/compactor', sharding_ring: ring },
      store_gateway: { sharding_ring: ring { replication_factor: 1 } },
      ruler: { rule_path: '/data/ruler', ring: ring },
      ruler_storage: { backend: 'filesystem', filesystem: { dir: '/data/ruler-storage' } },
      blocks_storage: {
        backend: 'filesystem',
        filesystem: { dir: '/data/blocks' },
        bucket_store: { sync_dir: '/data/tsdb-sync' },
        tsdb: { dir: '/data/tsdb' },
      },
      limits: {
        compactor_blocks_retention_period: cfg.retention,
        // Exemplars carry trace ids from the agent's histograms and Tempo's span metrics:
        // Grafana links them to Tempo.
        max_global_exemplars_per_user: 100000,
        // OTLP names as Prometheus spells them: http.server.request.duration (unit s)
        // becomes http_server_request_duration_seconds_bucket|_sum|_count.
        otel_metric_suffixes_enabled: true,
        // Resource attributes the dashboards group by become labels on every series
        // (service.name -> service_name, k8s.namespace.name -> k8s_namespace_name, ...).
        promote_otel_resource_attributes: std.join(',', [
          'service.name',
          'service.namespace',
          'k8s.namespace.name',
          'k8s.pod.name',
          'k8s.deployment.name',
          'k8s.node.name',
        ]),
        ingestion_rate: 100000,
        ingestion_burst_size: 200000,
      },
      // The default, ./metrics-activity.log, is on the read-only root filesystem.
      activity_tracker: { filepath: '/data/metrics-activity.log' },
      usage_stats: { enabled: false },
    },

    local app = stateful.new(
      cfg,
      $._config.namespaces.metrics,
      'metrics',
      { 'mimir.yaml': std.manifestYamlDoc(config, indent_array_in_object=true, quote_keys=false) + '\n' },
      '/etc/mimir',
      '/data',
      {
        args: ['-config.file=/etc/mimir/mimir.yaml'],
        readinessProbe: { httpGet: { path: '/ready', port: 'http' }, initialDelaySeconds: 15, periodSeconds: 10 },
        livenessProbe: { httpGet: { path: '/ready', port: 'http' }, initialDelaySeconds: 120, periodSeconds: 30, failureThreshold: 5 },
      },
    ),

    serviceAccount: app.serviceAccount,
    configMap: app.configMap,
    service: app.service,
    headlessService: app.headlessService,
    statefulSet: app.statefulSet,
  },
}
