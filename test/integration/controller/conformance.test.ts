import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { expectCode } from '../../helpers/csi-client.js';
import { GiB, controllerEnv, mount } from './fixtures.js';

/**
 * The Controller rules of the CSI spec (v1.12.0), one table per kind of rule, checked against the
 * real Cinder: capabilities ↔ RPCs, REQUIRED fields, NOT_FOUND vs idempotent OK, idempotency,
 * paging, and the invariants every response must keep.
 */
const clusterId = `ctl-conf-${randomBytes(3).toString('hex')}`;
const env = controllerEnv('conf', { options: { clusterId } });
const MISSING = '00000000-0000-4000-8000-000000000000';
const CAP = mount();

let volumeId: string;
let snapshotId: string;
beforeAll(async () => {
  volumeId = (await env.create()).volume_id;
  snapshotId = (await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: volumeId })).snapshot.snapshot_id;
  // Enough of each for paging to cross pages.
  const second = (await env.create()).volume_id;
  await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: second });
});

/** Which RPCs each controller capability obliges the plugin to serve. */
const RPCS_OF: Record<string, string[]> = {
  CREATE_DELETE_VOLUME: ['CreateVolume', 'DeleteVolume'],
  PUBLISH_UNPUBLISH_VOLUME: ['ControllerPublishVolume', 'ControllerUnpublishVolume'],
  LIST_VOLUMES: ['ListVolumes'],
  GET_CAPACITY: ['GetCapacity'],
  CREATE_DELETE_SNAPSHOT: ['CreateSnapshot', 'DeleteSnapshot'],
  LIST_SNAPSHOTS: ['ListSnapshots'],
  EXPAND_VOLUME: ['ControllerExpandVolume'],
  GET_VOLUME: ['ControllerGetVolume'],
  MODIFY_VOLUME: ['ControllerModifyVolume'],
  GET_SNAPSHOT: ['GetSnapshot'],
};

describe('capabilities', () => {
  test('every advertised capability has its RPCs served (none answers UNIMPLEMENTED)', async () => {
    const types: string[] = (await env.ctl.ControllerGetCapabilities({})).capabilities.map((c: any) => c.rpc.type);
    for (const t of types) {
      for (const rpc of RPCS_OF[t] ?? []) {
        const outcome = await (env.ctl as any)[rpc]({}).then(
          () => status.OK,
          (e: { code: number }) => e.code,
        );
        expect([rpc, outcome]).not.toEqual([rpc, status.UNIMPLEMENTED]);
      }
    }
    // Capabilities that only make sense together.
    if (types.includes('LIST_VOLUMES_PUBLISHED_NODES')) expect(types).toContain('PUBLISH_UNPUBLISH_VOLUME');
    if (types.includes('VOLUME_CONDITION'))
      expect(types.some((t) => t === 'GET_VOLUME' || t === 'LIST_VOLUMES')).toBe(true);
  });

  test('SINGLE_NODE_MULTI_WRITER plugins still accept SINGLE_NODE_WRITER', async () => {
    const r = await env.ctl.ValidateVolumeCapabilities({
      volume_id: volumeId,
      volume_capabilities: [
        mount('SINGLE_NODE_WRITER'),
        mount('SINGLE_NODE_SINGLE_WRITER'),
        mount('SINGLE_NODE_MULTI_WRITER'),
      ],
    });
    expect(r.confirmed.volume_capabilities).toHaveLength(3);
  });
});

