import type { RpcContext, RpcSpec } from '../server/interceptors.js';
import type { ControllerServiceCapability } from './generated/csi/v1/ControllerServiceCapability.js';
import { getCapacity, getVolume, listSnapshots, listVolumes, validateVolumeCapabilities } from './controller/inspect.js';
import type { KnownNodes } from './controller/nodes.js';
import { publishVolume, unpublishVolume } from './controller/publish.js';
import { createSnapshot, deleteSnapshot, getSnapshot, SnapshotOps } from './controller/snapshots.js';
import { asTenant } from './controller/status.js';
import type { SecretRole, Tenant, Tenants } from './controller/tenants.js';
import { createVolume, deleteVolume, expandVolume, modifyVolume, VolumeOps } from './controller/volumes.js';

export interface ControllerServiceOptions {
  tenants: Tenants;
  /** Which nodes exist and what they may hold (ControllerPublishVolume). */
  nodes: KnownNodes;
  /** Tag on every volume and snapshot this driver creates; ListVolumes shows only these. */
  clusterId: string;
}

type RpcType = NonNullable<NonNullable<ControllerServiceCapability['rpc']>['type']>;

/** RPCs that carry no secrets work only with a default credential; the rest work either way. */
const ALWAYS: RpcType[] = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'GET_SNAPSHOT',
  'CLONE_VOLUME',
  'PUBLISH_READONLY',
  'EXPAND_VOLUME',
  'SINGLE_NODE_MULTI_WRITER',
  'MODIFY_VOLUME',
];
const WITH_DEFAULT_CREDENTIAL: RpcType[] = ['LIST_VOLUMES', 'LIST_VOLUMES_PUBLISHED_NODES', 'GET_CAPACITY', 'GET_VOLUME', 'VOLUME_CONDITION'];

/** The Controller service: validate, pick the tenant, call the Cinder flows, map errors to CSI codes. */
export function controllerService(o: ControllerServiceOptions): Record<string, RpcSpec> {
  const volumes = new VolumeOps(o.clusterId);
  const snapshots = new SnapshotOps(o.clusterId);

  /** Acts for the tenant of the request's secrets (or the default one when it carries none). */
  const withSecrets = <R>(role: SecretRole, secrets: Record<string, string> | undefined, ctx: RpcContext, fn: (t: Tenant) => Promise<R>) =>
    asTenant(ctx.signal, () => o.tenants.forRequest(secrets, role), fn);
  const withDefault = <R>(ctx: RpcContext, fn: (t: Tenant) => Promise<R>) => asTenant(ctx.signal, () => o.tenants.defaultTenant(), fn);
  const empty = () => ({});

  const capabilities = [...ALWAYS, ...(o.tenants.hasDefault ? WITH_DEFAULT_CREDENTIAL : [])];

  return {
    ControllerGetCapabilities: {
      handler: async () => ({ capabilities: capabilities.map((type) => ({ rpc: { type } })) }),
    },
    CreateVolume: {
      lockKeys: (r) => [r.name && `volume-name:${r.name}`],
      handler: (r, ctx) => withSecrets('provisioner', r.secrets, ctx, (t) => createVolume(t, r, volumes, ctx.signal)),
    },
    DeleteVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) => withSecrets('provisioner', r.secrets, ctx, (t) => deleteVolume(t, r.volume_id, volumes, ctx.signal).then(empty)),
    },
    ControllerPublishVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) => withSecrets('controller-publish', r.secrets, ctx, (t) => publishVolume(t, o.nodes, r, ctx.signal)),
    },
    ControllerUnpublishVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) => withSecrets('controller-publish', r.secrets, ctx, (t) => unpublishVolume(t, r, ctx.signal).then(empty)),
    },
    ValidateVolumeCapabilities: {
      handler: (r, ctx) => withSecrets('controller-publish', r.secrets, ctx, (t) => validateVolumeCapabilities(t, r, ctx.signal)),
    },
    ListVolumes: {
      handler: (r, ctx) => withDefault(ctx, (t) => listVolumes(t, o.clusterId, r, ctx.signal)),
    },
    ControllerGetVolume: {
      handler: (r, ctx) => withDefault(ctx, (t) => getVolume(t, r.volume_id, ctx.signal)),
    },
    GetCapacity: {
      handler: (r, ctx) => withDefault(ctx, (t) => getCapacity(t, r, ctx.signal)),
    },
    ControllerExpandVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) => withSecrets('controller-expand', r.secrets, ctx, (t) => expandVolume(t, r, volumes, ctx.signal)),
    },
    ControllerModifyVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) => withSecrets('controller-expand', r.secrets, ctx, (t) => modifyVolume(t, r, volumes, ctx.signal).then(empty)),
    },
    CreateSnapshot: {
      lockKeys: (r) => [r.name && `snapshot-name:${r.name}`],
      handler: (r, ctx) => withSecrets('snapshotter', r.secrets, ctx, (t) => createSnapshot(t, r, snapshots, ctx.signal)),
    },
    DeleteSnapshot: {
      lockKeys: (r) => [r.snapshot_id],
      handler: (r, ctx) => withSecrets('snapshotter', r.secrets, ctx, (t) => deleteSnapshot(t, r.snapshot_id, snapshots, ctx.signal).then(empty)),
    },
    ListSnapshots: {
      handler: (r, ctx) => withSecrets('snapshotter', r.secrets, ctx, (t) => listSnapshots(t, o.clusterId, r, ctx.signal)),
    },
    GetSnapshot: {
      handler: (r, ctx) => withSecrets('snapshotter', r.secrets, ctx, (t) => getSnapshot(t, r.snapshot_id, ctx.signal)),
    },
  };
}
