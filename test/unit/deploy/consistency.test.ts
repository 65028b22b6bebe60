import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIni } from '../../../src/cloud-files.js';
import { loadConfig, SERVE_OPTIONS } from '../../../src/config.js';
import { createLogger } from '../../../src/log.js';
import { CREDENTIAL_KEYS } from '../../../src/openstack/credentials.js';
import { DRIVER_NAME, TOPOLOGY_ZONE_KEY, VERSION } from '../../../src/package-info.js';
import { startDriver, type RunningDriver } from '../../../src/serve.js';
import { serveMapperHost } from '../../../src/node/mappers/mapper-host.js';
import { KATA_BIN_DIRS } from '../../../src/node/kata/direct-volume.js';
import { csiClient } from '../../helpers/csi-client.js';
import {
  container,
  envValue,
  find,
  flag,
  loadManifests,
  onVolume,
  only,
  podSpec,
  renderKustomize,
  yamlFiles,
  type Container,
  type LoadedManifest,
  type Manifest,
  type PodSpec,
} from '../../helpers/manifests.js';

// Names and paths that must agree across the manifests, the secret templates and the driver's own
// code: a mismatch here is a driver that installs cleanly and then never gets a call.

let base: LoadedManifest[];
let secretTemplates: LoadedManifest[];
let controller: PodSpec;
let node: PodSpec;
let controllerDriver: Container;
let nodeDriver: Container;
beforeAll(async () => {
  base = await renderKustomize('deploy/kubernetes');
  secretTemplates = loadManifests(yamlFiles('deploy/kubernetes/secrets'));
  controller = podSpec(only(base, 'Deployment', 'stackube-csi-controller'));
  node = podSpec(only(base, 'DaemonSet', 'stackube-csi-node'));
  controllerDriver = container(controller, 'stackube-csi');
  nodeDriver = container(node, 'stackube-csi');
});

const ENV_TWINS = new Set<string>(Object.values(SERVE_OPTIONS).flatMap((o) => ('env' in o ? [o.env] : [])));
const FLAGS = new Set<string>(Object.values(SERVE_OPTIONS).map((o) => o.flag));
const unixPath = (endpoint: string | undefined) => {
  expect(endpoint).toMatch(/^unix:\/\/\//);
  return endpoint!.slice('unix://'.length);
};
const seconds = (d: string | undefined) => {
  const m = /^(\d+)(s|m)$/.exec(d ?? '');
  if (!m) throw new Error(`not a duration in s or m: ${d}`);
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1);
};
const portOf = (address: string | undefined) => Number(address?.slice(address.lastIndexOf(':') + 1));
const containerPort = (c: Container, name: string) => c.ports?.find((p) => p.name === name)?.containerPort;
const stringData = (name: string) => only(secretTemplates, 'Secret', name).stringData as Record<string, string>;

