import { configSchema } from '../../../src/config.js';
import { parseGroupParameters } from '../../../src/csi/controller/group-snapshots.js';
import { ATTACH_MODES, CREATE_PARAMETERS, FS_TYPES } from '../../../src/vocabulary.js';
import { CREDENTIAL_KEYS } from '../../../src/openstack/credentials.js';
import { DRIVER_NAME, TOPOLOGY_ZONE_KEY } from '../../../src/package-info.js';
import { find, loadManifests, yamlFiles, type Manifest } from '../../helpers/manifests.js';

// The examples are what users copy: they must use only parameters the driver accepts, and refer
// to each other (classes, claims, snapshots, runtime classes, secrets) by names that exist.

const examples = loadManifests(yamlFiles('deploy/examples'));
const all = (kind: string) => find(examples, kind);
const names = (kind: string) => new Set(all(kind).map((d) => d.metadata.name));

/** StorageClass parameters CreateVolume accepts (the vocabulary's; unknown keys are INVALID_ARGUMENT). */
const DRIVER_PARAMETERS = new Set<string>(CREATE_PARAMETERS);
/** The csi.storage.k8s.io/ keys the sidecars consume (and strip) before the driver sees the parameters. */
const SECRET_KINDS = [
  'provisioner',
  'controller-publish',
  'node-stage',
  'controller-expand',
  'node-publish',
  'node-expand',
  'controller-modify',
];
const RESERVED = new Set([
  'csi.storage.k8s.io/fstype',
  ...SECRET_KINDS.flatMap((k) => [`csi.storage.k8s.io/${k}-secret-name`, `csi.storage.k8s.io/${k}-secret-namespace`]),
]);

describe('StorageClasses', () => {
  const classes = all('StorageClass');

  test('one of each kind the docs promise: ext4, xfs, passthrough, block', () => {
    expect([...names('StorageClass')].sort()).toEqual([
      'stackube-block',
      'stackube-ext4',
      'stackube-passthrough',
      'stackube-xfs',
    ]);
    expect(classes.map((c) => c.provisioner)).toEqual(classes.map(() => DRIVER_NAME));
  });

  test('every parameter key is one the driver or the sidecars accept, with a valid value', () => {
    for (const sc of classes)
      for (const [k, v] of Object.entries<string>(sc.parameters ?? {})) {
        expect([sc.metadata.name, k, DRIVER_PARAMETERS.has(k) || RESERVED.has(k)]).toEqual([sc.metadata.name, k, true]);
        if (k === 'attachMode') expect(ATTACH_MODES).toContain(v);
        if (k === 'fsType' || k === 'csi.storage.k8s.io/fstype')
          expect(FS_TYPES).toContain(v as (typeof FS_TYPES)[number]);
      }
  });

  test('each secret name comes with its namespace, templated per PVC namespace (one tenant per namespace)', () => {
    for (const sc of classes) {
      const p = (sc.parameters ?? {}) as Record<string, string>;
      for (const kind of ['provisioner', 'controller-publish', 'controller-expand', 'node-stage']) {
        expect([sc.metadata.name, kind, p[`csi.storage.k8s.io/${kind}-secret-name`]]).toEqual([
          sc.metadata.name,
          kind,
          'stackube-credentials',
        ]);
        expect(p[`csi.storage.k8s.io/${kind}-secret-namespace`]).toBe('${pvc.namespace}');
      }
    }
  });

  test('topology restrictions use the driver’s topology key', () => {
    const keys = classes.flatMap((sc) =>
      (sc.allowedTopologies ?? []).flatMap((t: { matchLabelExpressions: { key: string }[] }) =>
        t.matchLabelExpressions.map((e) => e.key),
      ),
    );
    expect(keys.length).toBeGreaterThan(0);
    expect(new Set(keys)).toEqual(new Set([TOPOLOGY_ZONE_KEY]));
  });

  test('the passthrough class really is passthrough; the block class makes no filesystem', () => {
    expect(all('StorageClass').find((c) => c.metadata.name === 'stackube-passthrough')?.parameters.attachMode).toBe(
      'passthrough',
    );
    const block = all('StorageClass').find((c) => c.metadata.name === 'stackube-block')!.parameters;
    expect(Object.keys(block).filter((k) => /fstype/i.test(k))).toEqual([]);
  });
});

describe('VolumeSnapshotClass', () => {
  test('belongs to the driver and reads the snapshot’s namespace secret', () => {
    const [vsc, ...rest] = all('VolumeSnapshotClass');
    expect(rest).toEqual([]);
    expect(vsc!.driver).toBe(DRIVER_NAME);
    expect(vsc!.parameters).toEqual({
      'csi.storage.k8s.io/snapshotter-secret-name': 'stackube-credentials',
      'csi.storage.k8s.io/snapshotter-secret-namespace': '${volumesnapshot.namespace}',
    });
  });
});

