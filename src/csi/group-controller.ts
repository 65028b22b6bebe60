import type { GroupControllerHandlers } from './generated/csi/v1/GroupController.js';
import type { ServiceSpecs } from './service-specs.js';
import {
  createGroupSnapshot,
  deleteGroupSnapshot,
  getGroupSnapshot,
  GroupSnapshotOps,
} from './controller/group-snapshots.js';
import { TenantScope } from './controller/scope.js';
import type { Tenants } from './controller/tenants.js';

export interface GroupControllerOptions {
  tenants: Tenants;
  /** Tag on every member snapshot this driver cuts (ListSnapshots shows only these). */
  clusterId: string;
}

/** The GroupController service: volume group snapshots on Cinder's generic volume groups. */
export function groupControllerService(o: GroupControllerOptions): ServiceSpecs<GroupControllerHandlers> {
  const ops = new GroupSnapshotOps(o.clusterId);
  const scope = new TenantScope(o.tenants);
  /** A group snapshot and its members are in one cloud, that of the ids the request names. */
  const groupIds = (r: { group_snapshot_id?: string; snapshot_ids?: string[] }) => [
    r.group_snapshot_id,
    ...(r.snapshot_ids ?? []),
  ];
  const local = ([groupSnapshotId, ...snapshotIds]: string[]) => ({
    group_snapshot_id: groupSnapshotId!,
    snapshot_ids: snapshotIds,
  });
  return {
    GroupControllerGetCapabilities: {
      handler: async () => ({ capabilities: [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' } }] }),
    },
    CreateVolumeGroupSnapshot: {
      // the volumes too: no ControllerPublish may attach one between the check that none is in use and the cut
      lockKeys: (r) => [r.name && `group-snapshot-name:${r.name}`, ...(r.source_volume_ids ?? [])],
      handler: (r, ctx) =>
        scope.byIds(r.source_volume_ids ?? [], 'group-snapshotter', r.secrets, ctx, 'not-found', async (t, ids) => ({
          group_snapshot: await createGroupSnapshot(t, { ...r, source_volume_ids: ids }, ops, ctx.signal),
        })),
    },
    DeleteVolumeGroupSnapshot: {
      lockKeys: (r) => [r.group_snapshot_id],
      handler: (r, ctx) =>
        scope.byIds(groupIds(r), 'group-snapshotter', r.secrets, ctx, 'refuse', (t, ids) =>
          deleteGroupSnapshot(t, local(ids), ops, ctx.signal).then(() => ({})),
        ),
    },
    GetVolumeGroupSnapshot: {
      handler: (r, ctx) =>
        scope.byIds(groupIds(r), 'group-snapshotter', r.secrets, ctx, 'not-found', async (t, ids) => ({
          group_snapshot: await getGroupSnapshot(t, local(ids), ctx.signal),
        })),
    },
  };
}
