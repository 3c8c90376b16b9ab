// The mop agent: a DaemonSet that watches HTTP and gRPC traffic of the node's processes from
// the kernel and exports spans to Tempo and RED metrics to Mimir (OTLP), plus its own
// Prometheus endpoint.
local k = import 'k.libsonnet';

{
  agent: {
    local cfg = $._config.agent,
    local ns = $._config.namespaces.agent,
    local labels = k.labels(cfg.name, 'agent'),
    local selector = k.selector(cfg.name),
    local configFile = 'config.yaml',
    local configText =
      '# mop-agent configuration (OBI v1 YAML), rendered from deploy/lib/config.libsonnet.\n'
      + std.manifestYamlDoc(cfg.config, indent_array_in_object=true, quote_keys=false)
      + '\n',

    priorityClass: k.scheduling.priorityClass(
      cfg.priorityClass.name,
      cfg.priorityClass.value,
      'mop node agents: scheduled ahead of ordinary workloads so that every node stays observed.',
      labels,
    ),

    serviceAccount: k.core.serviceAccount(cfg.name, ns, labels),

    // Kubernetes metadata for spans and metrics: the agent watches the pods of its own node
    // and resolves their owners. Read-only: get, list and watch, nothing else.
    clusterRole: k.rbac.clusterRole(cfg.name, [
      k.rbac.readRule('', ['pods']),
      k.rbac.readRule('', ['nodes'], ['get']),
      k.rbac.readRule('apps', ['replicasets', 'deployments', 'statefulsets', 'daemonsets']),
      k.rbac.readRule('batch', ['jobs', 'cronjobs']),
    ], labels),

    clusterRoleBinding: k.rbac.clusterRoleBinding(cfg.name, self.clusterRole, self.serviceAccount, labels),

    configMap: k.core.configMap(cfg.name, ns, { [configFile]: configText }, labels),

    // Headless, so that a scraper reaches every agent pod rather than one behind a VIP.
    service: k.core.headlessService(cfg.name, ns, selector, [
      { name: 'metrics', port: cfg.port },
    ], labels) + {
      metadata+: {
        annotations: {
          'prometheus.io/scrape': 'true',
          'prometheus.io/port': std.toString(cfg.port),
          'prometheus.io/path': '/metrics',
        },
      },
    },

    podDisruptionBudget: k.policy.podDisruptionBudget(cfg.name, ns, selector, cfg.maxUnavailable, labels),

    local container = k.container(cfg.name, k.image(cfg.image)) + {
      args: ['--config', '/etc/mop/%s' % configFile],
      env: [
        // The node-local pod watch filters on this node.
        k.envField('KUBE_NODE_NAME', 'spec.nodeName'),
        k.env('OTEL_EBPF_KUBE_METADATA_ENABLE', 'true'),
        k.env('OTEL_EBPF_LOG_LEVEL', cfg.logLevel),
      ],
      ports: [k.port('metrics', cfg.port)],
      resources: k.resources(cfg.resources),
      // Loading and attaching every probe can take a while on a busy node.
      startupProbe: k.httpProbe('/healthz', 'metrics', periodSeconds=2, failureThreshold=60),
      livenessProbe: k.httpProbe('/healthz', 'metrics', periodSeconds=10, failureThreshold=3),
      // Ready once every probe is attached and the first discovery pass is done.
      readinessProbe: k.httpProbe('/readyz', 'metrics', periodSeconds=5, failureThreshold=3),
      volumeMounts: [
        k.mount('config', '/etc/mop', readOnly=true),
        // cgroup v2 root: sock_ops and cgroup_skb programs attach here. Read-only: attaching
        // a program to a cgroup writes nothing to cgroupfs.
        k.mount('cgroup', '/sys/fs/cgroup', readOnly=true),
        // tracefs: tracepoint ids (events/*/id) for perf_event_open(2). Read-only.
        k.mount('tracefs', '/sys/kernel/tracing', readOnly=true),
        k.mount('tmp', '/tmp'),
      ],
      securityContext: {
        privileged: false,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        // Capabilities listed in securityContext reach the effective set of uid 0 only:
        // Kubernetes grants no ambient capabilities to other users.
        runAsUser: 0,
        runAsGroup: 0,
        runAsNonRoot: false,
        capabilities: {
          drop: ['ALL'],
          add: [
            // BPF: bpf(2) itself. Creating the ring buffer, LRU hash and per-CPU maps,
            // loading BTF and programs all fail with EPERM without it.
            'BPF',
            // PERFMON: raw_tracepoint, tracepoint, kprobe/uprobe and fentry programs are
            // "perfmon" program types that the kernel refuses to load without it; attaching
            // tracepoints and uprobes through perf_event_open(2) needs it too, and so do the
            // bpf_probe_read_* helpers and pointer arithmetic that copy request bytes.
            'PERFMON',
            // NET_ADMIN: sock_ops programs (socket cookies, trace-context propagation) are
            // "net admin" program types: loading them and attaching them to the cgroup v2 root
            // need it. The agent changes no interface, route or firewall rule.
            'NET_ADMIN',
            // SYS_PTRACE: /proc/PID/{exe,environ,fd,root,maps} pass the kernel's
            // ptrace_may_access() check only for targets of the same uid whose capabilities
            // are a subset of ours; every other process (other users, root daemons) needs it.
            // The agent never calls ptrace(2).
            'SYS_PTRACE',
            // DAC_READ_SEARCH: with ALL dropped, uid 0 is bound by file modes. /proc/PID/fd
            // (0500) and /proc/PID/environ (0400) belong to the target's uid, and an
            // executable or libssl under /proc/PID/root may sit in a directory others cannot
            // search. Read and search only: unlike DAC_OVERRIDE it grants no write.
            'DAC_READ_SEARCH',
          ] + (
            // SYS_RESOURCE: kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which only
            // this capability raises. 5.11+ charges the memory cgroup instead.
            if cfg.kernelBefore511 then ['SYS_RESOURCE'] else []
          ),
          // Not granted: SYS_ADMIN (never); CHECKPOINT_RESTORE (only /proc/PID/map_files needs
          // it, the agent reads /proc/PID/maps); NET_RAW (no AF_PACKET socket filters).
        },
        seccompProfile: cfg.seccompProfile,
        appArmorProfile: cfg.appArmorProfile,
      },
    },

    daemonSet: k.apps.daemonSet(
      cfg.name,
      ns,
      labels,
      selector,
      k.podTemplate(
        labels + { 'app.kubernetes.io/version': cfg.image.tag },
        {
          'checksum/config': std.md5(configText),
          'prometheus.io/scrape': 'true',
          'prometheus.io/port': std.toString(cfg.port),
        },
        {
          serviceAccountName: cfg.name,
          // The pod watch talks to the API server.
          automountServiceAccountToken: true,
          // Other processes are found through the host's /proc.
          hostPID: true,
          priorityClassName: cfg.priorityClass.name,
          nodeSelector: cfg.nodeSelector,
          tolerations: cfg.tolerations,
          // SIGTERM flushes queued spans (shutdown_timeout, 10 s by default) and detaches.
          terminationGracePeriodSeconds: 30,
          containers: [container],
          volumes: [
            k.volumes.configMap('config', cfg.name),
            k.volumes.hostPath('cgroup', cfg.hostPaths.cgroup),
            k.volumes.hostPath('tracefs', cfg.hostPaths.tracefs),
            k.volumes.emptyDir('tmp', '16Mi', 'Memory'),
          ],
        },
      ),
      cfg.maxUnavailable,
    ),
  },
}