describe('REQUIRED fields: leaving one out is INVALID_ARGUMENT', () => {
  const cases: [rpc: string, field: string, request: () => Record<string, unknown>][] = [
    ['CreateVolume', 'name', () => ({ name: env.name(), volume_capabilities: [CAP] })],
    ['CreateVolume', 'volume_capabilities', () => ({ name: env.name(), volume_capabilities: [CAP] })],
    ['DeleteVolume', 'volume_id', () => ({ volume_id: MISSING })],
    [
      'ControllerPublishVolume',
      'volume_id',
      () => ({ volume_id: volumeId, node_id: 'node-c', volume_capability: CAP }),
    ],
    ['ControllerPublishVolume', 'node_id', () => ({ volume_id: volumeId, node_id: 'node-c', volume_capability: CAP })],
    [
      'ControllerPublishVolume',
      'volume_capability',
      () => ({ volume_id: volumeId, node_id: 'node-c', volume_capability: CAP }),
    ],
    ['ControllerUnpublishVolume', 'volume_id', () => ({ volume_id: volumeId, node_id: 'node-c' })],
    ['ValidateVolumeCapabilities', 'volume_id', () => ({ volume_id: volumeId, volume_capabilities: [CAP] })],
    ['ValidateVolumeCapabilities', 'volume_capabilities', () => ({ volume_id: volumeId, volume_capabilities: [CAP] })],
    ['ControllerGetVolume', 'volume_id', () => ({ volume_id: volumeId })],
    ['ControllerExpandVolume', 'volume_id', () => ({ volume_id: volumeId, capacity_range: { required_bytes: GiB } })],
    [
      'ControllerExpandVolume',
      'capacity_range',
      () => ({ volume_id: volumeId, capacity_range: { required_bytes: GiB } }),
    ],
    ['ControllerModifyVolume', 'volume_id', () => ({ volume_id: volumeId, mutable_parameters: { type: 'ceph' } })],
    [
      'ControllerModifyVolume',
      'mutable_parameters',
      () => ({ volume_id: volumeId, mutable_parameters: { type: 'ceph' } }),
    ],
    ['CreateSnapshot', 'name', () => ({ name: env.name('s'), source_volume_id: volumeId })],
    ['CreateSnapshot', 'source_volume_id', () => ({ name: env.name('s'), source_volume_id: volumeId })],
    ['DeleteSnapshot', 'snapshot_id', () => ({ snapshot_id: MISSING })],
    ['GetSnapshot', 'snapshot_id', () => ({ snapshot_id: snapshotId })],
  ];
  test.each(cases)('%s without %s', async (rpc, field, request) => {
    const { [field]: _, ...rest } = request();
    const err = await expectCode((env.ctl as any)[rpc](rest), status.INVALID_ARGUMENT);
    expect(err.details).toContain(field);
  });
});

describe('a volume or snapshot that does not exist', () => {
  const notFound: [string, () => object][] = [
    ['ControllerPublishVolume', () => ({ volume_id: MISSING, node_id: 'node-c', volume_capability: CAP })],
    ['ValidateVolumeCapabilities', () => ({ volume_id: MISSING, volume_capabilities: [CAP] })],
    ['ControllerGetVolume', () => ({ volume_id: MISSING })],
    ['ControllerExpandVolume', () => ({ volume_id: MISSING, capacity_range: { required_bytes: 2 * GiB } })],
    ['ControllerModifyVolume', () => ({ volume_id: MISSING, mutable_parameters: { type: 'ceph' } })],
    ['CreateSnapshot', () => ({ name: env.name('s'), source_volume_id: MISSING })],
    ['GetSnapshot', () => ({ snapshot_id: MISSING })],
    [
      'CreateVolume',
      () => ({
        name: env.name(),
        volume_capabilities: [CAP],
        volume_content_source: { snapshot: { snapshot_id: MISSING } },
      }),
    ],
    [
      'CreateVolume',
      () => ({
        name: env.name(),
        volume_capabilities: [CAP],
        volume_content_source: { volume: { volume_id: MISSING } },
      }),
    ],
  ];
  test.each(notFound)('%s → NOT_FOUND', async (rpc, request) => {
    await expectCode((env.ctl as any)[rpc](request()), status.NOT_FOUND);
  });

  const alreadyDone: [string, () => object][] = [
    ['DeleteVolume', () => ({ volume_id: MISSING })],
    ['ControllerUnpublishVolume', () => ({ volume_id: MISSING, node_id: 'node-c' })],
    ['DeleteSnapshot', () => ({ snapshot_id: MISSING })],
  ];
  test.each(alreadyDone)('%s → OK (already done)', async (rpc, request) => {
    await (env.ctl as any)[rpc](request());
  });
});

