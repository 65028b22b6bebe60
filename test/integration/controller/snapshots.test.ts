import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { expectCode } from '../../helpers/csi-client.js';
import { CEPH_CONF, CEPH_KEYRING } from '../../../harness/local-stack.js';
import { GiB, controllerEnv } from './fixtures.js';

const clusterId = `ctl-snap-${randomBytes(3).toString('hex')}`;
const env = controllerEnv('snap', { options: { clusterId } });
const MISSING = '00000000-0000-4000-8000-000000000000';

describe('CreateSnapshot', () => {
  test('cuts a ready snapshot; the same request again returns it; same name of another volume → ALREADY_EXISTS', async () => {
    const v = await env.create({ capacity_range: { required_bytes: 2 * GiB } });
    const req = {
      name: env.name('s'),
      source_volume_id: v.volume_id,
      parameters: { 'csi.storage.k8s.io/volumesnapshot/name': 'snap-1' },
    };
    const t0 = Date.now();
    const { snapshot } = await env.ctl.CreateSnapshot(req);
    expect(snapshot).toMatchObject({ source_volume_id: v.volume_id, size_bytes: 2 * GiB, ready_to_use: true });
    const created = Number(snapshot.creation_time.seconds) * 1000;
    expect(Math.abs(created - t0)).toBeLessThan(60_000);
    const s = await env.direct.cinder.getSnapshot(snapshot.snapshot_id);
    expect(s).toMatchObject({ name: req.name, status: 'available', volume_id: v.volume_id });
    expect(s.metadata).toMatchObject({
      'cinder.csi.stackube.io/cluster': clusterId,
      'csi.storage.k8s.io/volumesnapshot/name': 'snap-1',
    });

    expect((await env.ctl.CreateSnapshot(req)).snapshot).toEqual(snapshot);
    expect(await env.direct.cinder.snapshotsNamed(req.name)).toHaveLength(1);

    const other = await env.create();
    await expectCode(env.ctl.CreateSnapshot({ ...req, source_volume_id: other.volume_id }), status.ALREADY_EXISTS);
  });

  test('of an in-use volume too (RBD snapshots at the image level)', async () => {
    const v = await env.create();
    await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-s',
      volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
    });
    try {
      const { snapshot } = await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: v.volume_id });
      expect(snapshot.ready_to_use).toBe(true);
    } finally {
      await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-s' });
    }
  });

  test('missing source → NOT_FOUND; missing name or source, unknown parameter → INVALID_ARGUMENT', async () => {
    const name = env.name('s');
    await expectCode(env.ctl.CreateSnapshot({ name, source_volume_id: MISSING }), status.NOT_FOUND);
    await expectCode(env.ctl.CreateSnapshot({ source_volume_id: MISSING }), status.INVALID_ARGUMENT);
    await expectCode(env.ctl.CreateSnapshot({ name }), status.INVALID_ARGUMENT);
    const err = await expectCode(
      env.ctl.CreateSnapshot({ name, source_volume_id: MISSING, parameters: { retention: '5d' } }),
      status.INVALID_ARGUMENT,
    );
    expect(err.details).toMatch(/unknown parameter "retention"/);
    expect(await env.direct.cinder.snapshotsNamed(name)).toHaveLength(0);
  });
});

