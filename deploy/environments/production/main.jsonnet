// An example of a production environment: a named StorageClass and bigger volumes, longer
// retention, more resources, only selected namespaces instrumented, no anonymous Grafana
// access, and agents kept off the control plane.
(import 'mop.libsonnet') + {
  _config+:: {
    storageClass: 'fast-ssd',

    agent+: {
      resources: {
        requests: { cpu: '200m', memory: '256Mi' },
        limits: { cpu: '2', memory: '1Gi' },
      },
      tolerations: [
        { key: 'dedicated', operator: 'Exists', effect: 'NoSchedule' },
      ],
      config+: {
        discovery: {
          instrument: [
            { k8s_namespace: 'shop' },
            { k8s_namespace: 'payments' },
          ],
          exclude_instrument: [
            { k8s_namespace: 'mop-*' },
          ],
        },
        // Metrics every 30 s instead of 15 s halves the push traffic.
        otel_metrics_export+: { interval: '30s' },
      },
    },

    tempo+: {
      storage+: { size: '100Gi' },
      retention: '720h',
      resources: {
        requests: { cpu: '1', memory: '2Gi' },
        limits: { memory: '8Gi' },
      },
    },

    mimir+: {
      storage+: { size: '200Gi' },
      retention: '90d',
      resources: {
        requests: { cpu: '1', memory: '4Gi' },
        limits: { memory: '16Gi' },
      },
    },

    loki+: {
      storage+: { size: '100Gi' },
      retention: '720h',
    },

    grafana+: {
      anonymousViewer: false,
      storage+: { size: '5Gi' },
    },
  },
}
