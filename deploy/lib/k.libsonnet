// Small constructors for the Kubernetes objects mop needs.
//
// Plain Jsonnet: no Tanka natives, no k8s-libsonnet. Every constructor returns a complete,
// valid object that callers refine with `+`. Field names follow the Kubernetes API exactly
// so that `kubernetes-validate --strict` can check every rendered object.
{
  // Standard labels: `name` identifies the program, `component` its role in mop.
  labels(name, component):: {
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/part-of': 'mop',
    'app.kubernetes.io/managed-by': 'jsonnet',
  },

  // The subset of labels a selector may use (selectors are immutable, so no version here).
  selector(name):: {
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/part-of': 'mop',
  },

  image(img):: '%s:%s' % [img.repository, img.tag],

  core: {
    namespace(name, labels={}):: {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: name, labels: labels },
    },

    serviceAccount(name, namespace, labels={}):: {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: name, namespace: namespace, labels: labels },
      // Only pods that talk to the API server mount a token (see podSpec.automount).
      automountServiceAccountToken: false,
    },

    configMap(name, namespace, data, labels={}):: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: name, namespace: namespace, labels: labels },
      data: data,
    },

    // ports: [{ name, port, targetPort?, protocol? }]
    service(name, namespace, selector, ports, labels={}):: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: name, namespace: namespace, labels: labels },
      spec: {
        type: 'ClusterIP',
        selector: selector,
        ports: [
          {
            name: p.name,
            port: p.port,
            targetPort: std.get(p, 'targetPort', p.name),
            protocol: std.get(p, 'protocol', 'TCP'),
          }
          for p in ports
        ],
      },
    },

    // A headless Service: DNS returns every ready pod, so Prometheus-style scrapers reach
    // each pod directly instead of a random one behind a virtual IP.
    headlessService(name, namespace, selector, ports, labels={})::
      self.service(name, namespace, selector, ports, labels) + {
        spec+: { clusterIP: 'None', publishNotReadyAddresses: false },
      },
  },

  rbac: {
    // rules: [{ apiGroups, resources, verbs }]
    clusterRole(name, rules, labels={}):: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: name, labels: labels },
      rules: rules,
    },

    clusterRoleBinding(name, role, serviceAccount, labels={}):: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: name, labels: labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name },
      subjects: [{
        kind: 'ServiceAccount',
        name: serviceAccount.metadata.name,
        namespace: serviceAccount.metadata.namespace,
      }],
    },

    // A read-only rule: the only verbs mop ever grants.
    readRule(apiGroup, resources, verbs=['get', 'list', 'watch']):: {
      apiGroups: [apiGroup],
      resources: resources,
      verbs: verbs,
    },
  },

  scheduling: {
    priorityClass(name, value, description, labels={}):: {
      apiVersion: 'scheduling.k8s.io/v1',
      kind: 'PriorityClass',
      metadata: { name: name, labels: labels },
      value: value,
      globalDefault: false,
      preemptionPolicy: 'PreemptLowerPriority',
      description: description,
    },
  },

  policy: {
    podDisruptionBudget(name, namespace, selector, maxUnavailable, labels={}):: {
      apiVersion: 'policy/v1',
      kind: 'PodDisruptionBudget',
      metadata: { name: name, namespace: namespace, labels: labels },
      spec: {
        maxUnavailable: maxUnavailable,
        selector: { matchLabels: selector },
      },
    },
  },

  // Containers and the pieces they are made of.
  container(name, image):: {
    name: name,
    image: image,
    imagePullPolicy: 'IfNotPresent',
  },

  port(name, containerPort, protocol='TCP'):: {
    name: name,
    containerPort: containerPort,
    protocol: protocol,
  },

  env(name, value):: { name: name, value: value },
  envField(name, fieldPath):: { name: name, valueFrom: { fieldRef: { fieldPath: fieldPath } } },
  envSecret(name, secret, key, optional=true):: {
    name: name,
    valueFrom: { secretKeyRef: { name: secret, key: key, optional: optional } },
  },

  mount(name, mountPath, readOnly=false):: {
    name: name,
    mountPath: mountPath,
    readOnly: readOnly,
  },

  httpProbe(path, port, initialDelaySeconds=0, periodSeconds=10, failureThreshold=3, timeoutSeconds=2):: {
    httpGet: { path: path, port: port, scheme: 'HTTP' },
    initialDelaySeconds: initialDelaySeconds,
    periodSeconds: periodSeconds,
    failureThreshold: failureThreshold,
    timeoutSeconds: timeoutSeconds,
  },

  resources(r):: {
    requests: r.requests,
    limits: r.limits,
  },

  // The Pod Security Standard "restricted" profile for a container: what every container of
  // the Grafana stack runs with. The agent has its own, justified, context.
  restrictedSecurityContext:: {
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  },

  restrictedPodSecurityContext(uid, gid=uid):: {
    runAsNonRoot: true,
    runAsUser: uid,
    runAsGroup: gid,
    fsGroup: gid,
    fsGroupChangePolicy: 'OnRootMismatch',
    seccompProfile: { type: 'RuntimeDefault' },
  },

  volumes: {
    configMap(name, configMap, mode=292):: {  // 292 = 0444
      name: name,
      configMap: { name: configMap, defaultMode: mode },
    },
    emptyDir(name, sizeLimit, medium=null):: {
      name: name,
      emptyDir: { sizeLimit: sizeLimit } + (if medium == null then {} else { medium: medium }),
    },
    hostPath(name, path, type='Directory'):: {
      name: name,
      hostPath: { path: path, type: type },
    },
    // Several ConfigMaps merged into one directory.
    projectedConfigMaps(name, configMaps, mode=292):: {
      name: name,
      projected: {
        defaultMode: mode,
        sources: [{ configMap: { name: c } } for c in configMaps],
      },
    },
  },

  // A PersistentVolumeClaim template for StatefulSets. A null storage class keeps the field
  // out, so the cluster's default StorageClass is used.
  pvcTemplate(name, storage, labels={}):: {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: name, labels: labels },
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: storage.size } },
    } + (if storage.class == null then {} else { storageClassName: storage.class }),
  },

  podTemplate(labels, annotations, spec):: {
    metadata: { labels: labels, annotations: annotations },
    spec: {
      automountServiceAccountToken: false,
      enableServiceLinks: false,
    } + spec,
  },

  apps: {
    statefulSet(name, namespace, labels, selector, replicas, serviceName, template, claims):: {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: { name: name, namespace: namespace, labels: labels },
      spec: {
        replicas: replicas,
        serviceName: serviceName,
        selector: { matchLabels: selector },
        podManagementPolicy: 'OrderedReady',
        updateStrategy: { type: 'RollingUpdate' },
        persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
        template: template,
        volumeClaimTemplates: claims,
      },
    },

    daemonSet(name, namespace, labels, selector, template, maxUnavailable):: {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: name, namespace: namespace, labels: labels },
      spec: {
        selector: { matchLabels: selector },
        updateStrategy: {
          type: 'RollingUpdate',
          rollingUpdate: { maxUnavailable: maxUnavailable },
        },
        template: template,
      },
    },
  },
}