describe('idempotency: the same call twice has the same effect and answer', () => {
  test('CreateVolume, ControllerPublishVolume, ControllerExpandVolume, CreateSnapshot, ControllerModifyVolume', async () => {
    const create = { name: env.name(), capacity_range: { required_bytes: GiB }, volume_capabilities: [CAP] };
    const v1 = await env.ctl.CreateVolume(create);
    expect(await env.ctl.CreateVolume(create)).toEqual(v1);
    const id = v1.volume.volume_id;

    const publish = { volume_id: id, node_id: 'node-i', volume_capability: CAP };
    const p1 = await env.ctl.ControllerPublishVolume(publish);
    expect(await env.ctl.ControllerPublishVolume(publish)).toEqual(p1);
    await env.ctl.ControllerUnpublishVolume({ volume_id: id, node_id: 'node-i' });
    await env.ctl.ControllerUnpublishVolume({ volume_id: id, node_id: 'node-i' });

    const expand = { volume_id: id, capacity_range: { required_bytes: 2 * GiB }, volume_capability: CAP };
    const e1 = await env.ctl.ControllerExpandVolume(expand);
    expect(await env.ctl.ControllerExpandVolume(expand)).toEqual(e1);

    const snap = { name: env.name('s'), source_volume_id: id };
    const s1 = await env.ctl.CreateSnapshot(snap);
    expect(await env.ctl.CreateSnapshot(snap)).toEqual(s1);
    await env.ctl.DeleteSnapshot({ snapshot_id: s1.snapshot.snapshot_id });
    await env.ctl.DeleteSnapshot({ snapshot_id: s1.snapshot.snapshot_id });

    await env.ctl.ControllerModifyVolume({ volume_id: id, mutable_parameters: { type: 'ceph' } });
    await env.ctl.ControllerModifyVolume({ volume_id: id, mutable_parameters: { type: 'ceph' } });

    await env.ctl.DeleteVolume({ volume_id: id });
    await env.ctl.DeleteVolume({ volume_id: id });
    expect(await env.direct.cinder.findVolume(id)).toBeUndefined();
  });
});

describe('an operation already pending for the volume or snapshot → ABORTED (never a second racing one)', () => {
  test('CreateSnapshot twice at once with one name; publish and expand of one volume at once', async () => {
    const req = { name: env.name('s'), source_volume_id: volumeId };
    const snaps = await Promise.allSettled([env.ctl.CreateSnapshot(req), env.ctl.CreateSnapshot(req)]);
    const rejected = snaps.flatMap((r) => (r.status === 'rejected' ? [r.reason.code] : []));
    expect(rejected).toEqual([status.ABORTED]);
    expect(await env.direct.cinder.snapshotsNamed(req.name)).toHaveLength(1);

    const both = await Promise.allSettled([
      env.ctl.ControllerPublishVolume({ volume_id: volumeId, node_id: 'node-p', volume_capability: CAP }),
      env.ctl.ControllerExpandVolume({ volume_id: volumeId, capacity_range: { required_bytes: 2 * GiB } }),
    ]);
    expect(both.flatMap((r) => (r.status === 'rejected' ? [r.reason.code] : []))).toEqual([status.ABORTED]);
    await env.ctl.ControllerUnpublishVolume({ volume_id: volumeId, node_id: 'node-p' });
  });
});

