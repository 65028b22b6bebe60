import { status } from '@grpc/grpc-js';
import { TOPOLOGY_ZONE_KEY } from '../../../src/package-info.js';
import { asCo, expectCode } from '../../helpers/csi-client.js';
import { GiB, block, controllerEnv, mount } from './fixtures.js';

const env = controllerEnv('create');
const zone = (z: string) => ({ segments: { [TOPOLOGY_ZONE_KEY]: z } });

/** The live (not being deleted) Cinder volumes with this name. */
const named = async (name: string) =>
  (await env.direct.cinder.volumesNamed(name)).filter((v) => v.status !== 'deleting');

describe('CreateVolume', () => {
  test('makes an available volume: GiB rounding, volume_context, topology, metadata tags', async () => {
    const name = env.name();
    const params = {
      fsType: 'xfs',
      attachMode: 'passthrough',
      'csi.storage.k8s.io/pvc/name': 'data',
      'csi.storage.k8s.io/pvc/namespace': 'team-a',
      'csi.storage.k8s.io/pv/name': name,
    };
    const { volume } = await env.ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: 1.5 * GiB },
      volume_capabilities: [mount()],
      parameters: params,
    });
    expect(volume.capacity_bytes).toBe(2 * GiB);
    expect(volume.volume_context).toEqual({ fsType: 'xfs', attachMode: 'passthrough' });
    expect(volume.accessible_topology).toEqual([zone('nova')]);
    const v = await env.direct.cinder.getVolume(volume.volume_id);
    expect(v).toMatchObject({ name, status: 'available', size: 2, availability_zone: 'nova' });
    expect(v.metadata).toMatchObject({
      'cinder.csi.stackube.io/cluster': env.driver.config.clusterId,
      'csi.storage.k8s.io/pvc/name': 'data',
      'csi.storage.k8s.io/pvc/namespace': 'team-a',
      'csi.storage.k8s.io/pv/name': name,
    });
  });

  test('the same request again returns the same volume and makes no second one', async () => {
    const req = {
      name: env.name(),
      capacity_range: { required_bytes: GiB },
      volume_capabilities: [block()],
      parameters: { type: 'ceph' },
    };
    const a = await env.ctl.CreateVolume(req);
    const b = await env.ctl.CreateVolume(req);
    expect(b.volume).toEqual(a.volume);
    expect((await named(req.name)).map((v) => v.id)).toEqual([a.volume.volume_id]);
  });

  test('the same name with an incompatible size or parameters → ALREADY_EXISTS', async () => {
    const name = env.name();
    await env.ctl.CreateVolume({ name, capacity_range: { required_bytes: GiB }, volume_capabilities: [mount()] });
    const err = await expectCode(
      env.ctl.CreateVolume({ name, capacity_range: { required_bytes: 3 * GiB }, volume_capabilities: [mount()] }),
      status.ALREADY_EXISTS,
    );
    expect(err.details).toMatch(/size 1 GiB/);
    await expectCode(
      env.ctl.CreateVolume({ name, volume_capabilities: [mount()], parameters: { attachMode: 'filesystem' } }),
      status.ALREADY_EXISTS,
    );
    expect(await named(name)).toHaveLength(1);
  });

  test('capacity ranges Cinder cannot meet → OUT_OF_RANGE, and nothing is created', async () => {
    const name = env.name();
    await expectCode(
      env.ctl.CreateVolume({ name, capacity_range: { limit_bytes: GiB / 2 }, volume_capabilities: [mount()] }),
      status.OUT_OF_RANGE,
    );
    await expectCode(
      env.ctl.CreateVolume({
        name,
        capacity_range: { required_bytes: 3 * GiB, limit_bytes: 2 * GiB },
        volume_capabilities: [mount()],
      }),
      status.OUT_OF_RANGE,
    );
    expect(await named(name)).toHaveLength(0);
  });

  test('bad arguments → INVALID_ARGUMENT saying what is wrong', async () => {
    const name = env.name();
    const cases: [object, RegExp][] = [
      [{ volume_capabilities: [mount()] }, /name is required/],
      [{ name }, /volume_capabilities is required/],
      [{ name, volume_capabilities: [{ mount: {} }] }, /access_mode is required/],
      [
        { name, volume_capabilities: [mount(), { access_mode: { mode: 'SINGLE_NODE_WRITER' } }] },
        /volume_capabilities\[1\]: access_type/,
      ],
      [{ name, volume_capabilities: [mount()], parameters: { size: '3' } }, /unknown parameter "size"/],
      [{ name, volume_capabilities: [mount()], parameters: { attachMode: 'vm' } }, /parameter "attachMode"/],
      [{ name, volume_capabilities: [mount('SINGLE_NODE_WRITER', 'ntfs')] }, /fs_type "ntfs" is not supported/],
      [{ name, volume_capabilities: [mount('MULTI_NODE_MULTI_WRITER')] }, /needs access_type block/],
      [{ name, volume_capabilities: [mount()], mutable_parameters: { iops: '100' } }, /unknown parameter "iops"/],
      [
        { name, volume_capabilities: [mount()], parameters: { type: 'no-such-type' } },
        /parameter "type".*no-such-type/,
      ],
      [
        { name, volume_capabilities: [mount()], parameters: { availability: 'no-such-zone' } },
        /parameter "availability"/,
      ],
    ];
    for (const [req, message] of cases)
      expect((await expectCode(env.ctl.CreateVolume(req), status.INVALID_ARGUMENT)).details).toMatch(message);
    expect(await named(name)).toHaveLength(0);
  });

  test('topology: the first preferred zone Cinder has; requisite zones Cinder lacks → RESOURCE_EXHAUSTED', async () => {
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      volume_capabilities: [mount()],
      accessibility_requirements: {
        requisite: [zone('elsewhere'), zone('nova')],
        preferred: [zone('elsewhere'), zone('nova')],
      },
    });
    expect(volume.accessible_topology).toEqual([zone('nova')]);
    expect((await env.direct.cinder.getVolume(volume.volume_id)).availability_zone).toBe('nova');
    const err = await expectCode(
      env.ctl.CreateVolume({
        name: env.name(),
        volume_capabilities: [mount()],
        accessibility_requirements: { requisite: [zone('mars')], preferred: [] },
      }),
      status.RESOURCE_EXHAUSTED,
    );
    expect(err.details).toMatch(/mars.*Cinder has: nova/);
  });

  test('from a snapshot and from a volume; missing sources → NOT_FOUND; smaller than the source → OUT_OF_RANGE', async () => {
    const source = await env.create({ capacity_range: { required_bytes: 2 * GiB } });
    const { snapshot } = await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: source.volume_id });
    const fromSnap = await env.create({
      capacity_range: {},
      volume_content_source: { snapshot: { snapshot_id: snapshot.snapshot_id } },
    });
    expect(fromSnap.capacity_bytes).toBe(2 * GiB);
    expect(fromSnap.content_source).toMatchObject({ snapshot: { snapshot_id: snapshot.snapshot_id } });
    expect((await env.direct.cinder.getVolume(fromSnap.volume_id)).snapshot_id).toBe(snapshot.snapshot_id);

    const clone = await env.create({
      capacity_range: { required_bytes: 3 * GiB },
      volume_content_source: { volume: { volume_id: source.volume_id } },
    });
    expect(clone.capacity_bytes).toBe(3 * GiB);
    expect(clone.content_source).toMatchObject({ volume: { volume_id: source.volume_id } });
    expect((await env.direct.cinder.getVolume(clone.volume_id)).source_volid).toBe(source.volume_id);

    const missing = '00000000-0000-4000-8000-000000000000';
    await expectCode(env.create({ volume_content_source: { snapshot: { snapshot_id: missing } } }), status.NOT_FOUND);
    await expectCode(env.create({ volume_content_source: { volume: { volume_id: missing } } }), status.NOT_FOUND);
    await expectCode(
      env.create({
        capacity_range: { limit_bytes: GiB },
        volume_content_source: { volume: { volume_id: source.volume_id } },
      }),
      status.OUT_OF_RANGE,
    );

    // The same name with another source is not the same volume.
    const name = env.name();
    await env.ctl.CreateVolume({
      name,
      volume_capabilities: [mount()],
      volume_content_source: { volume: { volume_id: source.volume_id } },
    });
    await expectCode(env.ctl.CreateVolume({ name, volume_capabilities: [mount()] }), status.ALREADY_EXISTS);
  });

  test('over the tenant quota → RESOURCE_EXHAUSTED with Cinder’s message', async () => {
    const name = env.name();
    const err = await expectCode(
      env.ctl.CreateVolume({ name, capacity_range: { required_bytes: 20_000 * GiB }, volume_capabilities: [mount()] }),
      status.RESOURCE_EXHAUSTED,
    );
    expect(err.details).toMatch(/quota|exceed/i);
    expect(await named(name)).toHaveLength(0);
  });

  test('a volume Cinder fails to create is deleted, and the error carries Cinder’s reason', async () => {
    // Within quota but beyond even what deploy/local's over-subscribed Ceph backend may promise (6 GiB × 400): the
    // scheduler refuses it.
    const name = env.name();
    const err = await expectCode(
      env.ctl.CreateVolume({ name, capacity_range: { required_bytes: 5000 * GiB }, volume_capabilities: [mount()] }),
      status.RESOURCE_EXHAUSTED,
    );
    expect(err.details).toMatch(/so it was deleted: .*backend/i);
    expect(await named(name)).toHaveLength(0);
  });

  test('concurrent CreateVolume with one name yields one volume', async () => {
    const req = { name: env.name(), volume_capabilities: [mount()] };
    const results = await Promise.allSettled(Array.from({ length: 6 }, () => env.ctl.CreateVolume(req)));
    const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.volume.volume_id] : []));
    const codes = results.flatMap((r) => (r.status === 'rejected' ? [r.reason.code] : []));
    expect(ok.length).toBeGreaterThanOrEqual(1);
    expect(new Set(ok).size).toBe(1);
    expect(codes.every((c) => c === status.ABORTED)).toBe(true);
    expect((await named(req.name)).map((v) => v.id)).toEqual([ok[0]]);
    expect((await env.ctl.CreateVolume(req)).volume.volume_id).toBe(ok[0]);
  });

  test('a deadline that passes mid-wait → DEADLINE_EXCEEDED; the retry returns that same volume', async () => {
    const req = { name: env.name(), volume_capabilities: [mount()] };
    await expectCode(env.ctl.CreateVolume(req, { deadlineMs: 150 }), status.DEADLINE_EXCEEDED);
    // the first call may still hold the name's lock (ABORTED): the retry comes as a CO's would
    const { volume } = await asCo(() => env.ctl.CreateVolume(req));
    expect((await named(req.name)).map((v) => v.id)).toEqual([volume.volume_id]);
  });
});

