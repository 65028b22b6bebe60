import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { pollUntil } from '../../../src/openstack/wait.js';
import { expectCode } from '../../helpers/csi-client.js';
import { startTestDriver } from '../../../harness/driver.js';
import { GiB, block, controllerEnv, mount } from './fixtures.js';

// A cluster id of its own, so ListVolumes shows exactly this file's volumes.
const clusterId = `ctl-list-${randomBytes(3).toString('hex')}`;
const env = controllerEnv('inspect', { options: { clusterId } });
const MISSING = '00000000-0000-4000-8000-000000000000';

describe('ListVolumes', () => {
  const ids: string[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 3; i++) ids.push((await env.create()).volume_id);
    await env.ctl.ControllerPublishVolume({ volume_id: ids[0], node_id: 'node-l', volume_capability: mount() });
  });
  afterAll(() => env.ctl.ControllerUnpublishVolume({ volume_id: ids[0], node_id: 'node-l' }));

  test('pages with tokens through exactly this cluster’s volumes, with published nodes and condition', async () => {
    const first = await env.ctl.ListVolumes({ max_entries: 2 });
    expect(first.entries).toHaveLength(2);
    expect(first.next_token).not.toBe('');
    const second = await env.ctl.ListVolumes({ max_entries: 2, starting_token: first.next_token });
    expect(second.entries).toHaveLength(1);
    expect(second.next_token).toBe('');
    const entries = [...first.entries, ...second.entries];
    expect(entries.map((e: any) => e.volume.volume_id).sort()).toEqual([...ids].sort());
    const published = entries.find((e: any) => e.volume.volume_id === ids[0]);
    expect(published.status.published_node_ids).toEqual(['node-l']);
    expect(published.status.volume_condition).toEqual({ abnormal: false, message: 'volume is in-use' });

    const all = await env.ctl.ListVolumes({});
    expect(all.entries.map((e: any) => e.volume.volume_id).sort()).toEqual([...ids].sort());
    expect(all.next_token).toBe('');
  });

  test('another cluster id sees none of them', async () => {
    const other = await startTestDriver({ options: { clusterId: `${clusterId}-other` } });
    try {
      const seen = (await other.client.Controller.ListVolumes({})).entries.map((e: any) => e.volume.volume_id);
      expect(seen.filter((id: string) => ids.includes(id))).toEqual([]);
    } finally {
      await other.stop();
    }
  });

  test('a token that is not ours, or whose volume is gone → ABORTED; negative max_entries → INVALID_ARGUMENT', async () => {
    await expectCode(env.ctl.ListVolumes({ starting_token: 'garbage' }), status.ABORTED);
    await expectCode(env.ctl.ListVolumes({ starting_token: MISSING }), status.ABORTED);
    await expectCode(env.ctl.ListVolumes({ max_entries: -1 }), status.INVALID_ARGUMENT);
  });
});

describe('ControllerGetVolume', () => {
  test('the volume, where it is published, and its condition; NOT_FOUND when gone', async () => {
    const v = await env.create({ capacity_range: { required_bytes: 2 * GiB } });
    const r = await env.ctl.ControllerGetVolume({ volume_id: v.volume_id });
    expect(r.volume).toEqual(v);
    expect(r.status).toEqual({
      published_node_ids: [],
      volume_condition: { abnormal: false, message: 'volume is available' },
    });
    await env.ctl.DeleteVolume({ volume_id: v.volume_id });
    await expectCode(env.ctl.ControllerGetVolume({ volume_id: v.volume_id }), status.NOT_FOUND);
    await expectCode(env.ctl.ControllerGetVolume({}), status.INVALID_ARGUMENT);
  });

  test('a volume Cinder failed reports an abnormal condition', async () => {
    // Straight to Cinder, past the driver (which would delete it): too big for the backend.
    const made = await env.direct.cinder.createVolume({ name: env.name('broken'), size: 5000, metadata: {} });
    await pollUntil(
      () => env.direct.cinder.getVolume(made.id),
      (v) => v.status !== 'creating',
      { what: 'the broken volume', signal: AbortSignal.timeout(30_000) },
    );
    const r = await env.ctl.ControllerGetVolume({ volume_id: made.id });
    expect(r.status.volume_condition).toEqual({ abnormal: true, message: `Cinder reports volume ${made.id} as error` });
  });
});

