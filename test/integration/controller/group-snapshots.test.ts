import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import type { Cinder } from '../../../src/openstack/cinder.js';
import { DRIVER_NAME } from '../../../src/package-info.js';
import { expectCode } from '../../helpers/csi-client.js';
import { secretCinder, type DirectCinder } from '../../../harness/cinder.js';
import { CEPH_CONF, CEPH_KEYRING, CLOUD_CONF, localSecret, scratchDir } from '../../../harness/local-stack.js';
import { startDriverProcess } from '../../helpers/plugin-process.js';
import { controllerEnv, GiB, mount } from './fixtures.js';

/**
 * Volume group snapshots on the real Cinder and Ceph: the Cinder group the flow shares per project, the
 * member snapshots as plain CSI snapshots, restores of each member with the data written before the cut,
 * tenant isolation, in-use volumes refused, and nothing left behind — also when the flow fails or the
 * driver is killed in the middle of it.
 */
// the cluster id carries the prefix: the driver's groups are named after it, and cleaned up with it
const env = controllerEnv('group', (prefix) => ({ options: { clusterId: `${prefix}c` } }));
const clusterId = `${env.prefix}c`;
const groupCtl = () => env.driver.client.GroupController;
const groupPrefix = `${DRIVER_NAME}/${clusterId}/`;

/** Write / read the start of a volume's RBD image straight through librbd (as client.cinder). */
const RBD_IO = `
import rados, rbd, sys
op, image, data = sys.argv[1], sys.argv[2], sys.argv[3]
with rados.Rados(conffile=sys.argv[4], rados_id='cinder', conf={'keyring': sys.argv[5]}) as c:
    with c.open_ioctx('volumes') as io, rbd.Image(io, image) as img:
        if op == 'write':
            img.write(data.encode(), 0)
        else:
            sys.stdout.write(img.read(0, int(data)).decode(errors='replace'))
`;
const rbdIo = async (op: 'write' | 'read', volumeId: string, data: string) =>
  (await execa('/usr/bin/python3', ['-c', RBD_IO, op, `volume-${volumeId}`, data, CEPH_CONF, CEPH_KEYRING])).stdout;
const writeMarker = (volumeId: string, text: string) => rbdIo('write', volumeId, text.padEnd(64, '.'));
const readMarker = (volumeId: string) => rbdIo('read', volumeId, '64');

/** What of this test's is in Cinder: its group snapshots, this cluster's groups, volumes in a group. */
async function leftovers(cinder: Cinder, names: string[]): Promise<string[]> {
  const groups = (await cinder.listGroups()).filter((g) => g.name?.startsWith(groupPrefix));
  const gss = (await Promise.all(names.map((n) => cinder.groupSnapshotsNamed(n)))).flat();
  const inGroups = (await cinder.listVolumes({})).filter((v) => v.group_id && groups.some((g) => g.id === v.group_id));
  return [
    ...groups.map((g) => `group ${g.name} ${g.id} (${g.status})`),
    ...gss.map((g) => `group snapshot ${g.name} ${g.id} (${g.status})`),
    ...inGroups.map((v) => `volume ${v.id} still in group ${v.group_id}`),
  ];
}

