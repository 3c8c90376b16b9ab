// The whole stack: infrastructure, the mop agent and the Grafana stack it reports to.
//
// Each visible field is one component and renders to deploy/manifests/<env>/<field>.yaml.
// Override configuration with `(import 'mop.libsonnet') + { _config+:: { ... } }`.
(import 'config.libsonnet')
+ (import 'namespaces.libsonnet')
+ (import 'agent.libsonnet')
+ (import 'tempo.libsonnet')
+ (import 'mimir.libsonnet')
+ (import 'loki.libsonnet')
+ (import 'grafana.libsonnet')
+ (import 'collector.libsonnet')