describe('driver name', () => {
  test('the CSIDriver object is named DRIVER_NAME', () => {
    expect(find(base, 'CSIDriver').map((d) => d.metadata.name)).toEqual([DRIVER_NAME]);
  });

  test('the driver answers GetPluginInfo with that name when started with the node DaemonSet environment', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'deploy-node-'));
    const env: NodeJS.ProcessEnv = {};
    for (const e of nodeDriver.env ?? [])
      env[e.name] =
        e.value ??
        (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName'
          ? 'node-a'
          : e.valueFrom?.resourceFieldRef
            ? '2048'
            : undefined);
    // Paths of the host that this machine lacks move to a temporary directory; the rest is the manifest's.
    Object.assign(env, {
      CSI_ENDPOINT: `unix://${dir}/csi.sock`,
      KUBELET_ROOT: dir,
      CSI_STATE_DIR: dir,
      METRICS_ADDRESS: '127.0.0.1:0',
      MAPPER_HOST_SOCKET: `${dir}/mapper.sock`,
    });
    // the mapper container's server, as the pod runs it beside the plugin
    const mapperHost = await serveMapperHost(env.MAPPER_HOST_SOCKET!, createLogger('silent'));
    let driver: RunningDriver | undefined;
    const csi = csiClient(env.CSI_ENDPOINT!);
    try {
      driver = await startDriver(await loadConfig({}, env), createLogger('silent'));
      expect(await csi.Identity.GetPluginInfo({})).toMatchObject({ name: DRIVER_NAME });
      const info = await csi.Node.NodeGetInfo({});
      expect(info.node_id).toBe('node-a');
      expect(Object.keys(info.accessible_topology.segments)).toEqual([TOPOLOGY_ZONE_KEY]);
    } finally {
      csi.close();
      await driver?.stop(1000);
      mapperHost.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the driver containers set only what the driver reads', () => {
  test.each(['controller', 'node'])(
    '%s: env vars are SERVE_OPTIONS twins, args are `serve` and SERVE_OPTIONS flags',
    (which) => {
      const c = which === 'controller' ? controllerDriver : nodeDriver;
      expect((c.env ?? []).map((e) => e.name).filter((n) => !ENV_TWINS.has(n))).toEqual([]);
      const [command, ...flags] = c.args ?? [];
      expect(command).toBe('serve');
      expect(flags.map((f) => /^--([a-z-]+)/.exec(f)?.[1]).filter((f) => !f || !FLAGS.has(f))).toEqual([]);
      expect(envValue(c, 'CSI_MODE')).toBe(which);
    },
  );

  test('NODE_ID comes from the downward API: the Kubernetes node name', () => {
    expect(nodeDriver.env?.find((e) => e.name === 'NODE_ID')?.valueFrom).toEqual({
      fieldRef: { fieldPath: 'spec.nodeName' },
    });
  });

  test('the controller environment plus the cloud-config template make a valid configuration', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'deploy-ctl-'));
    try {
      const confPath = envValue(controllerDriver, 'CSI_CONFIG')!;
      // The Secret mounted where CSI_CONFIG points holds the key it names.
      const mount = onVolume(controller, controllerDriver, confPath);
      const secretName = controller.volumes?.find((v) => v.name === mount.volume)?.secret?.secretName;
      expect(secretName).toBe('stackube-csi-config');
      const conf = stringData(secretName!)[mount.rel];
      expect(conf).toBeDefined();
      writeFileSync(join(dir, 'cloud.conf'), conf!);
      const env: NodeJS.ProcessEnv = {};
      for (const e of controllerDriver.env ?? []) env[e.name] = e.value;
      const config = await loadConfig({}, { ...env, CSI_CONFIG: join(dir, 'cloud.conf') });
      expect(config.mode).toBe('controller');
      // multi-tenant as shipped: no call acts with a credential of the operator's, and none is needed
      expect(config.allowDefaultCredential).toBe(false);
      expect(config.credential).toBeUndefined();
      expect(config.connection?.authUrl).toBe('https://keystone.example.com:5000/v3');
      expect(
        Object.keys(parseIni(conf!, 'cloud.conf').global!).filter(
          (k) => !(CREDENTIAL_KEYS as readonly string[]).includes(k),
        ),
      ).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('CEPH_KEYRING points into the keyring Secret, at the key the template defines', () => {
    const keyring = envValue(nodeDriver, 'CEPH_KEYRING')!;
    const mount = onVolume(node, nodeDriver, keyring);
    const vol = node.volumes?.find((v) => v.name === mount.volume);
    expect(vol?.secret).toEqual({ secretName: 'stackube-csi-ceph-keyring', optional: true });
    expect(Object.keys(stringData('stackube-csi-ceph-keyring'))).toEqual([mount.rel]);
  });
});

