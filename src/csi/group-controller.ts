import type { RpcContext, RpcSpec } from '../server/interceptors.js';
import { createGroupSnapshot, deleteGroupSnapshot, getGroupSnapshot, GroupSnapshotOps } from './controller/group-snapshots.js';
import { asTenant } from './controller/status.js';
import type { Tenant, Tenants } from './controller/tenants.js';

export interface GroupControllerOptions {
  tenants: Tenants;
  /** Tag on every member snapshot this driver cuts (ListSnapshots shows only these). */
  clusterId: string;
}

/** The GroupController service: volume group snapshots on Cinder's generic volume groups. */
export function groupControllerService(o: GroupControllerOptions): Record<string, RpcSpec> {
  const ops = new GroupSnapshotOps(o.clusterId);
  /** Acts for the tenant of the request's secrets (or the default one when it carries none). */
  const as = <R>(secrets: Record<string, string> | undefined, ctx: RpcContext, fn: (t: Tenant) => Promise<R>) =>
    asTenant(ctx.signal, () => o.tenants.forRequest(secrets, 'group-snapshotter'), fn);
  return {
    GroupControllerGetCapabilities: {
      handler: async () => ({ capabilities: [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' } }] }),
    },
    CreateVolumeGroupSnapshot: {
      // the volumes too: no ControllerPublish may attach one between the check that none is in use and the cut
      lockKeys: (r) => [r.name && `group-snapshot-name:${r.name}`, ...(r.source_volume_ids ?? [])],
      handler: (r, ctx) => as(r.secrets, ctx, async (t) => ({ group_snapshot: await createGroupSnapshot(t, r, ops, ctx.signal) })),
    },
    DeleteVolumeGroupSnapshot: {
      lockKeys: (r) => [r.group_snapshot_id],
      handler: (r, ctx) => as(r.secrets, ctx, (t) => deleteGroupSnapshot(t, r, ops, ctx.signal).then(() => ({}))),
    },
    GetVolumeGroupSnapshot: {
      handler: (r, ctx) => as(r.secrets, ctx, async (t) => ({ group_snapshot: await getGroupSnapshot(t, r, ctx.signal) })),
    },
  };
}
