import { OpenStackError } from '../../openstack/errors.js';
import type { QuotaUsage } from '../../openstack/cinder.js';
import { TOPOLOGY_ZONE_KEY } from '../../package-info.js';
import { aborted, invalidArgument } from '../../server/errors.js';
import type { ControllerGetVolumeResponse } from '../generated/csi/v1/ControllerGetVolumeResponse.js';
import type { GetCapacityRequest__Output } from '../generated/csi/v1/GetCapacityRequest.js';
import type { GetCapacityResponse } from '../generated/csi/v1/GetCapacityResponse.js';
import type { ListSnapshotsRequest__Output } from '../generated/csi/v1/ListSnapshotsRequest.js';
import type { ListSnapshotsResponse } from '../generated/csi/v1/ListSnapshotsResponse.js';
import type { ListVolumesRequest__Output } from '../generated/csi/v1/ListVolumesRequest.js';
import type { ListVolumesResponse } from '../generated/csi/v1/ListVolumesResponse.js';
import type { ValidateVolumeCapabilitiesRequest__Output } from '../generated/csi/v1/ValidateVolumeCapabilitiesRequest.js';
import type { ValidateVolumeCapabilitiesResponse } from '../generated/csi/v1/ValidateVolumeCapabilitiesResponse.js';
import { GiB } from './sizes.js';
import { checkCapabilities, checkCapability, unsupportedReason } from './capabilities.js';
import { META, parseCreateParameters, parseMutableParameters } from './parameters.js';
import type { Tenant } from './tenants.js';
import { snapshotIsCut, snapshotView, volumeWithStatus } from './views.js';
import { requireId, volumeOrNotFound } from './volumes.js';

// --- paging ----------------------------------------------------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Cinder's default osapi_max_limit: a page of this size that comes back full may have more behind it. */
const CINDER_PAGE = 1000;

/**
 * One CSI page over Cinder's marker paging. The token is the id of the last item returned (Cinder's
 * marker); one that is not an id, or that Cinder no longer knows (deleted meanwhile), is ABORTED so
 * the CO starts over. One extra item is fetched to know whether a next page exists.
 */
async function page<T extends { id: string }>(
  fetch: (limit: number, marker?: string) => Promise<T[]>,
  maxEntries: number,
  token: string,
): Promise<{ items: T[]; next: string }> {
  if (maxEntries < 0) throw invalidArgument('max_entries must not be negative');
  if (token && !UUID.test(token))
    throw aborted(
      `starting_token "${token.slice(0, 60)}" is not a token this driver gave out; list again from the start`,
    );
  const want = maxEntries > 0 ? maxEntries + 1 : Infinity;
  const items: T[] = [];
  let marker = token || undefined;
  for (;;) {
    const limit = Math.min(want - items.length, CINDER_PAGE);
    let batch: T[];
    try {
      batch = await fetch(limit, marker);
    } catch (e) {
      // The marker item was deleted since the token was given out.
      if (e instanceof OpenStackError && e.kind === 'not-found' && marker)
        throw aborted(`starting_token ${token} is no longer valid (${e.message}); list again from the start`);
      throw e;
    }
    items.push(...batch);
    if (batch.length < limit || items.length >= want) break;
    marker = batch[batch.length - 1]!.id;
  }
  if (items.length < want) return { items, next: '' };
  const shown = items.slice(0, maxEntries);
  return { items: shown, next: shown[shown.length - 1]!.id };
}

// --- volumes ---------------------------------------------------------------------------

/** ListVolumes: the volumes this cluster made (tagged with its cluster id) in the default tenant. */
export async function listVolumes(
  t: Tenant,
  clusterId: string,
  req: ListVolumesRequest__Output,
  signal: AbortSignal,
): Promise<ListVolumesResponse> {
  const { items, next } = await page(
    (limit, marker) => t.cinder.listVolumes({ metadata: { [META.cluster]: clusterId }, limit, marker }, signal),
    req.max_entries,
    req.starting_token,
  );
  return {
    entries: items.filter((v) => v.status !== 'deleting').map((v) => volumeWithStatus(v, t)),
    next_token: next,
  };
}

export async function getVolume(
  t: Tenant,
  volumeId: string | undefined,
  signal: AbortSignal,
): Promise<ControllerGetVolumeResponse> {
  const v = await volumeOrNotFound(t.cinder, requireId(volumeId, 'volume_id'), signal);
  return volumeWithStatus(v, t);
}

