// The collector: Grafana Alloy on every node. It ships the logs of the node's pods to Loki
// (read through the API server: no hostPath, no root) and scrapes the mop agent of its node
// for the agent's self-metrics, which it remote-writes to Mimir.
local k = import 'k.libsonnet';

{
  local cfg = $._config.collector,
  local agent = $._config.agent,
  local ns = cfg.namespace,
  local labels = k.labels(cfg.name, 'collector'),
  local selector = k.selector(cfg.name),
  local url(c, path) = 'http://%s:%d%s' % [c.host, c.ports.http, path],

  local copyLabels = |||
    rule {
      source_labels = ["__meta_kubernetes_namespace"]
      target_label  = "namespace"
    }
    rule {
      source_labels = ["__meta_kubernetes_pod_name"]
      target_label  = "pod"
    }
    rule {
      source_labels = ["__meta_kubernetes_pod_container_name"]
      target_label  = "container"
    }
    rule {
      source_labels = ["__meta_kubernetes_pod_node_name"]
      target_label  = "node"
    }
  |||,

  local configText = |||
    // Rendered from deploy/lib/collector.libsonnet.
    logging {
      level  = "info"
      format = "logfmt"
    }

    // The pods of this node only: every collector handles its own node.
    discovery.kubernetes "pods" {
      role = "pod"
      selectors {
        role  = "pod"
        field = "spec.nodeName=" + sys.env("NODE_NAME")
      }
    }

    // Logs: every container of the node's pods, labelled namespace/pod/container/node/app.
    discovery.relabel "pod_logs" {
      targets = discovery.kubernetes.pods.targets
    %(copyLabels)s
      rule {
        source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
        target_label  = "app"
      }
    }

    loki.source.kubernetes "pods" {
      targets    = discovery.relabel.pod_logs.output
      forward_to = [loki.write.loki.receiver]
    }

    loki.write "loki" {
      endpoint {
        url = "%(lokiPush)s"
      }
    }

    // Self-metrics of the mop agent on this node.
    discovery.relabel "mop_agent" {
      targets = discovery.kubernetes.pods.targets
      rule {
        source_labels = ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_container_port_name"]
        regex         = "%(agentNamespace)s;%(agentName)s;metrics"
        action        = "keep"
      }
    %(copyLabels)s
    }

    prometheus.scrape "mop_agent" {
      targets         = discovery.relabel.mop_agent.output
      job_name        = "%(agentName)s"
      scrape_interval = "%(scrapeInterval)s"
      metrics_path    = "/metrics"
      forward_to      = [prometheus.relabel.mop_only.receiver]
    }

    // Only the agent's own series (mop_*, its process_* CPU and memory) and up: its RED
    // metrics already reach Mimir over OTLP, and scraping them as well would count every
    // request twice.
    prometheus.relabel "mop_only" {
      rule {
        source_labels = ["__name__"]
        regex         = "mop_.+|process_.+|up"
        action        = "keep"
      }
      forward_to = [prometheus.remote_write.mimir.receiver]
    }

    prometheus.remote_write "mimir" {
      endpoint {
        url = "%(mimirPush)s"
      }
    }
  ||| % {
    copyLabels: std.join('\n', ['  ' + l for l in std.split(std.rstripChars(copyLabels, '\n'), '\n')]),
    lokiPush: url($._config.loki, '/loki/api/v1/push'),
    mimirPush: url($._config.mimir, '/api/v1/push'),
    agentNamespace: $._config.namespaces.agent,
    agentName: agent.name,
    scrapeInterval: cfg.scrapeInterval,
  },

  collector: if !cfg.enabled then {} else {
    serviceAccount: k.core.serviceAccount(cfg.name, ns, labels),

    // Pod discovery and log tailing through the API server. Read-only.
    clusterRole: k.rbac.clusterRole(cfg.name, [
      k.rbac.readRule('', ['pods', 'pods/log']),
    ], labels),

    clusterRoleBinding: k.rbac.clusterRoleBinding(cfg.name, self.clusterRole, self.serviceAccount, labels),

    configMap: k.core.configMap(cfg.name, ns, { 'config.alloy': configText }, labels),

    service: k.core.headlessService(cfg.name, ns, selector, [{ name: 'http', port: cfg.port }], labels),

    daemonSet: k.apps.daemonSet(
      cfg.name,
      ns,
      labels,
      selector,
      k.podTemplate(
        labels + { 'app.kubernetes.io/version': cfg.image.tag },
        { 'checksum/config': std.md5(configText) },
        {
          serviceAccountName: cfg.name,
          automountServiceAccountToken: true,
          securityContext: k.restrictedPodSecurityContext(cfg.uid),
          tolerations: cfg.tolerations,
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          containers: [
            k.container(cfg.name, k.image(cfg.image)) + {
              args: [
                'run',
                '/etc/alloy/config.alloy',
                '--storage.path=/var/lib/alloy/data',
                '--server.http.listen-addr=0.0.0.0:%d' % cfg.port,
                '--stability.level=generally-available',
              ],
              env: [k.envField('NODE_NAME', 'spec.nodeName')],
              ports: [k.port('http', cfg.port)],
              resources: k.resources(cfg.resources),
              securityContext: k.restrictedSecurityContext,
              readinessProbe: k.httpProbe('/-/ready', 'http', periodSeconds=10),
              livenessProbe: k.httpProbe('/-/ready', 'http', initialDelaySeconds=30, periodSeconds=30, failureThreshold=5),
              volumeMounts: [
                k.mount('config', '/etc/alloy', readOnly=true),
                k.mount('data', '/var/lib/alloy/data'),
                k.mount('tmp', '/tmp'),
              ],
            },
          ],
          volumes: [
            k.volumes.configMap('config', cfg.name),
            // Tail positions live for the pod only: a restarted collector may resend recent lines.
            k.volumes.emptyDir('data', '512Mi'),
            k.volumes.emptyDir('tmp', '64Mi'),
          ],
        },
      ),
      '10%',
    ),
  },
}