describe('sockets and host paths', () => {
  test('node: the driver socket, the sidecars’ --csi-address and kubelet’s registration path are one file', () => {
    const kubeletRoot = envValue(nodeDriver, 'KUBELET_ROOT')!;
    const sock = onVolume(node, nodeDriver, unixPath(envValue(nodeDriver, 'CSI_ENDPOINT')));
    expect(sock.hostPath).toBe(`${kubeletRoot}/plugins/${DRIVER_NAME}/csi.sock`);
    const registrar = container(node, 'node-driver-registrar');
    expect(flag(registrar, 'kubelet-registration-path')).toBe(sock.hostPath);
    for (const name of ['node-driver-registrar', 'liveness-probe']) {
      const c = container(node, name);
      expect([name, onVolume(node, c, flag(c, 'csi-address')!)]).toEqual([name, sock]);
    }
    expect(onVolume(node, registrar, '/registration').hostPath).toBe(`${kubeletRoot}/plugins_registry`);
  });

  test('controller: every sidecar dials the socket the driver listens on', () => {
    const sock = onVolume(controller, controllerDriver, unixPath(envValue(controllerDriver, 'CSI_ENDPOINT')));
    expect(controller.volumes?.find((v) => v.name === sock.volume)?.emptyDir).toBeDefined();
    const sidecars = controller.containers.filter((c) => c.name !== 'stackube-csi');
    expect(sidecars.map((c) => c.name).sort()).toEqual([
      'csi-attacher',
      'csi-provisioner',
      'csi-resizer',
      'csi-snapshotter',
      'liveness-probe',
    ]);
    for (const c of sidecars)
      expect([c.name, onVolume(controller, c, flag(c, 'csi-address')!)]).toEqual([c.name, sock]);
  });

  test.each([
    ['KUBELET_ROOT', 'Bidirectional', 'Directory'],
    ['CSI_STATE_DIR', 'Bidirectional', 'DirectoryOrCreate'],
    ['KATA_DIRECT_VOLUME_ROOT', 'None', 'DirectoryOrCreate'],
  ])('node: %s is the same path on the host, mounted with propagation %s', (env, propagation, type) => {
    const path = envValue(nodeDriver, env)!;
    const at = onVolume(node, nodeDriver, path);
    expect(at.hostPath).toBe(path);
    expect(at.rel).toBe('');
    expect(nodeDriver.volumeMounts?.find((m) => m.name === at.volume)?.mountPropagation ?? 'None').toBe(propagation);
    expect(node.volumes?.find((v) => v.name === at.volume)?.hostPath?.type).toBe(type);
  });

  test('node: the driver defaults agree with the manifest (a flag left out would not move a path)', async () => {
    const defaults = await loadConfig({ mode: 'node', nodeId: 'n' }, {});
    expect(envValue(nodeDriver, 'KUBELET_ROOT')).toBe(defaults.kubeletRoot);
    expect(envValue(nodeDriver, 'CSI_STATE_DIR')).toBe(defaults.stateDir);
    expect(envValue(nodeDriver, 'KATA_DIRECT_VOLUME_ROOT')).toBe(defaults.kataDirectVolumeRoot);
  });

  test("node: kata-deploy's tool directories and both runtimes' sandbox sockets are the host's, at the same paths", () => {
    for (const dir of KATA_BIN_DIRS) expect([dir, onVolume(node, nodeDriver, dir).hostPath]).toEqual([dir, dir]);
    expect(nodeDriver.volumeMounts?.find((m) => m.mountPath === '/opt/kata')?.readOnly).toBe(true);
    for (const dir of ['/run/kata', '/run/vc'])
      expect(onVolume(node, nodeDriver, dir)).toMatchObject({ hostPath: dir, rel: '' });
  });

  test('node: privileged, on the host network, with /dev', () => {
    expect(node.hostNetwork).toBe(true);
    expect(nodeDriver).toMatchObject({ securityContext: { privileged: true } });
    expect(onVolume(node, nodeDriver, '/dev').hostPath).toBe('/dev');
  });
});

describe('sidecar flags the driver relies on', () => {
  const sidecar = (name: string) => container(controller, name);

  test('external-provisioner: topology, extra create metadata, ext4 default, a timeout that covers waiting for `available`', () => {
    const p = sidecar('csi-provisioner');
    expect(flag(p, 'feature-gates')?.split(',')).toContain('Topology=true');
    expect(flag(p, 'extra-create-metadata')).toBe('true');
    expect(flag(p, 'default-fstype')).toBe('ext4');
    expect(seconds(flag(p, 'timeout'))).toBeGreaterThanOrEqual(60);
  });

  test('external-snapshotter: extra create metadata, and the group snapshot gate (the driver serves GroupController)', () => {
    const s = sidecar('csi-snapshotter');
    expect(flag(s, 'extra-create-metadata')).toBe('true');
    expect(flag(s, 'feature-gates')?.split(',')).toContain('CSIVolumeGroupSnapshot=true');
    expect(s.image).toMatch(/:v8\.([6-9]|\d\d)\.\d+$/); // groupsnapshot.storage.k8s.io/v1 from 8.6
    const rules = only(base, 'ClusterRole', 'stackube-csi-external-snapshotter').rules as {
      apiGroups: string[];
      resources: string[];
    }[];
    for (const r of ['volumegroupsnapshotclasses', 'volumegroupsnapshotcontents', 'volumegroupsnapshotcontents/status'])
      expect(rules.some((x) => x.apiGroups.includes('groupsnapshot.storage.k8s.io') && x.resources.includes(r))).toBe(
        true,
      );
  });

  test('external-resizer does not wait for pods to go away (Cinder extends in-use volumes)', () => {
    expect(flag(sidecar('csi-resizer'), 'handle-volume-inuse-error')).toBe('false');
  });

  test.each(['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter'])(
    '%s: leader election (2 replicas) and a timeout ≥ 60 s',
    (name) => {
      expect(only(base, 'Deployment', 'stackube-csi-controller').spec.replicas).toBe(2);
      const c = sidecar(name);
      expect(flag(c, 'leader-election')).toBe('true');
      expect(seconds(flag(c, 'timeout'))).toBeGreaterThanOrEqual(60);
      expect(c.livenessProbe?.httpGet).toEqual({ path: '/healthz/leader-election', port: c.ports?.[0]?.name });
      expect(portOf(flag(c, 'http-endpoint'))).toBe(c.ports?.[0]?.containerPort);
    },
  );
});

