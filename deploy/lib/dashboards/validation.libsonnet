// mop validation: the figures of the validation experiments (experiments/README.md), live from
// the agents' self-metrics and RED metrics. Completeness: spans made against the requests the
// RED metrics counted and what was lost on the way (kernel ring buffer, userspace queues,
// export). Cost: the work per span (kernel events per span, export duration). RED per service.
// The agent's own CPU and memory come from its standard process_* families.
local builder = import 'builder.libsonnet';

function(ds)
  local b = builder.new(ds);
  local sel = 'node=~"$node"';
  local m(name, extra='') = '%s{%s%s}' % [name, sel, extra];
  local r(name, extra='') = 'sum(rate(%s[$__rate_interval]))' % m(name, extra);
  local rby(name, by, extra='') = 'sum by (%s) (rate(%s[$__rate_interval]))' % [by, m(name, extra)];
  local svc = 'k8s_namespace_name=~"$namespace", service_name=~"$service"';
  local server = 'http_server_request_duration_seconds';
  local red(by='') =
    'sum%s (rate(%s_count{%s}[$__rate_interval]))' % [if by == '' then '' else ' by (%s)' % by, server, svc];
  local q(p, by) =
    'histogram_quantile(%s, sum by (le, %s) (rate(%s_bucket{%s}[$__rate_interval])))' % [p, by, server, svc];
  local ratioThresholds = {
    mode: 'absolute',
    steps: [{ color: 'red', value: null }, { color: 'orange', value: 0.99 }, { color: 'green', value: 0.999 }],
  };
  local lossThresholds = {
    mode: 'absolute',
    steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.001 }, { color: 'red', value: 0.01 }],
  };

  b.dashboard(
    'mop-validation',
    'mop / validation',
    'The validation experiments live: are all requests made into spans (completeness), is anything lost in the kernel or on the way out, what each span costs, and RED per service.',
    [
      b.row('Completeness'),
      b.stat('Spans delivered / spans made', [b.query(
        '(%s) / (%s)' % [r('mop_spans_exported_total', ', exporter!="metrics"'), r('mop_spans_produced_total')]
      )], 'percentunit', thresholds=ratioThresholds, description='Spans an exporter delivered over spans assembled (1 = nothing dropped after assembly). Empty when only metrics are exported.'),
      b.stat('Spans made / requests counted (RED)', [b.query(
        '(%s) / ((%s) + (%s))' % [
          r('mop_spans_produced_total'),
          r('http_server_request_duration_seconds_count'),
          r('http_client_request_duration_seconds_count'),
        ]
      )], 'percentunit', thresholds=ratioThresholds, description='The experiments compare spans with the requests a client sent; live, the HTTP RED counts are the closest independent count (RPC spans make this exceed 1).'),
      b.stat('Kernel events lost / read', [b.query(
        '%s / (%s + %s)' % [r('mop_events_lost_total'), r('mop_events_read_total'), r('mop_events_lost_total')]
      )], 'percentunit', thresholds=lossThresholds, description='Ring buffer full: the completeness experiment shows where this starts.'),
      b.stat('Spans dropped (1h)', [b.query('sum(increase(%s[1h]))' % m('mop_spans_dropped_total'))], thresholds={
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }],
      }),
      b.timeseries('Spans made vs requests counted', [
        b.query(r('mop_spans_produced_total'), 'spans made'),
        b.query(r('http_server_request_duration_seconds_count'), 'HTTP server requests (RED)'),
        b.query(r('http_client_request_duration_seconds_count'), 'HTTP client requests (RED)'),
        b.query(r('rpc_server_call_duration_seconds_count'), 'RPC server calls (RED)'),
      ], 'ops'),
      b.timeseries('Kernel events read and lost/s', [
        b.query(r('mop_events_read_total'), 'read'),
        b.query(r('mop_events_lost_total'), 'lost'),
      ], 'ops'),
      b.timeseries('Spans dropped/s by reason', [b.query(rby('mop_spans_dropped_total', 'reason'), '{{reason}}')], 'ops', stack=true),

      b.row('Cost'),
      b.timeseries('Kernel events per span', [b.query(
        '%s / %s' % [rby('mop_events_read_total', 'node'), rby('mop_spans_produced_total', 'node')],
        '{{node}}',
      )], 'short', description='Ring-buffer records the agent reads per span it makes: the kernel-side work per request (the overhead experiment reports it with CPU per request).'),
      b.timeseries('Agent CPU per 1k spans', [b.query(
        '1000 * %s / %s' % [rby('process_cpu_seconds_total', 'node'), rby('mop_spans_produced_total', 'node')],
        '{{node}}',
      )], 's', description='CPU seconds the agent spends per thousand spans it makes (the overhead experiment measured 3.3 ms per 1k nginx requests).'),
      b.timeseries('Agent CPU (cores)', [b.query(rby('process_cpu_seconds_total', 'node'), '{{node}}')], 'short'),
      b.timeseries('Agent resident memory', [b.query('sum by (node) (%s)' % m('process_resident_memory_bytes'), '{{node}}')], 'bytes'),
      b.timeseries('Connections tracked', [b.query('sum by (node) (%s)' % m('mop_connections_tracked'), '{{node}}')]),
      b.timeseries('Export duration p95', [b.query(
        'histogram_quantile(0.95, sum by (le, exporter) (rate(%s[$__rate_interval])))' % m('mop_export_duration_seconds_bucket'),
        '{{exporter}}',
      )], 's'),

      b.row('Export'),
      b.timeseries('Export errors/s', [b.query(rby('mop_export_errors_total', 'exporter, signal'), '{{exporter}} {{signal}}')], 'ops'),
      b.timeseries('Export retries/s and rejected items/s', [
        b.query(rby('mop_export_retries_total', 'exporter, signal'), 'retries {{exporter}} {{signal}}'),
        b.query(rby('mop_export_rejected_total', 'exporter, signal'), 'rejected {{exporter}} {{signal}}'),
      ], 'ops'),
      b.timeseries('Metric points dropped/s', [b.query(rby('mop_metric_points_dropped_total', 'exporter, reason'), '{{exporter}} {{reason}}')], 'ops'),

      b.row('RED per service'),
      b.timeseries('Requests/s', [b.query(red('service_name'), '{{service_name}}')], 'reqps'),
      b.timeseries('Server errors (5xx) ratio', [b.query(
        'sum by (service_name) (rate(%s_count{%s, http_response_status_code=~"5.."}[$__rate_interval])) / %s' % [server, svc, red('service_name')],
        '{{service_name}}',
      )], 'percentunit'),
      b.timeseries('Latency p50 / p99', [
        b.query(q('0.50', 'service_name'), 'p50 {{service_name}}'),
        b.query(q('0.99', 'service_name'), 'p99 {{service_name}}'),
      ], 's'),
    ],
    [
      b.variable('node', 'Node', 'label_values(mop_build_info, node)'),
      b.variable('namespace', 'Namespace', 'label_values(%s_count, k8s_namespace_name)' % server),
      b.variable('service', 'Service', 'label_values(%s_count{k8s_namespace_name=~"$namespace"}, service_name)' % server),
    ],
    ['agent', 'validation'],
  )