describe('VolumeGroupSnapshotClass and VolumeGroupSnapshot', () => {
  test('the class belongs to the driver, takes only groupType, and reads the group snapshot’s namespace secret', () => {
    const [vgsc, ...rest] = all('VolumeGroupSnapshotClass');
    expect(rest).toEqual([]);
    expect(vgsc!.driver).toBe(DRIVER_NAME);
    expect(parseGroupParameters(vgsc!.parameters)).toEqual({ groupType: 'stackube-group', k8s: {} });
    expect(vgsc!.parameters['csi.storage.k8s.io/group-snapshotter-secret-namespace']).toBe(
      '${volumegroupsnapshot.namespace}',
    );
  });

  test('the group snapshot uses the example class and selects example claims (more than one)', () => {
    for (const g of all('VolumeGroupSnapshot')) {
      expect(names('VolumeGroupSnapshotClass')).toContain(g.spec.volumeGroupSnapshotClassName);
      const selected = all('PersistentVolumeClaim').filter(
        (c) =>
          c.metadata.namespace === g.metadata.namespace &&
          Object.entries(g.spec.source.selector.matchLabels as Record<string, string>).every(
            ([k, v]) => c.metadata.labels?.[k] === v,
          ),
      );
      expect(selected.length).toBeGreaterThan(1);
    }
    expect(all('VolumeGroupSnapshot')).toHaveLength(1);
  });
});

describe('references between examples', () => {
  const claims = all('PersistentVolumeClaim');

  test('PVCs use example StorageClasses; clones and restores name claims and snapshots that exist', () => {
    const classes = names('StorageClass');
    for (const pvc of claims) {
      expect([pvc.metadata.name, classes.has(pvc.spec.storageClassName)]).toEqual([pvc.metadata.name, true]);
      const src = pvc.spec.dataSource as { kind: string; name: string; apiGroup?: string } | undefined;
      if (src?.kind === 'PersistentVolumeClaim') expect(names('PersistentVolumeClaim')).toContain(src.name);
      if (src?.kind === 'VolumeSnapshot') {
        expect(src.apiGroup).toBe('snapshot.storage.k8s.io');
        expect(names('VolumeSnapshot')).toContain(src.name);
      }
    }
    expect(
      claims
        .map((c) => c.spec.dataSource?.kind)
        .filter(Boolean)
        .sort(),
    ).toEqual(['PersistentVolumeClaim', 'VolumeSnapshot']);
  });

  test('snapshots use the example VolumeSnapshotClass and claims that exist', () => {
    for (const s of all('VolumeSnapshot')) {
      expect(names('VolumeSnapshotClass')).toContain(s.spec.volumeSnapshotClassName);
      expect(names('PersistentVolumeClaim')).toContain(s.spec.source.persistentVolumeClaimName);
    }
  });

  test('the expansion example grows an existing claim', () => {
    const claimIn = (file: string) =>
      examples.find((m) => m.source.startsWith(`deploy/examples/${file}#`) && m.doc.kind === 'PersistentVolumeClaim')!
        .doc;
    const gib = (c: Manifest) => Number(/^(\d+)Gi$/.exec(c.spec.resources.requests.storage)![1]);
    const [original, grown] = [claimIn('pvc-pod-runc.yaml'), claimIn('expansion.yaml')];
    expect(grown.metadata).toEqual(original.metadata);
    expect(gib(grown)).toBeGreaterThan(gib(original));
    expect(grown.spec.storageClassName).toBe(original.spec.storageClassName);
    expect(
      all('StorageClass').find((c) => c.metadata.name === original.spec.storageClassName)?.allowVolumeExpansion,
    ).toBe(true);
  });

  test('pods mount claims that exist; the Kata pod’s RuntimeClass is one the node plugin treats as a VM', () => {
    const handlers = configSchema.parse({ nodeId: 'n' }).hypervisorRuntimeHandlers;
    const isVm = (handler: string) =>
      handlers.some((glob) =>
        new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(handler),
      );
    const pods = all('Pod');
    expect(pods.map((p) => p.spec.runtimeClassName).filter(Boolean)).toHaveLength(1);
    for (const pod of pods) {
      for (const v of pod.spec.volumes)
        expect(names('PersistentVolumeClaim')).toContain(v.persistentVolumeClaim.claimName);
      if (pod.spec.runtimeClassName) {
        const rc = all('RuntimeClass').find((r) => r.metadata.name === pod.spec.runtimeClassName);
        expect(rc && isVm(rc.handler)).toBe(true);
      }
    }
    expect(isVm('runc')).toBe(false);
  });

  test('the tenant Secret is in the namespace of the claims and carries only credential keys and the Ceph key', () => {
    const [secret, ...rest] = all('Secret');
    expect(rest).toEqual([]);
    expect(secret!.metadata.name).toBe('stackube-credentials');
    const namespaced = examples
      .map((m) => m.doc)
      .filter(
        (d) =>
          !['StorageClass', 'VolumeSnapshotClass', 'VolumeGroupSnapshotClass', 'RuntimeClass', 'Namespace'].includes(
            d.kind,
          ),
      );
    expect(new Set(namespaced.map((d) => d.metadata.namespace))).toEqual(new Set([secret!.metadata.namespace]));
    expect(names('Namespace')).toEqual(new Set([secret!.metadata.namespace]));
    const allowed = new Set<string>([...CREDENTIAL_KEYS, 'userKey']);
    expect(Object.keys(secret!.stringData).filter((k) => !allowed.has(k))).toEqual([]);
  });
});
