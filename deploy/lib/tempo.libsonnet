// Tempo, monolithic (-target=all): OTLP gRPC and HTTP receivers, local block storage, and the
// metrics-generator writing service-graph and span metrics to Mimir.
local stateful = import 'stateful.libsonnet';

{
  tempo: {
    local cfg = $._config.tempo,
    local mimir = $._config.mimir,

    local config = {
      stream_over_http_enabled: true,
      server: {
        http_listen_port: cfg.ports.http,
        grpc_listen_port: cfg.ports.grpc,
        log_level: 'info',
      },
      distributor: {
        receivers: {
          otlp: {
            protocols: {
              grpc: { endpoint: '0.0.0.0:%d' % cfg.ports['otlp-grpc'] },
              http: { endpoint: '0.0.0.0:%d' % cfg.ports['otlp-http'] },
            },
          },
        },
      },
      metrics_generator: {
        registry: { external_labels: { source: 'tempo' } },
        storage: {
          path: '/var/tempo/generator/wal',
          remote_write: [{
            url: 'http://%s:%d/api/v1/push' % [mimir.host, mimir.ports.http],
            send_exemplars: true,
          }],
          // Mimir runs without multitenancy: no tenant header.
          remote_write_add_org_id_header: false,
        },
      },
      storage: {
        trace: {
          backend: 'local',
          wal: { path: '/var/tempo/wal' },
          'local': { path: '/var/tempo/blocks' },
        },
      },
      overrides: {
        defaults: {
          metrics_generator: {
            // service-graphs: traces_service_graph_request_total & co. for Grafana's service
            // map; span-metrics: traces_spanmetrics_* per span name.
            processors: ['service-graphs', 'span-metrics'],
          },
          compaction: { block_retention: cfg.retention },
        },
      },
      usage_report: { reporting_enabled: false },
    },

    local app = stateful.new(
      cfg,
      $._config.namespaces.traces,
      'traces',
      { 'tempo.yaml': std.manifestYamlDoc(config, indent_array_in_object=true, quote_keys=false) + '\n' },
      '/etc/tempo',
      '/var/tempo',
      {
        args: ['-target=all', '-config.file=/etc/tempo/tempo.yaml'],
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