/** ValidateVolumeCapabilities: confirmed only when every capability (and parameter) can be served. */
export async function validateVolumeCapabilities(
  t: Tenant,
  req: ValidateVolumeCapabilitiesRequest__Output,
  signal: AbortSignal,
): Promise<ValidateVolumeCapabilitiesResponse> {
  const id = requireId(req.volume_id, 'volume_id');
  const caps = checkCapabilities(req.volume_capabilities);
  const v = await volumeOrNotFound(t.cinder, id, signal);
  const problems = caps.map((c) => unsupportedReason(c, v)).filter(Boolean);
  for (const check of [
    () => parseCreateParameters(req.parameters),
    () => parseMutableParameters(req.mutable_parameters),
  ]) {
    try {
      check();
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (problems.length) return { message: problems.join('; ') };
  return {
    confirmed: {
      volume_context: req.volume_context,
      volume_capabilities: caps,
      parameters: req.parameters,
      mutable_parameters: req.mutable_parameters,
    },
  };
}

// --- snapshots -------------------------------------------------------------------------

/**
 * ListSnapshots. By snapshot_id: that snapshot, whoever made it (so pre-provisioned snapshots can
 * be imported); by source_volume_id: all of that volume's; otherwise this cluster's. Snapshots not
 * yet cut (or failed) are never listed.
 */
export async function listSnapshots(
  t: Tenant,
  clusterId: string,
  req: ListSnapshotsRequest__Output,
  signal: AbortSignal,
): Promise<ListSnapshotsResponse> {
  const cinder = t.cinder;
  if (req.snapshot_id) {
    if (req.max_entries < 0) throw invalidArgument('max_entries must not be negative');
    const s = await cinder.findSnapshot(req.snapshot_id, signal);
    const match = s && snapshotIsCut(s) && (!req.source_volume_id || s.volume_id === req.source_volume_id);
    return { entries: match ? [{ snapshot: snapshotView(s, t) }] : [], next_token: '' };
  }
  const metadata = req.source_volume_id ? undefined : { [META.cluster]: clusterId };
  const { items, next } = await page(
    (limit, marker) =>
      cinder.listSnapshots({ volumeId: req.source_volume_id || undefined, metadata, limit, marker }, signal),
    req.max_entries,
    req.starting_token,
  );
  return { entries: items.filter(snapshotIsCut).map((s) => ({ snapshot: snapshotView(s, t) })), next_token: next };
}

// --- capacity --------------------------------------------------------------------------

/**
 * What "no limit" reports as available_capacity: the spec wants a number, and Cinder's quota is
 * the only capacity a tenant can see (pool stats are admin-only). 2^53 bytes less 1 GiB: the largest
 * whole number of GiB below 2^53, up to which a JS number (and so the int64 on the wire) is exact —
 * just under 8 PiB, effectively "unconstrained".
 */
export const UNLIMITED_BYTES = 2 ** 53 - GiB;

const free = (q: QuotaUsage | undefined) =>
  !q || q.limit < 0 ? Infinity : Math.max(0, q.limit - q.in_use - q.reserved);

/** Bytes a tenant may still provision of a volume type, and the largest single volume (undefined: no limit). */
export function capacityFromQuota(
  quota: Record<string, QuotaUsage>,
  typeName: string,
): { available: number; largest?: number } {
  const gib = Math.min(free(quota.gigabytes), free(quota[`gigabytes_${typeName}`]));
  const available = gib === Infinity ? UNLIMITED_BYTES : gib * GiB;
  const perVolume = quota.per_volume_gigabytes?.limit ?? -1;
  if (perVolume > 0) return { available, largest: Math.min(perVolume * GiB, available) };
  return gib === Infinity ? { available } : { available, largest: available };
}

/**
 * GetCapacity: the tenant's gigabytes quota left (overall and for the volume type), in bytes.
 * A capability this driver cannot serve, or a zone Cinder does not have, has no capacity.
 */
export async function getCapacity(
  t: Tenant,
  req: GetCapacityRequest__Output,
  signal: AbortSignal,
): Promise<GetCapacityResponse> {
  const caps = req.volume_capabilities.map((c, i) => checkCapability(c, `volume_capabilities[${i}]`));
  const params = parseCreateParameters(req.parameters);
  const zone = req.accessible_topology?.segments?.[TOPOLOGY_ZONE_KEY] ?? params.availability;
  if (caps.some((c) => unsupportedReason(c)) || (zone && !(await t.zones(signal)).includes(zone)))
    return { available_capacity: 0 };
  const cinder = t.cinder;
  const [quota, typeName] = await Promise.all([
    t.projectId(signal).then((p) => cinder.quotaUsage(p, signal)),
    params.type ?? cinder.defaultVolumeType(signal).then((vt) => vt.name),
  ]);
  const { available, largest } = capacityFromQuota(quota, typeName);
  return {
    available_capacity: available,
    ...(largest !== undefined ? { maximum_volume_size: { value: largest } } : {}),
    minimum_volume_size: { value: GiB },
  };
}