describe('ListSnapshots and GetSnapshot', () => {
  const volumes: string[] = [];
  const snaps: string[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 2; i++) volumes.push((await env.create()).volume_id);
    for (const v of [volumes[0], volumes[0], volumes[1]])
      snaps.push((await env.ctl.CreateSnapshot({ name: env.name('ls'), source_volume_id: v })).snapshot.snapshot_id);
  });

  const idsOf = (r: any) => r.entries.map((e: any) => e.snapshot.snapshot_id);

  test('by id, by source volume, and all of this cluster’s with paging', async () => {
    expect(idsOf(await env.ctl.ListSnapshots({ snapshot_id: snaps[2] }))).toEqual([snaps[2]]);
    expect(idsOf(await env.ctl.ListSnapshots({ snapshot_id: MISSING }))).toEqual([]);
    expect(idsOf(await env.ctl.ListSnapshots({ snapshot_id: snaps[2], source_volume_id: volumes[0] }))).toEqual([]);
    expect(idsOf(await env.ctl.ListSnapshots({ source_volume_id: volumes[0] })).sort()).toEqual(
      [snaps[0], snaps[1]].sort(),
    );
    expect(idsOf(await env.ctl.ListSnapshots({ source_volume_id: MISSING }))).toEqual([]);

    // This file's cluster id tags exactly the snapshots it made (the first describe's too).
    const all = await env.ctl.ListSnapshots({});
    expect(idsOf(all)).toEqual(expect.arrayContaining(snaps));
    expect(
      (await Promise.all(idsOf(all).map((id: string) => env.direct.cinder.getSnapshot(id)))).every((s) =>
        s.name?.startsWith(env.prefix),
      ),
    ).toBe(true);
    const pages: string[] = [];
    let token = '';
    do {
      const page = await env.ctl.ListSnapshots({ max_entries: 2, starting_token: token });
      expect(page.entries.length).toBeLessThanOrEqual(2);
      pages.push(...idsOf(page));
      token = page.next_token;
    } while (token);
    expect(pages.sort()).toEqual(idsOf(all).sort());
  });

  test('bad token → ABORTED; negative max_entries → INVALID_ARGUMENT', async () => {
    await expectCode(env.ctl.ListSnapshots({ starting_token: 'x' }), status.ABORTED);
    await expectCode(env.ctl.ListSnapshots({ starting_token: MISSING }), status.ABORTED);
    await expectCode(env.ctl.ListSnapshots({ max_entries: -2 }), status.INVALID_ARGUMENT);
  });

  test('GetSnapshot: current state; NOT_FOUND when gone', async () => {
    const r = await env.ctl.GetSnapshot({ snapshot_id: snaps[0] });
    expect(r.snapshot).toMatchObject({ snapshot_id: snaps[0], source_volume_id: volumes[0], ready_to_use: true });
    await expectCode(env.ctl.GetSnapshot({ snapshot_id: MISSING }), status.NOT_FOUND);
  });
});

describe('DeleteSnapshot', () => {
  test('deletes for good; repeat and unknown ids are OK; no id → INVALID_ARGUMENT', async () => {
    const v = await env.create();
    const { snapshot } = await env.ctl.CreateSnapshot({ name: env.name('d'), source_volume_id: v.volume_id });
    await env.ctl.DeleteSnapshot({ snapshot_id: snapshot.snapshot_id });
    expect(await env.direct.cinder.findSnapshot(snapshot.snapshot_id)).toBeUndefined();
    await env.ctl.DeleteSnapshot({ snapshot_id: snapshot.snapshot_id });
    await env.ctl.DeleteSnapshot({ snapshot_id: MISSING });
    await expectCode(env.ctl.DeleteSnapshot({}), status.INVALID_ARGUMENT);
  });

  test('a snapshot a volume was cloned from can be deleted; the clone keeps its data (RBD clone v2)', async () => {
    const v = await env.create();
    const { snapshot } = await env.ctl.CreateSnapshot({ name: env.name('d'), source_volume_id: v.volume_id });
    const clone = await env.create({ volume_content_source: { snapshot: { snapshot_id: snapshot.snapshot_id } } });
    await env.ctl.DeleteSnapshot({ snapshot_id: snapshot.snapshot_id });
    expect(await env.direct.cinder.findSnapshot(snapshot.snapshot_id)).toBeUndefined();
    expect((await env.direct.cinder.getVolume(clone.volume_id)).status).toBe('available');
    // The clone's RBD image is still readable (its parent snapshot went to the RBD trash, not away).
    const { stdout } = await execa('rbd', [
      '-c',
      CEPH_CONF,
      '--id',
      'cinder',
      '--keyring',
      CEPH_KEYRING,
      'info',
      `volumes/volume-${clone.volume_id}`,
    ]);
    expect(stdout).toMatch(/size 1 GiB/);
  });
});
