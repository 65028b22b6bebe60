import {
  loadManifests,
  parseManifests,
  renderKustomize,
  schemaProblems,
  yamlFiles,
  type LoadedManifest,
} from '../../helpers/manifests.js';

// Every object a platform team applies must be one the API server accepts: checked against the
// Kubernetes OpenAPI schemas (kubernetes-models) with unknown fields refused, as a server with
// strict field validation would.

const BASE = 'deploy/kubernetes';
const EXAMPLES = 'deploy/examples';

async function problemsOf(manifests: LoadedManifest[]): Promise<string[]> {
  const out: string[] = [];
  for (const m of manifests)
    for (const p of await schemaProblems(m.doc))
      out.push(`${m.source} (${m.doc?.kind} ${m.doc?.metadata?.name}): ${p}`);
  return out;
}

describe('manifests validate against the Kubernetes schemas', () => {
  const files = [...yamlFiles(BASE), ...yamlFiles(EXAMPLES)].filter((f) => !f.endsWith('kustomization.yaml'));

  test('there is something to validate', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        `${BASE}/controller.yaml`,
        `${BASE}/node.yaml`,
        `${BASE}/secrets/cloud-config.yaml`,
        `${EXAMPLES}/volumesnapshotclass.yaml`,
      ]),
    );
  });

  test('every document of every file under deploy/kubernetes and deploy/examples', async () => {
    const manifests = loadManifests(files);
    expect(manifests.length).toBeGreaterThan(30);
    expect(await problemsOf(manifests)).toEqual([]);
  });

  test('`kubectl kustomize deploy/kubernetes` renders, every rendered object validates, all in one namespace', async () => {
    const rendered = await renderKustomize(BASE);
    expect(await problemsOf(rendered)).toEqual([]);
    const kinds = rendered.map((m) => m.doc.kind).sort();
    expect(kinds).toEqual(
      expect.arrayContaining([
        'CSIDriver',
        'ClusterRole',
        'ClusterRoleBinding',
        'DaemonSet',
        'Deployment',
        'Namespace',
        'PodDisruptionBudget',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
      ]),
    );
    const clusterScoped = new Set(['Namespace', 'CSIDriver', 'ClusterRole', 'ClusterRoleBinding']);
    for (const m of rendered)
      expect([m.source, m.doc.metadata.namespace]).toEqual([
        m.source,
        clusterScoped.has(m.doc.kind) ? undefined : 'stackube-csi',
      ]);
  });
});

test('`kubectl kustomize deploy/snapshot-metadata` (changed block tracking) renders and validates', async () => {
  const rendered = await renderKustomize('deploy/snapshot-metadata');
  expect(await problemsOf(rendered)).toEqual([]);
  const controller = rendered.find((m) => m.doc.kind === 'Deployment')!.doc;
  const containers = controller.spec.template.spec.containers as { name: string; env?: { name: string }[] }[];
  expect(containers.map((c) => c.name)).toContain('csi-snapshot-metadata');
  // the driver serves SnapshotMetadata only with its Ceph identity: the sidecar without it would wait forever
  expect(containers.find((c) => c.name === 'stackube-csi')!.env!.map((e) => e.name)).toContain('CONTROLLER_CEPH_CONF');
  const service = rendered.find((m) => m.doc.kind === 'SnapshotMetadataService')!.doc;
  const svc = rendered.find(
    (m) => m.doc.kind === 'Service' && m.doc.metadata.name === 'stackube-csi-snapshot-metadata',
  )!;
  expect(service.spec.address).toBe(
    `${svc.doc.metadata.name}.${svc.doc.metadata.namespace}:${svc.doc.spec.ports[0].port}`,
  );
  expect(service.metadata.name).toBe('cinder.csi.stackube.io');
  // its Secret templates validate, and each is mounted by the controller it renders
  const templates = loadManifests(yamlFiles('deploy/snapshot-metadata/secrets'));
  expect(await problemsOf(templates)).toEqual([]);
  const mounted = (controller.spec.template.spec.volumes as { secret?: { secretName: string } }[]).map(
    (v) => v.secret?.secretName,
  );
  expect(templates.map((t) => mounted.includes(t.doc.metadata.name))).toEqual([true, true]);
});

describe('the validator itself catches mistakes (so a green run means something)', () => {
  const validDaemonSet = `
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x, namespace: y}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i:1
          volumeMounts: [{name: v, mountPath: /v, mountPropagation: Bidirectional}]
      volumes: [{name: v, hostPath: {path: /v}}]
`;
  const one = (yaml: string) => schemaProblems(parseManifests(yaml, 'inline')[0]!.doc);

  test('a valid object has no problems', async () => {
    expect(await one(validDaemonSet)).toEqual([]);
  });

  test('a misspelt field is an unknown field', async () => {
    expect(await one(validDaemonSet.replace('mountPropagation', 'mountPropagaton'))).toEqual([
      '/spec/template/spec/containers/0/volumeMounts/0/mountPropagaton: unknown field',
    ]);
  });

  test('a wrong type and a missing required field are reported', async () => {
    const problems = await one(
      validDaemonSet
        .replace('image: i:1', 'image: i:1\n          privileged: yes')
        .replace('selector: {matchLabels: {a: b}}', 'minReadySeconds: soon'),
    );
    expect(problems.join('\n')).toMatch(/spec\/minReadySeconds must be integer/);
    expect(problems.join('\n')).toMatch(/spec must have required property '?selector/);
    expect(problems).toContain('/spec/template/spec/containers/0/privileged: unknown field');
  });

  test('a kind without a schema is refused, not waved through', async () => {
    expect(await one('apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n')).toEqual([
      'no Kubernetes schema for example.com/v1 Widget (kubernetes-models has no IoK8sApiExampleV1Widget)',
    ]);
  });

  test('the snapshot CRDs are checked strictly too', async () => {
    expect(
      await one(
        'apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {name: s}\ndriver: d\ndeletionPolicy: Keep\nparamaters: {}\n',
      ),
    ).toEqual([
      expect.stringMatching(/^\/deletionPolicy: /),
      expect.stringMatching(/^\/: Unrecognized key: "paramaters"/),
    ]);
  });
});