describe('paging (ListVolumes, ListSnapshots)', () => {
  test.each(['ListVolumes', 'ListSnapshots'])(
    '%s: never more than max_entries; next_token until the end; every entry once',
    async (rpc) => {
      const list = (env.ctl as any)[rpc] as (r: object) => Promise<any>;
      const idOf = (e: any) => e.volume?.volume_id ?? e.snapshot?.snapshot_id;
      const all = (await list({})).entries.map(idOf);
      expect(all.length).toBeGreaterThanOrEqual(2);
      const seen: string[] = [];
      let token = '';
      do {
        const page = await list({ max_entries: 1, starting_token: token });
        expect(page.entries.length).toBeLessThanOrEqual(1);
        seen.push(...page.entries.map(idOf));
        token = page.next_token;
      } while (token);
      expect(seen.sort()).toEqual([...all].sort());
      await expectCode(list({ starting_token: 'not-a-token' }), status.ABORTED);
    },
  );
});

describe('response invariants', () => {
  /** The spec's topology key: optional DNS prefix (≤63, lower case) / name (≤63, alphanumeric ends). */
  const TOPOLOGY_KEY = /^([a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
  const SEGMENT = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

  test('CreateVolume: an id, a capacity inside the range, well-formed topology', async () => {
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      capacity_range: { required_bytes: GiB + 1, limit_bytes: 3 * GiB },
      volume_capabilities: [CAP],
    });
    expect(volume.volume_id).not.toBe('');
    expect(volume.capacity_bytes).toBeGreaterThanOrEqual(GiB + 1);
    expect(volume.capacity_bytes).toBeLessThanOrEqual(3 * GiB);
    for (const t of volume.accessible_topology)
      for (const [k, v] of Object.entries(t.segments as Record<string, string>)) {
        expect(k).toMatch(TOPOLOGY_KEY);
        expect(v).toMatch(SEGMENT);
      }
  });

  test('GetCapacity is never negative; ListSnapshots lists only cut snapshots; snapshots name their source', async () => {
    expect((await env.ctl.GetCapacity({})).available_capacity).toBeGreaterThanOrEqual(0);
    for (const e of (await env.ctl.ListSnapshots({})).entries) {
      expect(e.snapshot.ready_to_use).toBe(true);
      expect(e.snapshot.source_volume_id).not.toBe('');
      expect(e.snapshot.creation_time).not.toBeNull();
    }
  });

  test('published elsewhere → FAILED_PRECONDITION naming the node it is on', async () => {
    await env.ctl.ControllerPublishVolume({ volume_id: volumeId, node_id: 'node-first', volume_capability: CAP });
    try {
      const err = await expectCode(
        env.ctl.ControllerPublishVolume({ volume_id: volumeId, node_id: 'node-second', volume_capability: CAP }),
        status.FAILED_PRECONDITION,
      );
      expect(err.details).toContain('node-first');
    } finally {
      await env.ctl.ControllerUnpublishVolume({ volume_id: volumeId, node_id: 'node-first' });
    }
  });
});