describe('metrics and health ports', () => {
  test.each(['controller', 'node'])(
    '%s: METRICS_ADDRESS is the declared `metrics` port; the liveness-probe port is the driver’s `healthz` probe',
    (which) => {
      const spec = which === 'controller' ? controller : node;
      const driver = container(spec, 'stackube-csi');
      expect(portOf(envValue(driver, 'METRICS_ADDRESS'))).toBe(containerPort(driver, 'metrics'));
      expect(Number(flag(container(spec, 'liveness-probe'), 'health-port'))).toBe(containerPort(driver, 'healthz'));
      expect(driver.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'healthz' });
    },
  );

  test('node: the host-network ports do not collide', () => {
    const ports = node.containers.flatMap((c) => (c.ports ?? []).map((p) => p.containerPort));
    expect(new Set(ports).size).toBe(ports.length);
  });

  test('the metrics Services target named ports their pods declare', () => {
    for (const svc of find(base, 'Service')) {
      const workload = base
        .map((m) => m.doc)
        .find(
          (d) =>
            ['Deployment', 'DaemonSet'].includes(d.kind) &&
            Object.entries(svc.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v),
        )!;
      const declared = podSpec(workload).containers.flatMap((c) => (c.ports ?? []).map((p) => p.name));
      for (const p of svc.spec.ports)
        expect([svc.metadata.name, declared.includes(p.targetPort)]).toEqual([svc.metadata.name, true]);
    }
  });
});

describe('images and resources', () => {
  const all = () => [...controller.containers, ...node.containers];

  test('sidecars are pinned kubernetes-csi releases; the driver image is this version', () => {
    for (const c of all()) {
      if (c.name === 'stackube-csi' || c.name === 'mapper')
        expect(c.image).toBe(`ghcr.io/stackube/stackube-csi:${VERSION}`);
      else
        expect([c.name, c.image]).toEqual([
          c.name,
          expect.stringMatching(/^registry\.k8s\.io\/sig-storage\/[a-z-]+:v\d+\.\d+\.\d+$/),
        ]);
    }
  });

  test('every container has CPU and memory requests and a memory limit', () => {
    for (const c of all())
      expect([c.name, c.resources]).toEqual([
        c.name,
        { requests: { cpu: expect.any(String), memory: expect.any(String) }, limits: { memory: expect.any(String) } },
      ]);
  });
});

