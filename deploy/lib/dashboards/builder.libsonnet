// A tiny dashboard builder: enough of Grafana's JSON model for mop's dashboards, with no
// dependency on grafonnet. Panels are laid out left to right on the 24-column grid; a row
// starts a new line.
{
  // ds: { metrics, traces, logs } data source uids.
  new(ds):: {
    local prom = { type: 'prometheus', uid: ds.metrics },
    local tempo = { type: 'tempo', uid: ds.traces },
    local loki = { type: 'loki', uid: ds.logs },

    local withRefIds(targets) = [
      targets[i] { refId: std.char(std.codepoint('A') + i) }
      for i in std.range(0, std.length(targets) - 1)
    ],

    query(expr, legend='__auto', instant=false, exemplar=false):: {
      datasource: prom,
      expr: expr,
      legendFormat: legend,
      range: !instant,
      instant: instant,
      exemplar: exemplar,
    },

    tableQuery(expr):: self.query(expr, '', instant=true) + { format: 'table' },

    traceql(query, limit=20):: {
      datasource: tempo,
      queryType: 'traceql',
      query: query,
      limit: limit,
      tableType: 'traces',
    },

    serviceMap(query=''):: {
      datasource: tempo,
      queryType: 'serviceMap',
      serviceMapQuery: query,
    },

    logQuery(expr):: {
      datasource: loki,
      expr: expr,
      queryType: 'range',
    },

    local panel(type, title, w, h, targets, description) = {
      type: type,
      title: title,
      description: description,
      gridPos: { w: w, h: h },
      targets: withRefIds(targets),
    },

    row(title):: {
      type: 'row',
      title: title,
      collapsed: false,
      gridPos: { w: 24, h: 1 },
      panels: [],
    },

    timeseries(title, targets, unit='short', w=8, h=8, description='', stack=false):: panel('timeseries', title, w, h, targets, description) + {
      datasource: targets[0].datasource,
      fieldConfig: {
        defaults: {
          unit: unit,
          min: 0,
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: if stack then 30 else 10,
            showPoints: 'never',
            stacking: { mode: if stack then 'normal' else 'none', group: 'A' },
          },
        },
        overrides: [],
      },
      options: {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

    stat(title, targets, unit='short', w=6, h=4, description='', thresholds=null):: panel('stat', title, w, h, targets, description) + {
      datasource: targets[0].datasource,
      fieldConfig: {
        defaults: {
          unit: unit,
          thresholds: if thresholds == null then {
            mode: 'absolute',
            steps: [{ color: 'green', value: null }],
          } else thresholds,
        },
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'value',
        graphMode: 'area',
        justifyMode: 'auto',
        textMode: 'auto',
      },
    },

    // Instant queries merged into one row per label set.
    table(title, targets, w=24, h=8, description='', renames={}, hide=[]):: panel('table', title, w, h, targets, description) + {
      datasource: targets[0].datasource,
      fieldConfig: { defaults: {}, overrides: [] },
      options: { showHeader: true, cellHeight: 'sm' },
      transformations: [
        { id: 'merge', options: {} },
        { id: 'organize', options: { excludeByName: { Time: true } + { [f]: true for f in hide }, renameByName: renames } },
      ],
    },

    traces(title, targets, w=24, h=8, description=''):: panel('table', title, w, h, targets, description) + {
      datasource: tempo,
      fieldConfig: { defaults: {}, overrides: [] },
      options: { showHeader: true, cellHeight: 'sm' },
    },

    nodeGraph(title, targets, w=24, h=12, description=''):: panel('nodeGraph', title, w, h, targets, description) + {
      datasource: tempo,
      options: {},
    },

    logs(title, targets, w=24, h=10, description=''):: panel('logs', title, w, h, targets, description) + {
      datasource: loki,
      options: {
        showTime: true,
        wrapLogMessage: true,
        sortOrder: 'Descending',
        enableLogDetails: true,
        dedupStrategy: 'none',
      },
    },

    // A query variable over label values of the metrics data source.
    variable(name, label, query, multi=true):: {
      name: name,
      label: label,
      type: 'query',
      datasource: prom,
      definition: query,
      query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
      refresh: 2,
      includeAll: multi,
      multi: multi,
      allValue: '.*',
      current: { selected: true, text: ['All'], value: ['$__all'] },
      sort: 1,
      hide: 0,
      options: [],
    },

    // Place panels on the grid and number them.
    local layout(panels) = std.foldl(
      function(acc, p)
        local w = p.gridPos.w;
        local h = p.gridPos.h;
        local newLine = p.type == 'row' || acc.x + w > 24;
        local y = if newLine then acc.y + acc.lineHeight else acc.y;
        local x = if newLine then 0 else acc.x;
        {
          x: x + w,
          y: y,
          lineHeight: if newLine then h else std.max(acc.lineHeight, h),
          id: acc.id + 1,
          panels: acc.panels + [p { id: acc.id, gridPos: { x: x, y: y, w: w, h: h } }],
        },
      panels,
      { x: 0, y: 0, lineHeight: 0, id: 1, panels: [] },
    ).panels,

    dashboard(uid, title, description, panels, variables=[], tags=[]):: {
      uid: uid,
      title: title,
      description: description,
      tags: ['mop'] + tags,
      editable: false,
      graphTooltip: 1,
      refresh: '30s',
      schemaVersion: 41,
      version: 1,
      timezone: 'browser',
      time: { from: 'now-1h', to: 'now' },
      timepicker: {},
      fiscalYearStartMonth: 0,
      liveNow: false,
      annotations: { list: [] },
      links: [{
        type: 'dashboards',
        title: 'mop dashboards',
        tags: ['mop'],
        asDropdown: true,
        includeVars: true,
        keepTime: true,
      }],
      templating: { list: variables },
      panels: layout(panels),
    },
  },
}
