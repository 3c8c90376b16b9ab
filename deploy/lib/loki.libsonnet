// Loki, monolithic (-target=all): TSDB index with schema v13, chunks on the local filesystem,
// retention applied by the compactor.
local stateful = import 'stateful.libsonnet';

{
  loki: {
    local cfg = $._config.loki,

    local config = {
      auth_enabled: false,
      server: {
        http_listen_port: cfg.ports.http,
        grpc_listen_port: cfg.ports.grpc,
        log_level: 'info',
      },
      common: {
        instance_addr: '127.0.0.1',
        path_prefix: '/loki',
        replication_factor: 1,
        ring: { kvstore: { store: 'inmemory' } },
        storage: {
          filesystem: {
            chunks_directory: '/loki/chunks',
            rules_directory: '/loki/rules',
          },
        },
      },
      schema_config: {
        configs: [{
          from: '2024-04-01',
          store: 'tsdb',
          object_store: 'filesystem',
          schema: 'v13',
          index: { prefix: 'index_', period: '24h' },
        }],
      },
      limits_config: {
        retention_period: cfg.retention,
        allow_structured_metadata: true,
        volume_enabled: true,
      },
      compactor: {
        working_directory: '/loki/compactor',
        retention_enabled: true,
        delete_request_store: 'filesystem',
      },
      query_range: {
        results_cache: { cache: { embedded_cache: { enabled: true, max_size_mb: 100 } } },
      },
      analytics: { reporting_enabled: false },
    },

    local app = stateful.new(
      cfg,
      $._config.namespaces.logs,
      'logs',
      { 'loki.yaml': std.manifestYamlDoc(config, indent_array_in_object=true, quote_keys=false) + '\n' },
      '/etc/loki',
      '/loki',
      {
        args: ['-config.file=/etc/loki/loki.yaml', '-target=all'],
        readinessProbe: { httpGet: { path: '/ready', port: 'http' }, initialDelaySeconds: 15, periodSeconds: 10 },
        livenessProbe: { httpGet: { path: '/ready', port: 'http' }, initialDelaySeconds: 60, periodSeconds: 30, failureThreshold: 5 },
      },
    ),

    serviceAccount: app.serviceAccount,
    configMap: app.configMap,
    service: app.service,
    headlessService: app.headlessService,
    statefulSet: app.statefulSet,
  },
}