describe("the spec's size limits: an oversized field is INVALID_ARGUMENT before any call to Cinder", () => {
  const big = 'x'.repeat(1 << 20);
  const calls: string[] = [];
  const sized = controllerEnv('conf-size', {
    hooks: { onHttpRequest: (method, url) => calls.push(`${method} ${url}`) },
  });
  const cases: [string, string, object][] = [
    ['DeleteVolume, a 1 MiB volume_id', 'DeleteVolume', { volume_id: big }],
    [
      'ValidateVolumeCapabilities, a 1 MiB volume_id',
      'ValidateVolumeCapabilities',
      { volume_id: big, volume_capabilities: [CAP] },
    ],
    ['ListSnapshots by a 1 MiB snapshot_id', 'ListSnapshots', { snapshot_id: big }],
    [
      'ControllerExpandVolume, a 1 MiB volume_id',
      'ControllerExpandVolume',
      { volume_id: big, capacity_range: { required_bytes: GiB } },
    ],
    [
      'CreateVolume, a 1 MiB type',
      'CreateVolume',
      { name: 'ok', volume_capabilities: [CAP], parameters: { type: big } },
    ],
    [
      'CreateVolume, a 1 MiB content-source id',
      'CreateVolume',
      { name: 'ok', volume_capabilities: [CAP], volume_content_source: { snapshot: { snapshot_id: big } } },
    ],
    ['CreateVolume, a name of 129 bytes', 'CreateVolume', { name: 'n'.repeat(129), volume_capabilities: [CAP] }],
    [
      'CreateVolume, parameters over 4 KiB in total',
      'CreateVolume',
      {
        name: 'ok',
        volume_capabilities: [CAP],
        parameters: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, 'v'.repeat(120)])),
      },
    ],
    [
      'ControllerPublishVolume, a node_id of 257 bytes',
      'ControllerPublishVolume',
      { volume_id: MISSING, node_id: 'n'.repeat(257), volume_capability: CAP },
    ],
    ['CreateSnapshot, a 1 MiB source_volume_id', 'CreateSnapshot', { name: 'ok', source_volume_id: big }],
    [
      'ControllerModifyVolume, a 1 MiB mutable parameter',
      'ControllerModifyVolume',
      { volume_id: MISSING, mutable_parameters: { type: big } },
    ],
  ];
  test.each(cases)('%s', async (_what, rpc, req) => {
    calls.length = 0;
    const err = await expectCode((sized.ctl as any)[rpc](req), status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/ is \d+ bytes( in total)?; the CSI spec allows at most (128|256|4096)$/);
    expect(err.details.length).toBeLessThan(200);
    expect(calls).toEqual([]);
  });
  test('the driver keeps serving the same connection at once', async () => {
    // as a CO calls, with a deadline: a connection stalled by the echoed megabyte (60 s, once) would miss it
    await expectCode(sized.ctl.DeleteVolume({ volume_id: big }, { deadlineMs: 10_000 }), status.INVALID_ARGUMENT);
    await sized.ctl.ControllerGetCapabilities({}, { deadlineMs: 10_000 });
  });
});

describe('nodes: ControllerPublishVolume to a node that does not exist, or that holds its limit', () => {
  // --mode all: the node served beside the controller is the one node there is (csi-sanity's setting)
  const all = controllerEnv('conf-nodes', {
    mode: 'all',
    options: { nodeId: 'conf-node', maxVolumesPerNode: '2', rbdMapper: 'fuse' },
  });
  test('an unknown node id → NOT_FOUND; the node served here → OK', async () => {
    const v = await all.create();
    const err = await expectCode(
      all.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'fake-node-id', volume_capability: CAP }),
      status.NOT_FOUND,
    );
    expect(err.details).toMatch(/node "fake-node-id" does not exist/);
    await all.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'conf-node', volume_capability: CAP });
    await all.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'conf-node' });
  });
  test('publishing past max_volumes_per_node → RESOURCE_EXHAUSTED naming the node, the count and the limit', async () => {
    const n = all.driver.client.Node;
    expect((await n.NodeGetInfo({})).max_volumes_per_node).toBe(2);
    const vs = [await all.create(), await all.create(), await all.create()];
    for (const v of vs.slice(0, 2))
      await all.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'conf-node', volume_capability: CAP });
    // the same publish again is idempotent, not a third volume
    await all.ctl.ControllerPublishVolume({
      volume_id: vs[0]!.volume_id,
      node_id: 'conf-node',
      volume_capability: CAP,
    });
    const err = await expectCode(
      all.ctl.ControllerPublishVolume({ volume_id: vs[2]!.volume_id, node_id: 'conf-node', volume_capability: CAP }),
      status.RESOURCE_EXHAUSTED,
    );
    expect(err.details).toMatch(
      /node conf-node already holds 2 volumes of this driver, its limit \(max_volumes_per_node\) is 2/,
    );
    expect(await all.direct.cinder.volumeAttachments(vs[2]!.volume_id)).toEqual([]);
    await all.ctl.ControllerUnpublishVolume({ volume_id: vs[1]!.volume_id, node_id: 'conf-node' });
    await all.ctl.ControllerPublishVolume({
      volume_id: vs[2]!.volume_id,
      node_id: 'conf-node',
      volume_capability: CAP,
    });
    for (const v of vs) await all.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'conf-node' });
  });
});
