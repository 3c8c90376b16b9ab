// RED overview: rate, errors and duration of HTTP servers and clients, per service and
// route, from the agent's OTLP metrics in Mimir; plus Tempo's service graph and recent
// error traces.
local builder = import 'builder.libsonnet';

function(ds)
  local b = builder.new(ds);
  local sel = 'k8s_namespace_name=~"$namespace", service_name=~"$service"';
  local server = 'http_server_request_duration_seconds';
  local client = 'http_client_request_duration_seconds';
  local rate(metric, extra='', by='') =
    'sum%s (rate(%s_count{%s%s}[$__rate_interval]))'
    % [if by == '' then '' else ' by (%s)' % by, metric, sel, extra];
  local ratio(metric, errors, by='') =
    '%s / %s' % [rate(metric, ', http_response_status_code=~"%s"' % errors, by), rate(metric, '', by)];
  local quantile(q, metric, by='') =
    'histogram_quantile(%s, sum by (le%s) (rate(%s_bucket{%s}[$__rate_interval])))'
    % [q, if by == '' then '' else ', ' + by, metric, sel];

  b.dashboard(
    'mop-red',
    'mop / RED overview',
    'Requests, errors and duration of every HTTP service the mop agents watch, per service and route.',
    [
      b.row('Overview'),
      b.stat('Requests/s', [b.query(rate(server))], 'reqps'),
      b.stat('Server errors (5xx)', [b.query(ratio(server, '5..'))], 'percentunit', thresholds={
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.01 }, { color: 'red', value: 0.05 }],
      }),
      b.stat('p95 latency', [b.query(quantile('0.95', server))], 's'),
      b.stat('Services', [b.query('count(count by (service_name) (%s_count{%s}))' % [server, sel])]),

      b.row('Servers, per service'),
      b.timeseries('Request rate', [b.query(rate(server, by='service_name'), '{{service_name}}')], 'reqps'),
      b.timeseries('Error ratio (5xx)', [b.query(ratio(server, '5..', 'service_name'), '{{service_name}}')], 'percentunit'),
      b.timeseries(
        'Latency p50 / p95 / p99',
        [
          b.query(quantile('0.50', server, 'service_name'), 'p50 {{service_name}}'),
          b.query(quantile('0.95', server, 'service_name'), 'p95 {{service_name}}', exemplar=true),
          b.query(quantile('0.99', server, 'service_name'), 'p99 {{service_name}}'),
        ],
        's',
        description='Exemplars link to the trace of a slow request in Tempo.',
      ),
      b.timeseries(
        'Responses by status code',
        [b.query(rate(server, by='service_name, http_response_status_code'), '{{service_name}} {{http_response_status_code}}')],
        'reqps',
        w=24,
        stack=true,
      ),

      b.row('Servers, per route'),
      b.table(
        'Routes',
        [
          b.tableQuery(rate(server, by='service_name, http_request_method, http_route')),
          b.tableQuery(ratio(server, '5..', 'service_name, http_request_method, http_route')),
          b.tableQuery(quantile('0.95', server, 'service_name, http_request_method, http_route')),
        ],
        description='One line per service, method and route (http.route: patterns, or the heuristic that turns ids into *).',
        renames={ 'Value #A': 'req/s', 'Value #B': 'error ratio', 'Value #C': 'p95 (s)' },
      ),
      b.timeseries('Request rate by route', [b.query(rate(server, by='service_name, http_route'), '{{service_name}} {{http_route}}')], 'reqps', w=12),
      b.timeseries('p95 latency by route', [b.query(quantile('0.95', server, 'service_name, http_route'), '{{service_name}} {{http_route}}', exemplar=true)], 's', w=12),

      b.row('Clients (outgoing HTTP calls)'),
      b.timeseries('Request rate', [b.query(rate(client, by='service_name'), '{{service_name}}')], 'reqps'),
      b.timeseries('Error ratio (4xx and 5xx)', [b.query(ratio(client, '[45]..', 'service_name'), '{{service_name}}')], 'percentunit'),
      b.timeseries('p95 latency', [b.query(quantile('0.95', client, 'service_name'), '{{service_name}}', exemplar=true)], 's'),

      b.row('Service graph and traces'),
      b.nodeGraph('Service graph', [b.serviceMap()], description="Tempo's metrics-generator: calls between services, from traces."),
      b.traces('Recent error traces', [b.traceql('{ status = error && resource.service.name =~ "$service" }')]),
    ],
    [
      b.variable('namespace', 'Namespace', 'label_values(%s_count, k8s_namespace_name)' % server),
      b.variable('service', 'Service', 'label_values(%s_count{k8s_namespace_name=~"$namespace"}, service_name)' % server),
    ],
    ['http', 'red'],
  )
