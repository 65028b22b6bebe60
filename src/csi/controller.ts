import type { ControllerHandlers } from './generated/csi/v1/Controller.js';
import type { ServiceSpecs } from './service-specs.js';
import type { ControllerServiceCapability } from './generated/csi/v1/ControllerServiceCapability.js';
import {
  getCapacity,
  getVolume,
  listSnapshots,
  listVolumes,
  validateVolumeCapabilities,
} from './controller/queries.js';
import type { KnownNodes } from './controller/nodes.js';
import { publishVolume, unpublishVolume } from './controller/attach.js';
import type { NodeFencing } from './controller/fencing.js';
import { createSnapshot, deleteSnapshot, getSnapshot, SnapshotOps } from './controller/snapshots.js';
import { splitCloudId } from './controller/cloud-ids.js';
import { CLOUD_PARAMETER } from '../vocabulary.js';
import { TenantScope } from './controller/scope.js';
import type { Tenant, Tenants } from './controller/tenants.js';
import type { CreateVolumeRequest__Output } from './generated/csi/v1/CreateVolumeRequest.js';
import { invalidArgument } from '../server/errors.js';
import { createVolume, deleteVolume, expandVolume, modifyVolume, VolumeOps } from './controller/volumes.js';

export interface ControllerServiceOptions {
  tenants: Tenants;
  /** Which nodes exist and what they may hold (ControllerPublishVolume). */
  nodes: KnownNodes;
  /** Tag on every volume and snapshot this driver creates; ListVolumes shows only these. */
  clusterId: string;
  /** Fencing of lost nodes before their volumes are released (--fencing-ceph-id); absent: released as they are. */
  fencing?: NodeFencing;
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
const WITH_DEFAULT_CREDENTIAL: RpcType[] = [
  'LIST_VOLUMES',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'GET_CAPACITY',
  'GET_VOLUME',
  'VOLUME_CONDITION',
];

/** The Controller service: validate, pick the tenant and its cloud, call the Cinder flows, map errors to CSI codes. */
export function controllerService(o: ControllerServiceOptions): ServiceSpecs<ControllerHandlers> {
  const volumes = new VolumeOps(o.clusterId);
  const snapshots = new SnapshotOps(o.clusterId);
  const scope = new TenantScope(o.tenants);
  const empty = () => ({});

  const capabilities = [...ALWAYS, ...(o.tenants.hasDefault ? WITH_DEFAULT_CREDENTIAL : [])];

  return {
    ControllerGetCapabilities: {
      handler: async () => ({ capabilities: capabilities.map((type) => ({ rpc: { type } })) }),
    },
    CreateVolume: {
      lockKeys: (r) => [r.name && `volume-name:${r.name}`],
      handler: (r, ctx) =>
        scope.inCloud(r.parameters?.[CLOUD_PARAMETER], 'provisioner', r.secrets, ctx, (t) =>
          createVolume(t, inCloudOf(t, r), volumes, ctx.signal),
        ),
    },
    DeleteVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'provisioner', r.secrets, ctx, 'refuse', (t, [id]) =>
          deleteVolume(t, id, volumes, ctx.signal).then(empty),
        ),
    },
    ControllerPublishVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'controller-publish', r.secrets, ctx, 'not-found', (t, [id]) =>
          publishVolume(t, o.nodes, { ...r, volume_id: id! }, ctx.signal, o.fencing),
        ),
    },
    ControllerUnpublishVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'controller-publish', r.secrets, ctx, 'refuse', (t, [id]) =>
          unpublishVolume(t, { ...r, volume_id: id! }, ctx.signal, o.fencing).then(empty),
        ),
    },
    ValidateVolumeCapabilities: {
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'controller-publish', r.secrets, ctx, 'not-found', (t, [id]) =>
          validateVolumeCapabilities(t, { ...r, volume_id: id! }, ctx.signal),
        ),
    },
    ListVolumes: {
      handler: (r, ctx) =>
        scope.inCloud('', 'provisioner', undefined, ctx, (t) => listVolumes(t, o.clusterId, r, ctx.signal)),
    },
    ControllerGetVolume: {
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'provisioner', undefined, ctx, 'not-found', (t, [id]) =>
          getVolume(t, id, ctx.signal),
        ),
    },
    GetCapacity: {
      handler: (r, ctx) =>
        scope.inCloud(r.parameters?.[CLOUD_PARAMETER], 'provisioner', undefined, ctx, (t) =>
          getCapacity(t, r, ctx.signal),
        ),
    },
    ControllerExpandVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'controller-expand', r.secrets, ctx, 'not-found', (t, [id]) =>
          expandVolume(t, { ...r, volume_id: id! }, volumes, ctx.signal),
        ),
    },
    ControllerModifyVolume: {
      lockKeys: (r) => [r.volume_id],
      handler: (r, ctx) =>
        scope.byIds([r.volume_id], 'controller-expand', r.secrets, ctx, 'not-found', (t, [id]) =>
          modifyVolume(t, { ...r, volume_id: id! }, volumes, ctx.signal).then(empty),
        ),
    },
    CreateSnapshot: {
      lockKeys: (r) => [r.name && `snapshot-name:${r.name}`],
      handler: (r, ctx) =>
        scope.byIds([r.source_volume_id], 'snapshotter', r.secrets, ctx, 'not-found', (t, [id]) =>
          createSnapshot(t, { ...r, source_volume_id: id! }, snapshots, ctx.signal),
        ),
    },
    DeleteSnapshot: {
      lockKeys: (r) => [r.snapshot_id],
      handler: (r, ctx) =>
        scope.byIds([r.snapshot_id], 'snapshotter', r.secrets, ctx, 'refuse', (t, [id]) =>
          deleteSnapshot(t, id, snapshots, ctx.signal).then(empty),
        ),
    },
    ListSnapshots: {
      handler: async (r, ctx) => {
        // a snapshot_id or source_volume_id no cloud of the driver's holds matches nothing: an empty list, as for an
        // unknown id
        const named = [r.snapshot_id, r.source_volume_id].filter(Boolean).map(splitCloudId);
        if (
          new Set(named.map((n) => n.cloud)).size > 1 ||
          named.some((n) => o.tenants.cloudName(n.cloud) === undefined)
        )
          return { entries: [], next_token: '' };
        return scope.byIds(
          [r.snapshot_id, r.source_volume_id],
          'snapshotter',
          r.secrets,
          ctx,
          'not-found',
          (t, [snapshotId, sourceVolumeId]) =>
            listSnapshots(
              t,
              o.clusterId,
              { ...r, snapshot_id: snapshotId!, source_volume_id: sourceVolumeId! },
              ctx.signal,
            ),
        );
      },
    },
    GetSnapshot: {
      handler: (r, ctx) =>
        scope.byIds([r.snapshot_id], 'snapshotter', r.secrets, ctx, 'not-found', (t, [id]) =>
          getSnapshot(t, id, ctx.signal),
        ),
    },
  };
}

/**
 * A CreateVolume request with its content source named as the tenant's cloud knows it; a source in
 * another cloud is INVALID_ARGUMENT (Cinder clones within one cloud only).
 */
function inCloudOf(t: Tenant, r: CreateVolumeRequest__Output): CreateVolumeRequest__Output {
  const src = r.volume_content_source;
  const given = src?.snapshot?.snapshot_id ?? src?.volume?.volume_id;
  if (!src || !given) return r;
  const { id } = splitCloudId(given);
  if (t.csiId(id) !== given)
    throw invalidArgument(
      'volume_content_source is in another cloud than the one this volume is created in (the StorageClass parameter cloud)',
    );
  return {
    ...r,
    volume_content_source: src.snapshot
      ? { ...src, snapshot: { snapshot_id: id } }
      : { ...src, volume: { volume_id: id } },
  };
}