describe('DeleteVolume', () => {
  test('deletes it for good; the repeat and an unknown id are OK; no id → INVALID_ARGUMENT', async () => {
    const v = await env.create();
    await env.ctl.DeleteVolume({ volume_id: v.volume_id });
    expect(await env.direct.cinder.findVolume(v.volume_id)).toBeUndefined();
    await env.ctl.DeleteVolume({ volume_id: v.volume_id });
    await env.ctl.DeleteVolume({ volume_id: '00000000-0000-4000-8000-000000000000' });
    await expectCode(env.ctl.DeleteVolume({}), status.INVALID_ARGUMENT);
  });

  test('still published → FAILED_PRECONDITION naming the node, volume untouched', async () => {
    const v = await env.create();
    await env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'node-del', volume_capability: mount() });
    const err = await expectCode(env.ctl.DeleteVolume({ volume_id: v.volume_id }), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/node-del/);
    expect((await env.direct.cinder.getVolume(v.volume_id)).status).toBe('in-use');
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-del' });
    await env.ctl.DeleteVolume({ volume_id: v.volume_id });
  });

  test('with snapshots → FAILED_PRECONDITION naming them', async () => {
    const v = await env.create();
    const { snapshot } = await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: v.volume_id });
    const err = await expectCode(env.ctl.DeleteVolume({ volume_id: v.volume_id }), status.FAILED_PRECONDITION);
    expect(err.details).toContain(snapshot.snapshot_id);
    await env.ctl.DeleteSnapshot({ snapshot_id: snapshot.snapshot_id });
    await env.ctl.DeleteVolume({ volume_id: v.volume_id });
  });
});