/** Until nothing is left (Cinder finishes a group's deletion a moment after it answers). */
async function expectNothingLeft(names: string[]): Promise<void> {
  let left: string[] = [];
  for (let i = 0; i < 40; i++) {
    left = await leftovers(env.direct.cinder, names);
    if (!left.length) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(left).toEqual([]);
}

describe('CreateVolumeGroupSnapshot / GetVolumeGroupSnapshot / DeleteVolumeGroupSnapshot', () => {
  test('the plugin offers the GroupController service and its one capability', async () => {
    const { capabilities } = await env.driver.client.Identity.GetPluginCapabilities({});
    expect(capabilities.map((c: { service?: { type: string } }) => c.service?.type)).toContain(
      'GROUP_CONTROLLER_SERVICE',
    );
    expect((await groupCtl().GroupControllerGetCapabilities({})).capabilities).toEqual([
      { rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' }, type: 'rpc' },
    ]);
  });

  test('three volumes: cut together, each member restored with the data written before the cut; idempotent; deleted with nothing left', async () => {
    const volumes = await Promise.all([0, 1, 2].map(() => env.create()));
    for (const [i, v] of volumes.entries()) await writeMarker(v.volume_id, `before the cut, volume ${i}`);
    const name = env.name('g');
    const req = {
      name,
      source_volume_ids: volumes.map((v) => v.volume_id),
      parameters: { 'csi.storage.k8s.io/volumegroupsnapshot/name': 'vgs-1' },
    };
    const { group_snapshot: gs } = await groupCtl().CreateVolumeGroupSnapshot(req);
    expect(gs).toMatchObject({ ready_to_use: true });
    expect(gs.snapshots.map((s: { source_volume_id: string }) => s.source_volume_id).sort()).toEqual(
      req.source_volume_ids.sort(),
    );
    for (const s of gs.snapshots)
      expect(s).toMatchObject({ group_snapshot_id: gs.group_snapshot_id, ready_to_use: true, size_bytes: GiB });
    for (const [i, v] of volumes.entries()) await writeMarker(v.volume_id, `after the cut, volume ${i}`);

    // the same request again: the same group snapshot; the same name for other volumes: ALREADY_EXISTS
    expect((await groupCtl().CreateVolumeGroupSnapshot(req)).group_snapshot).toEqual(gs);
    expect(await env.direct.cinder.groupSnapshotsNamed(name)).toHaveLength(1);
    await expectCode(
      groupCtl().CreateVolumeGroupSnapshot({ ...req, source_volume_ids: req.source_volume_ids.slice(1) }),
      status.ALREADY_EXISTS,
    );

    // the volumes are free again: in no group, deletable once their snapshots are gone
    for (const v of volumes) expect((await env.direct.cinder.getVolume(v.volume_id)).group_id ?? null).toBeNull();

    // members are ordinary CSI snapshots: listed, tagged, restorable; deleted only with the group
    const listed = (await env.ctl.ListSnapshots({})).entries.map(
      (e: { snapshot: { snapshot_id: string; group_snapshot_id: string } }) => e.snapshot,
    );
    for (const s of gs.snapshots)
      expect(listed).toContainEqual(
        expect.objectContaining({ snapshot_id: s.snapshot_id, group_snapshot_id: gs.group_snapshot_id }),
      );
    const member = await env.direct.cinder.getSnapshot(gs.snapshots[0].snapshot_id);
    expect(member.metadata).toMatchObject({
      'cinder.csi.stackube.io/cluster': clusterId,
      'csi.storage.k8s.io/volumegroupsnapshot/name': 'vgs-1',
    });
    const refused = await expectCode(
      env.ctl.DeleteSnapshot({ snapshot_id: gs.snapshots[0].snapshot_id }),
      status.FAILED_PRECONDITION,
    );
    expect(refused.details).toMatch(/member of group snapshot .*DeleteVolumeGroupSnapshot/);

    const restored: string[] = [];
    for (const s of gs.snapshots) {
      const { volume } = await env.ctl.CreateVolume({
        name: env.name('r'),
        capacity_range: { required_bytes: GiB },
        volume_capabilities: [mount()],
        volume_content_source: { snapshot: { snapshot_id: s.snapshot_id } },
      });
      restored.push(volume.volume_id);
      const i = volumes.findIndex((v) => v.volume_id === s.source_volume_id);
      expect({ i, data: await readMarker(volume.volume_id) }).toEqual({
        i,
        data: `before the cut, volume ${i}`.padEnd(64, '.'),
      });
    }

    const ids = gs.snapshots.map((s: { snapshot_id: string }) => s.snapshot_id);
    expect(
      (await groupCtl().GetVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids }))
        .group_snapshot,
    ).toEqual(gs);
    await expectCode(
      groupCtl().GetVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids.slice(1) }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids.slice(1) }),
      status.INVALID_ARGUMENT,
    );

    // clones of the members keep the group snapshot from going (RBD); without them it goes, members with it
    for (const id of restored) await env.ctl.DeleteVolume({ volume_id: id });
    await groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids });
    await expectCode(
      groupCtl().GetVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids }),
      status.NOT_FOUND,
    );
    await groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: gs.group_snapshot_id, snapshot_ids: ids });
    for (const id of ids) expect(await env.direct.cinder.findSnapshot(id)).toBeUndefined();
    await expectNothingLeft([name]);
    for (const v of volumes) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
  }, 180_000);

  test("two group snapshots share the project's one group while both exist; it goes with the last of them", async () => {
    const [a, b] = await Promise.all([env.create(), env.create()]);
    const names = [env.name('g'), env.name('g')];
    const first = (
      await groupCtl().CreateVolumeGroupSnapshot({ name: names[0], source_volume_ids: [a.volume_id, b.volume_id] })
    ).group_snapshot;
    const second = (await groupCtl().CreateVolumeGroupSnapshot({ name: names[1], source_volume_ids: [a.volume_id] }))
      .group_snapshot;
    expect(second.snapshots).toHaveLength(1);
    const groups = (await env.direct.cinder.listGroups()).filter((g) => g.name?.startsWith(groupPrefix));
    expect(groups).toHaveLength(1);
    await groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: first.group_snapshot_id });
    expect((await env.direct.cinder.listGroups()).filter((g) => g.name?.startsWith(groupPrefix))).toHaveLength(1);
    await groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: second.group_snapshot_id });
    await expectNothingLeft(names);
    for (const v of [a, b]) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
  }, 120_000);

  describe('refusals: nothing made, nothing left', () => {
    let tenantB: DirectCinder;
    beforeAll(async () => {
      tenantB = await secretCinder('tenant-b');
    });
    afterAll(async () => tenantB?.close());

    test("a volume of another tenant's → NOT_FOUND", async () => {
      const mine = await env.create();
      const theirs = await tenantB.cinder.createVolume({ name: env.name('b'), size: 1, metadata: {} });
      try {
        const name = env.name('g');
        const err = await expectCode(
          groupCtl().CreateVolumeGroupSnapshot({ name, source_volume_ids: [mine.volume_id, theirs.id] }),
          status.NOT_FOUND,
        );
        expect(err.details).toContain(theirs.id);
        await expectNothingLeft([name]);
      } finally {
        for (let i = 0; i < 40 && (await tenantB.cinder.getVolume(theirs.id)).status === 'creating'; i++)
          await new Promise((r) => setTimeout(r, 250));
        await tenantB.cinder.deleteVolume(theirs.id);
        await env.ctl.DeleteVolume({ volume_id: mine.volume_id });
      }
    });

    test('an attached (in-use) volume → FAILED_PRECONDITION: the RBD backend cuts member by member', async () => {
      const [a, b] = await Promise.all([env.create(), env.create()]);
      await env.ctl.ControllerPublishVolume({ volume_id: a.volume_id, node_id: 'node-g', volume_capability: mount() });
      try {
        const name = env.name('g');
        const err = await expectCode(
          groupCtl().CreateVolumeGroupSnapshot({ name, source_volume_ids: [a.volume_id, b.volume_id] }),
          status.FAILED_PRECONDITION,
        );
        expect(err.details).toMatch(new RegExp(`${a.volume_id} \\(in-use\\).*write-order consistent`));
        await expectNothingLeft([name]);
      } finally {
        await env.ctl.ControllerUnpublishVolume({ volume_id: a.volume_id, node_id: 'node-g' });
        for (const v of [a, b]) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
      }
    });

    test("a volume in a group of the tenant's own → FAILED_PRECONDITION, and the flow's own group goes again", async () => {
      const [a, b] = await Promise.all([env.create(), env.create()]);
      const own = await env.direct.cinder.createGroup({
        name: env.name('own'),
        description: "the tenant's",
        group_type: 'stackube-group',
        volume_types: ['ceph'],
      });
      try {
        for (let i = 0; i < 40 && (await env.direct.cinder.findGroup(own.id))?.status !== 'available'; i++)
          await new Promise((r) => setTimeout(r, 250));
        await env.direct.cinder.updateGroupVolumes(own.id, { add: [b.volume_id] });
        for (let i = 0; i < 40 && (await env.direct.cinder.getVolume(b.volume_id)).group_id !== own.id; i++)
          await new Promise((r) => setTimeout(r, 250));
        const name = env.name('g');
        const err = await expectCode(
          groupCtl().CreateVolumeGroupSnapshot({ name, source_volume_ids: [a.volume_id, b.volume_id] }),
          status.FAILED_PRECONDITION,
        );
        expect(err.details).toMatch(/another volume group/);
        await expectNothingLeft([name]);
      } finally {
        await env.direct.cinder.updateGroupVolumes(own.id, { remove: [b.volume_id] });
        for (let i = 0; i < 40 && (await env.direct.cinder.getVolume(b.volume_id)).group_id; i++)
          await new Promise((r) => setTimeout(r, 250));
        await env.direct.cinder.deleteGroup(own.id);
        for (const v of [a, b]) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
      }
    }, 60_000);

    test('bad requests → INVALID_ARGUMENT; a group type that does not exist → FAILED_PRECONDITION', async () => {
      const v = await env.create();
      const ids = [v.volume_id];
      await expectCode(groupCtl().CreateVolumeGroupSnapshot({ source_volume_ids: ids }), status.INVALID_ARGUMENT);
      await expectCode(
        groupCtl().CreateVolumeGroupSnapshot({ name: env.name('g'), source_volume_ids: [] }),
        status.INVALID_ARGUMENT,
      );
      await expectCode(
        groupCtl().CreateVolumeGroupSnapshot({ name: env.name('g'), source_volume_ids: [v.volume_id, v.volume_id] }),
        status.INVALID_ARGUMENT,
      );
      const unknown = await expectCode(
        groupCtl().CreateVolumeGroupSnapshot({
          name: env.name('g'),
          source_volume_ids: ids,
          parameters: { consistency: 'crash' },
        }),
        status.INVALID_ARGUMENT,
      );
      expect(unknown.details).toMatch(/unknown parameter "consistency"/);
      const noType = await expectCode(
        groupCtl().CreateVolumeGroupSnapshot({
          name: env.name('g'),
          source_volume_ids: ids,
          parameters: { groupType: 'no-such-group-type' },
        }),
        status.FAILED_PRECONDITION,
      );
      expect(noType.details).toMatch(/group type "no-such-group-type"/);
      await expectCode(
        groupCtl().GetVolumeGroupSnapshot({ group_snapshot_id: '00000000-0000-4000-8000-000000000000' }),
        status.NOT_FOUND,
      );
      await groupCtl().DeleteVolumeGroupSnapshot({ group_snapshot_id: '00000000-0000-4000-8000-000000000000' });
      await expectCode(groupCtl().DeleteVolumeGroupSnapshot({}), status.INVALID_ARGUMENT);
      await env.ctl.DeleteVolume({ volume_id: v.volume_id });
    });
  });
});

