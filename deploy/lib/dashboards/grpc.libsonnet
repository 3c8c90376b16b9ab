// gRPC: calls, status codes and duration per service and method, servers and clients.
local builder = import 'builder.libsonnet';

function(ds)
  local b = builder.new(ds);
  local sel = 'k8s_namespace_name=~"$namespace", service_name=~"$service", rpc_service=~"$rpc_service"';
  local server = 'rpc_server_call_duration_seconds';
  local client = 'rpc_client_call_duration_seconds';
  local rate(metric, extra='', by='') =
    'sum%s (rate(%s_count{%s%s}[$__rate_interval]))'
    % [if by == '' then '' else ' by (%s)' % by, metric, sel, extra];
  // Any status but OK (0) is an error.
  local ratio(metric, by='') =
    '%s / %s' % [rate(metric, ', rpc_grpc_status_code!="0"', by), rate(metric, '', by)];
  local quantile(q, metric, by='') =
    'histogram_quantile(%s, sum by (le%s) (rate(%s_bucket{%s}[$__rate_interval])))'
    % [q, if by == '' then '' else ', ' + by, metric, sel];

  b.dashboard(
    'mop-grpc',
    'mop / gRPC',
    'gRPC calls served and made by the services the mop agents watch: rate, status codes, duration.',
    [
      b.row('Overview'),
      b.stat('Calls/s', [b.query(rate(server))], 'reqps'),
      b.stat('Error ratio (status != OK)', [b.query(ratio(server))], 'percentunit', thresholds={
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.01 }, { color: 'red', value: 0.05 }],
      }),
      b.stat('p95 latency', [b.query(quantile('0.95', server))], 's'),
      b.stat('Methods', [b.query('count(count by (rpc_service, rpc_method) (%s_count{%s}))' % [server, sel])]),

      b.row('Servers'),
      b.timeseries('Calls/s by method', [b.query(rate(server, by='rpc_service, rpc_method'), '{{rpc_service}}/{{rpc_method}}')], 'reqps'),
      b.timeseries('Calls/s by status code', [b.query(rate(server, by='rpc_grpc_status_code'), 'status {{rpc_grpc_status_code}}')], 'reqps', stack=true),
      b.timeseries('p95 latency by method', [b.query(quantile('0.95', server, 'rpc_service, rpc_method'), '{{rpc_service}}/{{rpc_method}}', exemplar=true)], 's'),
      b.table(
        'Methods',
        [
          b.tableQuery(rate(server, by='service_name, rpc_service, rpc_method')),
          b.tableQuery(ratio(server, 'service_name, rpc_service, rpc_method')),
          b.tableQuery(quantile('0.95', server, 'service_name, rpc_service, rpc_method')),
        ],
        renames={ 'Value #A': 'calls/s', 'Value #B': 'error ratio', 'Value #C': 'p95 (s)' },
      ),

      b.row('Clients'),
      b.timeseries('Calls/s by method', [b.query(rate(client, by='rpc_service, rpc_method'), '{{rpc_service}}/{{rpc_method}}')], 'reqps'),
      b.timeseries('Error ratio by method', [b.query(ratio(client, 'rpc_service, rpc_method'), '{{rpc_service}}/{{rpc_method}}')], 'percentunit'),
      b.timeseries('p95 latency by method', [b.query(quantile('0.95', client, 'rpc_service, rpc_method'), '{{rpc_service}}/{{rpc_method}}', exemplar=true)], 's'),

      b.row('Traces'),
      b.traces('Recent failed calls', [b.traceql('{ span.rpc.system = "grpc" && span.rpc.grpc.status_code != 0 }')]),
    ],
    [
      b.variable('namespace', 'Namespace', 'label_values(%s_count, k8s_namespace_name)' % server),
      b.variable('service', 'Service', 'label_values(%s_count{k8s_namespace_name=~"$namespace"}, service_name)' % server),
      b.variable('rpc_service', 'gRPC service', 'label_values(%s_count{service_name=~"$service"}, rpc_service)' % server),
    ],
    ['grpc'],
  )
