import { type CinderSnapshot, type CinderVolume, cinderTime } from '../../openstack/cinder.js';
import { TOPOLOGY_ZONE_KEY } from '../../package-info.js';
import type { Snapshot } from '../generated/csi/v1/Snapshot.js';
import type { Volume } from '../generated/csi/v1/Volume.js';
import type { VolumeCondition } from '../generated/csi/v1/VolumeCondition.js';
import { VOLUME_CONTEXT_KEYS } from '../../vocabulary.js';
import { GiB } from './sizes.js';
import { META } from './parameters.js';
import { nodeOfAttachment } from './nodes.js';
import type { Tenant } from './tenants.js';

/** A Cinder volume as CSI sees it; volume_context comes back from the metadata CreateVolume wrote. */
export function volumeView(v: CinderVolume, t: Pick<Tenant, 'csiId'>): Volume {
  const context: Record<string, string> = {};
  const fsType = v.metadata?.[META.fsType];
  const attachMode = v.metadata?.[META.attachMode];
  if (fsType) context[VOLUME_CONTEXT_KEYS.fsType] = fsType;
  if (attachMode) context[VOLUME_CONTEXT_KEYS.attachMode] = attachMode;
  return {
    volume_id: t.csiId(v.id),
    capacity_bytes: v.size * GiB,
    volume_context: context,
    content_source: v.snapshot_id
      ? { snapshot: { snapshot_id: t.csiId(v.snapshot_id) } }
      : v.source_volid
        ? { volume: { volume_id: t.csiId(v.source_volid) } }
        : null,
    accessible_topology: v.availability_zone ? [{ segments: { [TOPOLOGY_ZONE_KEY]: v.availability_zone } }] : [],
  };
}

/** Nodes this volume is ControllerPublished on (attachments this driver made carry the node id). */
export function publishedNodes(v: CinderVolume): string[] {
  return [...new Set(v.attachments.map(nodeOfAttachment).filter((n): n is string => !!n))];
}

const HEALTHY = new Set([
  'available',
  'in-use',
  'attaching',
  'detaching',
  'reserved',
  'extending',
  'retyping',
  'creating',
  'backing-up',
  'downloading',
]);

/** Abnormal when Cinder reports an error state (error, error_extending, …) or anything unexpected. */
export function volumeCondition(v: CinderVolume): VolumeCondition {
  const abnormal = !HEALTHY.has(v.status);
  return { abnormal, message: abnormal ? `Cinder reports volume ${v.id} as ${v.status}` : `volume is ${v.status}` };
}

/** A volume with where it is published and how it is: ListVolumes entries and ControllerGetVolume. */
export function volumeWithStatus(v: CinderVolume, t: Pick<Tenant, 'csiId'>) {
  return {
    volume: volumeView(v, t),
    status: { published_node_ids: publishedNodes(v), volume_condition: volumeCondition(v) },
  };
}

/** Snapshot states in which the snapshot has been cut (listable) and in which it can be used. */
const CUT = new Set(['available', 'backing-up', 'restoring', 'unmanaging']);
export const snapshotIsCut = (s: CinderSnapshot) => CUT.has(s.status);

export function snapshotView(s: CinderSnapshot, t: Pick<Tenant, 'csiId'>): Snapshot {
  const ms = cinderTime(s.created_at);
  return {
    snapshot_id: t.csiId(s.id),
    source_volume_id: t.csiId(s.volume_id),
    size_bytes: s.size * GiB,
    creation_time: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
    ready_to_use: snapshotIsCut(s),
    group_snapshot_id: s.group_snapshot_id ? t.csiId(s.group_snapshot_id) : '',
  };
}
