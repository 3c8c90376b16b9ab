// The shape shared by Tempo, Mimir, Loki and Grafana: one program in a StatefulSet with its
// configuration in a ConfigMap, its data on a PersistentVolumeClaim, a Service for clients
// and a headless Service for the StatefulSet's pod DNS names.
local k = import 'k.libsonnet';

{
  // cfg: the component's _config (name, image, replicas, ports, storage, resources, uid).
  // files: ConfigMap data (file name -> text), mounted read-only at configDir.
  // container: fields merged into the container (args, env, probes, extra mounts).
  new(cfg, namespace, component, files, configDir, dataDir, container, extraVolumes=[], configMapName=cfg.name):: {
    local labels = k.labels(cfg.name, component),
    local selector = k.selector(cfg.name),
    local ports = [{ name: name, port: cfg.ports[name] } for name in std.objectFields(cfg.ports)],

    assert cfg.replicas == 0 || cfg.replicas == 1 :
           '%s: monolithic mode with local storage runs one replica (got %d)' % [cfg.name, cfg.replicas],

    serviceAccount: k.core.serviceAccount(cfg.name, namespace, labels),

    configMap: k.core.configMap(configMapName, namespace, files, labels),

    service: k.core.service(cfg.name, namespace, selector, ports, labels),

    headlessService: k.core.headlessService(cfg.name + '-headless', namespace, selector, ports, labels),

    statefulSet: k.apps.statefulSet(
      cfg.name,
      namespace,
      labels,
      selector,
      cfg.replicas,
      cfg.name + '-headless',
      k.podTemplate(
        labels + { 'app.kubernetes.io/version': cfg.image.tag },
        { 'checksum/config': std.md5(std.manifestJsonMinified(files)) },
        {
          serviceAccountName: cfg.name,
          securityContext: k.restrictedPodSecurityContext(cfg.uid),
          terminationGracePeriodSeconds: 60,
          containers: [
            k.container(cfg.name, k.image(cfg.image)) + {
              ports: [k.port(p.name, p.port) for p in ports],
              resources: k.resources(cfg.resources),
              securityContext: k.restrictedSecurityContext,
              volumeMounts: [
                k.mount('config', configDir, readOnly=true),
                k.mount('data', dataDir),
                k.mount('tmp', '/tmp'),
              ],
            } + container,
          ],
          volumes: [
            k.volumes.configMap('config', configMapName),
            k.volumes.emptyDir('tmp', '256Mi'),
          ] + extraVolumes,
        },
      ),
      [k.pvcTemplate('data', cfg.storage, labels)],
    ),
  },
}
