// The agents' own health, from their /metrics endpoints (scraped by the collector): kernel
// events read and lost, parse errors, spans produced, exported and dropped, export errors,
// probes attached and what each node captures through.
local builder = import 'builder.libsonnet';

function(ds)
  local b = builder.new(ds);
  local sel = 'node=~"$node"';
  local m(name, extra='') = '%s{%s%s}' % [name, sel, extra];
  local rate(name, by) = 'sum by (%s) (rate(%s[$__rate_interval]))' % [by, m(name)];

  b.dashboard(
    'mop-agent',
    'mop / agent health',
    'Is every node observed, and is anything lost on the way? Events lost in the kernel, export errors, probes attached.',
    [
      b.row('Fleet'),
      b.stat('Agents reporting', [b.query('count(%s)' % m('mop_build_info'))]),
      b.stat('Events lost (1h)', [b.query('sum(increase(%s[1h]))' % m('mop_events_lost_total'))], thresholds={
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }],
      }, description='Kernel ring buffer full: events dropped before userspace saw them.'),
      b.stat('Export errors (1h)', [b.query('sum(increase(%s[1h]))' % m('mop_export_errors_total'))], thresholds={
        mode: 'absolute',
        steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }],
      }),
      b.stat('Probes attached', [b.query('sum(%s)' % m('mop_probes_attached'))]),
      b.table(
        'Agents',
        [
          b.tableQuery('max by (node, pod, version) (%s)' % m('mop_build_info')),
          b.tableQuery('max by (node, pod, path) (%s)' % m('mop_capture_path_info')),
          b.tableQuery('max by (node, pod) (%s)' % m('mop_probes_attached')),
          b.tableQuery('max by (node, pod) (%s)' % m('mop_instrumented_processes')),
        ],
        description='One line per agent: version, capture path chosen at start-up, probes attached, processes instrumented.',
        renames={ 'Value #C': 'probes attached', 'Value #D': 'instrumented processes' },
        // Info metrics: the labels are the information, the value is always 1.
        hide=['Value #A', 'Value #B'],
      ),

      b.row('Kernel events'),
      b.timeseries('Events read/s', [b.query(rate('mop_events_read_total', 'node'), '{{node}}')], 'ops'),
      b.timeseries('Events lost/s', [b.query(rate('mop_events_lost_total', 'node'), '{{node}}')], 'ops'),
      b.timeseries('Loss ratio', [b.query(
        '%s / (%s + %s)' % [rate('mop_events_lost_total', 'node'), rate('mop_events_read_total', 'node'), rate('mop_events_lost_total', 'node')],
        '{{node}}',
      )], 'percentunit'),
      b.timeseries('Parse errors/s by protocol', [b.query(rate('mop_parse_errors_total', 'protocol'), '{{protocol}}')], 'ops'),
      b.timeseries('Instrumented processes', [b.query('sum by (node) (%s)' % m('mop_instrumented_processes'), '{{node}}')]),
      b.timeseries('Probes attached', [b.query('sum by (node) (%s)' % m('mop_probes_attached'), '{{node}}')]),

      b.row('Spans and export'),
      b.timeseries('Spans/s', [
        b.query('sum(rate(%s[$__rate_interval]))' % m('mop_spans_produced_total'), 'produced'),
        b.query(rate('mop_spans_exported_total', 'exporter'), 'exported {{exporter}}'),
      ], 'ops'),
      b.timeseries('Spans dropped/s by reason', [b.query(rate('mop_spans_dropped_total', 'reason'), '{{reason}}')], 'ops'),
      b.timeseries('Export errors/s', [b.query(rate('mop_export_errors_total', 'exporter, signal'), '{{exporter}} {{signal}}')], 'ops'),
      b.timeseries('Export duration p95', [b.query(
        'histogram_quantile(0.95, sum by (le, exporter) (rate(%s[$__rate_interval])))' % m('mop_export_duration_seconds_bucket'),
        '{{exporter}}',
      )], 's'),
      b.timeseries('Export queue length', [b.query('max by (exporter, node) (%s)' % m('mop_export_queue_length'), '{{exporter}} {{node}}')]),

      b.row('Logs'),
      b.logs('Agent logs', [b.logQuery('{namespace="%s", container="%s"}' % [ds.agentNamespace, ds.agentContainer])]),
    ],
    [
      b.variable('node', 'Node', 'label_values(mop_build_info, node)'),
    ],
    ['agent'],
  )