describe('ValidateVolumeCapabilities', () => {
  test('confirms what the volume can do, explains what it cannot; NOT_FOUND and INVALID_ARGUMENT', async () => {
    const v = await env.create();
    const ok = await env.ctl.ValidateVolumeCapabilities({
      volume_id: v.volume_id,
      volume_capabilities: [mount(), block('SINGLE_NODE_MULTI_WRITER')],
      parameters: { type: 'ceph' },
    });
    expect(ok.confirmed.volume_capabilities).toHaveLength(2);
    expect(ok.confirmed.parameters).toEqual({ type: 'ceph' });

    const multi = await env.ctl.ValidateVolumeCapabilities({
      volume_id: v.volume_id,
      volume_capabilities: [block('MULTI_NODE_MULTI_WRITER')],
    });
    expect(multi.confirmed).toBeNull();
    expect(multi.message).toMatch(/multiattach/);
    const badParam = await env.ctl.ValidateVolumeCapabilities({
      volume_id: v.volume_id,
      volume_capabilities: [mount()],
      parameters: { speed: 'fast' },
    });
    expect(badParam.confirmed).toBeNull();
    expect(badParam.message).toMatch(/unknown parameter "speed"/);

    await expectCode(
      env.ctl.ValidateVolumeCapabilities({ volume_id: MISSING, volume_capabilities: [mount()] }),
      status.NOT_FOUND,
    );
    await expectCode(env.ctl.ValidateVolumeCapabilities({ volume_id: v.volume_id }), status.INVALID_ARGUMENT);
    await expectCode(env.ctl.ValidateVolumeCapabilities({ volume_capabilities: [mount()] }), status.INVALID_ARGUMENT);
  });
});

describe('GetCapacity', () => {
  const quotaLeft = async () => {
    const project = await env.direct.cinder.session.projectId();
    const q = (await env.direct.cinder.quotaUsage(project)).gigabytes!;
    return (q.limit - q.in_use - q.reserved) * GiB;
  };

  test('the tenant’s gigabytes quota left, in bytes, with size bounds', async () => {
    const before = await quotaLeft();
    const r = await env.ctl.GetCapacity({ volume_capabilities: [mount()], parameters: { type: 'ceph' } });
    const after = await quotaLeft();
    // Other tests share the tenant: the answer lies between what was left just before and just after.
    expect(r.available_capacity).toBeGreaterThanOrEqual(Math.min(before, after));
    expect(r.available_capacity).toBeLessThanOrEqual(Math.max(before, after));
    expect(r.available_capacity % GiB).toBe(0);
    expect(r.minimum_volume_size).toEqual({ value: GiB });
    expect(r.maximum_volume_size.value).toBe(r.available_capacity);
  });

  test('nothing for capabilities it cannot serve or zones Cinder lacks; unknown parameters → INVALID_ARGUMENT', async () => {
    expect(
      (await env.ctl.GetCapacity({ volume_capabilities: [mount('MULTI_NODE_MULTI_WRITER')] })).available_capacity,
    ).toBe(0);
    expect(
      (
        await env.ctl.GetCapacity({
          accessible_topology: { segments: { 'topology.cinder.csi.stackube.io/zone': 'mars' } },
        })
      ).available_capacity,
    ).toBe(0);
    expect(
      (
        await env.ctl.GetCapacity({
          accessible_topology: { segments: { 'topology.cinder.csi.stackube.io/zone': 'nova' } },
        })
      ).available_capacity,
    ).toBeGreaterThan(0);
    await expectCode(env.ctl.GetCapacity({ parameters: { speed: 'fast' } }), status.INVALID_ARGUMENT);
  });
});

describe('ControllerGetCapabilities', () => {
  test('lists exactly the RPCs this controller serves', async () => {
    const { capabilities } = await env.ctl.ControllerGetCapabilities({});
    expect(capabilities.map((c: any) => c.rpc.type).sort()).toEqual(
      [
        'CREATE_DELETE_VOLUME',
        'PUBLISH_UNPUBLISH_VOLUME',
        'LIST_VOLUMES',
        'GET_CAPACITY',
        'CREATE_DELETE_SNAPSHOT',
        'LIST_SNAPSHOTS',
        'CLONE_VOLUME',
        'PUBLISH_READONLY',
        'EXPAND_VOLUME',
        'LIST_VOLUMES_PUBLISHED_NODES',
        'VOLUME_CONDITION',
        'GET_VOLUME',
        'SINGLE_NODE_MULTI_WRITER',
        'MODIFY_VOLUME',
        'GET_SNAPSHOT',
      ].sort(),
    );
  });
});
