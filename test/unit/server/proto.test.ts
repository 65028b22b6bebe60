import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CSI_PROTO_DIR, CSI_SERVICES, csiPackage, descriptorFor } from '../../../src/server/proto.js';

// The descriptor a mode loads: only its services and the types they reach, and every one of them.
type Node = {
  nested?: Record<string, Node>;
  fields?: Record<string, { type: string }>;
  methods?: Record<string, { requestType: string; responseType: string }>;
};
const full = JSON.parse(readFileSync(join(CSI_PROTO_DIR, 'csi.json'), 'utf8')) as Node;
const v1 = (d: Node) => d.nested!.csi!.nested!.v1!.nested!;

test('the node plugin loads Identity and Node with their types, and nothing of Controller', () => {
  const types = Object.keys(v1(descriptorFor(full, ['Identity', 'Node'])));
  expect(types).toEqual(
    expect.arrayContaining([
      'Identity',
      'Node',
      'NodeStageVolumeRequest',
      'VolumeCapability',
      'ProbeResponse',
      'Topology',
      'VolumeCondition',
    ]),
  );
  for (const t of [
    'Controller',
    'GroupController',
    'SnapshotMetadata',
    'CreateVolumeRequest',
    'Snapshot',
    'VolumeGroupSnapshot',
  ])
    expect(types).not.toContain(t);
  expect(types.length).toBeLessThan(Object.keys(v1(full)).length / 2);
});

test.each([[['Identity', 'Node']], [['Identity', 'Controller', 'GroupController']], [[...CSI_SERVICES]]] as const)(
  '%j: every type a kept type names is kept (closed under references)',
  (services) => {
    const kept = v1(descriptorFor(full, services));
    const missing: string[] = [];
    const check = (node: Node, where: string) => {
      const refs = [
        ...Object.values(node.fields ?? {}).map((f) => f.type),
        ...Object.values(node.methods ?? {}).flatMap((m) => [m.requestType, m.responseType]),
      ];
      for (const ref of refs) {
        const top = ref.split('.')[0]!;
        if (v1(full)[top] && !node.nested?.[top] && !kept[top]) missing.push(`${where} → ${ref}`);
      }
      for (const [name, child] of Object.entries(node.nested ?? {})) check(child, `${where}.${name}`);
    };
    for (const [name, node] of Object.entries(kept)) check(node, name);
    expect(missing).toEqual([]);
  },
);

test('a subset serves the same methods, on the same paths, as the whole package', () => {
  const whole = csiPackage();
  const node = csiPackage(['Identity', 'Node']);
  for (const s of ['Identity', 'Node'] as const) {
    const paths = (p: typeof whole) => Object.values(p[s].service).map((m) => m.path);
    expect(paths(node)).toEqual(paths(whole));
  }
  expect(node).not.toHaveProperty('Controller');
  // and they encode alike: a NodeStageVolume request round-trips through the subset's serializer
  const req = {
    volume_id: 'v',
    staging_target_path: '/s',
    volume_capability: { mount: { fs_type: 'ext4', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
    secrets: { k: 'v' },
  };
  const m = node.Node.service.NodeStageVolume!;
  expect(m.requestDeserialize(m.requestSerialize(req))).toMatchObject(req);
  expect(whole.Node.service.NodeStageVolume!.requestSerialize(req)).toEqual(m.requestSerialize(req));
});