describe('RBAC', () => {
  const rulesOf = (kind: string, name: string) =>
    only(base, kind, name).rules as {
      apiGroups: string[];
      resources: string[];
      verbs: string[];
      resourceNames?: string[];
    }[];
  const boundTo = (sa: string) =>
    [...find(base, 'ClusterRoleBinding'), ...find(base, 'RoleBinding')]
      .filter((b) =>
        b.subjects.some(
          (s: { kind: string; name: string; namespace: string }) =>
            s.kind === 'ServiceAccount' && s.name === sa && s.namespace === 'stackube-csi',
        ),
      )
      .map((b) => `${b.roleRef.kind}/${b.roleRef.name}`)
      .sort();

  test('the node plugin may only get pods and runtimeclasses', () => {
    expect(node.serviceAccountName).toBe('stackube-csi-node');
    expect(boundTo('stackube-csi-node')).toEqual(['ClusterRole/stackube-csi-node']);
    expect(rulesOf('ClusterRole', 'stackube-csi-node')).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get'] },
      { apiGroups: ['node.k8s.io'], resources: ['runtimeclasses'], verbs: ['get'] },
    ]);
  });

  test('the controller has one ClusterRole per sidecar, one for the driver, and a namespaced Role for leader-election Leases', () => {
    expect(controller.serviceAccountName).toBe('stackube-csi-controller');
    expect(boundTo('stackube-csi-controller')).toEqual([
      'ClusterRole/stackube-csi-controller-driver',
      'ClusterRole/stackube-csi-external-attacher',
      'ClusterRole/stackube-csi-external-provisioner',
      'ClusterRole/stackube-csi-external-resizer',
      'ClusterRole/stackube-csi-external-snapshotter',
      'Role/stackube-csi-leader-election',
    ]);
    expect(rulesOf('Role', 'stackube-csi-leader-election').map((r) => r.resources)).toEqual([['leases']]);
    // the driver reads, and only what ControllerPublishVolume needs
    expect(rulesOf('ClusterRole', 'stackube-csi-controller-driver')).toEqual([
      { apiGroups: ['storage.k8s.io'], resources: ['csinodes'], verbs: ['get'] },
      { apiGroups: ['storage.k8s.io'], resources: ['volumeattachments'], verbs: ['list'] },
    ]);
  });

  test('no wildcards; Secrets only by name, only `get`', () => {
    for (const role of [...find(base, 'ClusterRole'), ...find(base, 'Role')])
      for (const r of role.rules) {
        expect([role.metadata.name, [...r.apiGroups, ...r.resources, ...r.verbs].includes('*')]).toEqual([
          role.metadata.name,
          false,
        ]);
        if (r.resources.includes('secrets'))
          expect([role.metadata.name, r.verbs, r.resourceNames?.length]).toEqual([role.metadata.name, ['get'], 1]);
      }
  });

  test('every binding points at a role and ServiceAccount that exist', () => {
    for (const b of [...find(base, 'ClusterRoleBinding'), ...find(base, 'RoleBinding')]) {
      expect(find(base, b.roleRef.kind, b.roleRef.name)).toHaveLength(1);
      for (const s of b.subjects)
        expect(find(base, 'ServiceAccount', s.name).map((sa) => sa.metadata.namespace)).toEqual([s.namespace]);
    }
  });
});

const SECRET_ROLE: Record<string, string> = {
  'csi.storage.k8s.io/provisioner-secret-name': 'stackube-csi-external-provisioner',
  'csi.storage.k8s.io/controller-publish-secret-name': 'stackube-csi-external-attacher',
  'csi.storage.k8s.io/controller-expand-secret-name': 'stackube-csi-external-resizer',
  'csi.storage.k8s.io/snapshotter-secret-name': 'stackube-csi-external-snapshotter',
  'csi.storage.k8s.io/group-snapshotter-secret-name': 'stackube-csi-external-snapshotter',
};

describe('per-tenant secrets the examples name can be read by the sidecar that needs them', () => {
  const examples = () => loadManifests(yamlFiles('deploy/examples'));
  const classes = (): Manifest[] => [
    ...find(examples(), 'StorageClass'),
    ...find(examples(), 'VolumeSnapshotClass'),
    ...find(examples(), 'VolumeGroupSnapshotClass'),
  ];

  test.each(Object.entries(SECRET_ROLE))('%s → %s may get it', (param, role) => {
    const names = classes()
      .map((c) => c.parameters?.[param])
      .filter(Boolean);
    expect(names.length).toBeGreaterThan(0);
    const allowed = (only(base, 'ClusterRole', role).rules as { resources: string[]; resourceNames?: string[] }[]).find(
      (r) => r.resources.includes('secrets'),
    )?.resourceNames;
    for (const n of names) expect(allowed).toContain(n);
  });

  test('the secret templates live where the manifests mount them', () => {
    for (const s of find(secretTemplates, 'Secret')) {
      expect(s.metadata.namespace).toBe('stackube-csi');
      const mountedBy = [...controller.volumes!, ...node.volumes!].filter(
        (v) => v.secret?.secretName === s.metadata.name,
      );
      expect([s.metadata.name, mountedBy.length]).toEqual([s.metadata.name, 1]);
    }
  });
});
