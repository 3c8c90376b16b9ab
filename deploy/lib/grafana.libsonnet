// Grafana with provisioned data sources (Mimir, Tempo, Loki, linked both ways: exemplars to
// traces, traces to metrics and logs, log lines to traces) and mop's dashboards, each from its
// own ConfigMap.
local k = import 'k.libsonnet';
local stateful = import 'stateful.libsonnet';

{
  grafana: {
    local cfg = $._config.grafana,
    local ns = cfg.namespace,
    local uids = cfg.datasources,
    local labels = k.labels(cfg.name, 'dashboards'),
    local url(c, path='') = 'http://%s:%d%s' % [c.host, c.ports.http, path],

    // Provisioning files expand $VAR and ${VAR} from the environment: a literal $ is $$.
    local datasources = {
      apiVersion: 1,
      datasources: [
        {
          name: 'Mimir',
          uid: uids.metrics,
          type: 'prometheus',
          access: 'proxy',
          url: url($._config.mimir, '/prometheus'),
          isDefault: true,
          editable: false,
          jsonData: {
            httpMethod: 'POST',
            prometheusType: 'Mimir',
            timeInterval: '15s',
            // Metrics -> traces: exemplars carry the trace id.
            exemplarTraceIdDestinations: [{ name: 'trace_id', datasourceUid: uids.traces }],
          },
        },
        {
          name: 'Tempo',
          uid: uids.traces,
          type: 'tempo',
          access: 'proxy',
          url: url($._config.tempo),
          editable: false,
          jsonData: {
            streamingEnabled: { search: true, metrics: true },
            nodeGraph: { enabled: true },
            serviceMap: { datasourceUid: uids.metrics },
            lokiSearch: { datasourceUid: uids.logs },
            traceQuery: { timeShiftEnabled: true, spanStartTimeShift: '-30m', spanEndTimeShift: '30m' },
            // Traces -> logs: the pod's log lines around the span.
            tracesToLogsV2: {
              datasourceUid: uids.logs,
              spanStartTimeShift: '-5m',
              spanEndTimeShift: '5m',
              filterByTraceID: false,
              filterBySpanID: false,
              tags: [
                { key: 'k8s.namespace.name', value: 'namespace' },
                { key: 'k8s.pod.name', value: 'pod' },
              ],
            },
            // Traces -> metrics: the RED metrics of the span's service.
            tracesToMetrics: {
              datasourceUid: uids.metrics,
              spanStartTimeShift: '-5m',
              spanEndTimeShift: '5m',
              tags: [{ key: 'service.name', value: 'service_name' }],
              queries: [
                { name: 'Request rate', query: 'sum(rate(http_server_request_duration_seconds_count{$$__tags}[5m]))' },
                { name: 'Error rate (5xx)', query: 'sum(rate(http_server_request_duration_seconds_count{$$__tags, http_response_status_code=~"5.."}[5m]))' },
                { name: 'p95 latency', query: 'histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{$$__tags}[5m])))' },
              ],
            },
          },
        },
        {
          name: 'Loki',
          uid: uids.logs,
          type: 'loki',
          access: 'proxy',
          url: url($._config.loki),
          editable: false,
          jsonData: {
            maxLines: 1000,
            // Logs -> traces: a trace id in a log line opens the trace.
            derivedFields: [{
              name: 'TraceID',
              matcherType: 'regex',
              matcherRegex: '(?:trace_?[iI][dD]|traceparent)["=: ]+(?:00-)?([0-9a-f]{32})',
              url: '$${__value.raw}',
              datasourceUid: uids.traces,
              urlDisplayLabel: 'View trace',
            }],
          },
        },
      ],
    },

    local dashboardDir = '/etc/grafana/dashboards/mop',
    local providers = {
      apiVersion: 1,
      providers: [{
        name: 'mop',
        orgId: 1,
        folder: 'mop',
        folderUid: 'mop',
        type: 'file',
        disableDeletion: true,
        editable: false,
        allowUiUpdates: false,
        updateIntervalSeconds: 60,
        options: { path: dashboardDir, foldersFromFilesStructure: false },
      }],
    },

    local dsInfo = uids {
      agentNamespace: $._config.namespaces.agent,
      agentContainer: $._config.agent.name,
    },
    local dashboards = {
      'mop-red': (import 'dashboards/red.libsonnet')(dsInfo),
      'mop-grpc': (import 'dashboards/grpc.libsonnet')(dsInfo),
      'mop-agent': (import 'dashboards/agent.libsonnet')(dsInfo),
      'mop-validation': (import 'dashboards/validation.libsonnet')(dsInfo),
    },
    local yaml(o) = std.manifestYamlDoc(o, indent_array_in_object=true, quote_keys=false) + '\n',

    local app = stateful.new(
      cfg,
      ns,
      'dashboards',
      { 'datasources.yaml': yaml(datasources) },
      '/etc/grafana/provisioning/datasources',
      '/var/lib/grafana',
      {
        env: [
          k.env('GF_LOG_MODE', 'console'),
          k.env('GF_ANALYTICS_REPORTING_ENABLED', 'false'),
          k.env('GF_ANALYTICS_CHECK_FOR_UPDATES', 'false'),
          k.env('GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES', 'false'),
          k.env('GF_AUTH_ANONYMOUS_ENABLED', std.toString(cfg.anonymousViewer)),
          k.env('GF_AUTH_ANONYMOUS_ORG_ROLE', 'Viewer'),
          k.env('GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH', '%s/mop-red.json' % dashboardDir),
          // Unset when the Secret does not exist: Grafana then starts with admin/admin and asks
          // for a new password at the first login.
          k.envSecret('GF_SECURITY_ADMIN_PASSWORD', cfg.adminSecret, 'password'),
        ],
        readinessProbe: { httpGet: { path: '/api/health', port: 'http' }, initialDelaySeconds: 10, periodSeconds: 10 },
        livenessProbe: { httpGet: { path: '/api/health', port: 'http' }, initialDelaySeconds: 60, periodSeconds: 30, failureThreshold: 5 },
        volumeMounts+: [
          k.mount('providers', '/etc/grafana/provisioning/dashboards', readOnly=true),
          k.mount('dashboards', dashboardDir, readOnly=true),
          // The image's log directory; logs go to the console, but keep it writable.
          k.mount('logs', '/var/log/grafana'),
        ],
      },
      [
        k.volumes.configMap('providers', 'grafana-dashboard-providers'),
        k.volumes.projectedConfigMaps('dashboards', ['grafana-dashboard-' + name for name in std.objectFields(dashboards)]),
        k.volumes.emptyDir('logs', '64Mi'),
      ],
      'grafana-datasources',
    ) + {
      statefulSet+: {
        spec+: {
          template+: {
            metadata+: {
              annotations+: {
                'checksum/dashboards': std.md5(std.manifestJsonMinified(dashboards) + yaml(providers)),
              },
            },
          },
        },
      },
    },

    serviceAccount: app.serviceAccount,
    datasources: app.configMap,
    dashboardProviders: k.core.configMap('grafana-dashboard-providers', ns, { 'providers.yaml': yaml(providers) }, labels),
    dashboards: {
      [name]: k.core.configMap(
        'grafana-dashboard-' + name,
        ns,
        { [name + '.json']: std.manifestJsonEx(dashboards[name], '  ') + '\n' },
        labels { 'grafana.com/dashboard': 'true' },
      )
      for name in std.objectFields(dashboards)
    },
    service: app.service,
    headlessService: app.headlessService,
    statefulSet: app.statefulSet,
  },
}