describe('a failure or a kill in the middle of the flow', () => {
  const socket = join(scratchDir('group-crash'), 'csi.sock');
  const processEnv = { CSI_MODE: 'controller', CSI_CONFIG: CLOUD_CONF, CLUSTER_ID: clusterId };
  const creds = localSecret('tenant-a');

  test('an injected failure after the group snapshot was asked for: the call fails and undoes it all', async () => {
    const [a, b] = await Promise.all([env.create(), env.create()]);
    const driver = await startDriverProcess(socket, processEnv, 'group-snapshot:posted=fail');
    try {
      const name = env.name('g');
      await expectCode(
        driver.csi.GroupController.CreateVolumeGroupSnapshot({
          name,
          source_volume_ids: [a.volume_id, b.volume_id],
          secrets: creds,
        }),
        status.INTERNAL,
      );
      await expectNothingLeft([name]);
      expect((await env.direct.cinder.listSnapshots({ volumeId: a.volume_id })).length).toBe(0);
    } finally {
      await driver.stop();
      for (const v of [a, b]) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
    }
  }, 60_000);

  test.each(['group-snapshot:filled', 'group-snapshot:posted', 'group-snapshot:tagged'])(
    'killed at %s: the same request to a new driver finishes it; its deletion leaves nothing',
    async (point) => {
      const [a, b] = await Promise.all([env.create(), env.create()]);
      const name = env.name('g');
      const req = { name, source_volume_ids: [a.volume_id, b.volume_id], secrets: creds };
      const doomed = await startDriverProcess(socket, processEnv, `${point}=kill`);
      const outcome = await doomed.csi.GroupController.CreateVolumeGroupSnapshot(req).then(
        () => 'answered',
        (e: { code: number }) => e.code,
      );
      expect(outcome).not.toBe('answered');
      expect(await doomed.ended).toBe('SIGKILL');
      doomed.csi.close();
      const driver = await startDriverProcess(socket, processEnv);
      try {
        const { group_snapshot: gs } = await driver.csi.GroupController.CreateVolumeGroupSnapshot(req);
        expect({
          point,
          ready: gs.ready_to_use,
          of: gs.snapshots.map((s: { source_volume_id: string }) => s.source_volume_id).sort(),
        }).toEqual({ point, ready: true, of: [a.volume_id, b.volume_id].sort() });
        for (const v of [a, b]) expect((await env.direct.cinder.getVolume(v.volume_id)).group_id ?? null).toBeNull();
        await driver.csi.GroupController.DeleteVolumeGroupSnapshot({
          group_snapshot_id: gs.group_snapshot_id,
          secrets: creds,
        });
        await expectNothingLeft([name]);
      } finally {
        await driver.stop();
        for (const v of [a, b]) await env.ctl.DeleteVolume({ volume_id: v.volume_id });
      }
    },
    90_000,
  );
});
