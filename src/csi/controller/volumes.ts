import { type Cinder, type CinderVolume, cinderTime } from '../../openstack/cinder.js';
import { OpenStackError } from '../../openstack/errors.js';
import { DurationEstimate, pollUntil } from '../../openstack/wait.js';
import {
  alreadyExists,
  failedPrecondition,
  internal,
  invalidArgument,
  notFound,
  resourceExhausted,
  unavailable,
} from '../../server/errors.js';
import type { ControllerExpandVolumeRequest__Output } from '../generated/csi/v1/ControllerExpandVolumeRequest.js';
import type { ControllerExpandVolumeResponse } from '../generated/csi/v1/ControllerExpandVolumeResponse.js';
import type { ControllerModifyVolumeRequest__Output } from '../generated/csi/v1/ControllerModifyVolumeRequest.js';
import type { CreateVolumeRequest__Output } from '../generated/csi/v1/CreateVolumeRequest.js';
import type { CreateVolumeResponse } from '../generated/csi/v1/CreateVolumeResponse.js';
import type { VolumeContentSource__Output } from '../generated/csi/v1/VolumeContentSource.js';
import { GiB, rangeHolds, sizeInGiB } from './sizes.js';
import { checkCapabilities, checkCapability, isBlock, isMultiNode, unsupportedReason } from './capabilities.js';
import { deleteUntilGone } from './deletion.js';
import { META, parseCreateParameters, parseMutableParameters, volumeMetadata } from './parameters.js';
import type { Tenant } from './tenants.js';
import { chooseZone, mentionsZones } from './topology.js';
import { publishedNodes, volumeView } from './views.js';

/** What the volume RPCs share across calls: the cluster tag and how long Cinder usually takes. */
export class VolumeOps {
  readonly took = {
    create: new DurationEstimate(),
    clone: new DurationEstimate(),
    delete: new DurationEstimate(),
    extend: new DurationEstimate(),
    retype: new DurationEstimate(),
  };

  constructor(readonly clusterId: string) {}
}

/** Statuses a volume passes through on its own; a wait ends when it leaves them. */
const CREATING = new Set(['creating', 'downloading']);
const GONE_OR_GOING = new Set(['deleting', 'error_deleting']);

export function requireId(id: string | undefined, field: string): string {
  if (!id) throw invalidArgument(`${field} is required`);
  return id;
}

/** GET a volume; 404 is the spec's NOT_FOUND for the volume the request names. */
export async function volumeOrNotFound(cinder: Cinder, id: string, signal: AbortSignal): Promise<CinderVolume> {
  const v = await cinder.findVolume(id, signal);
  if (!v) throw notFound(`volume ${id} does not exist (in this tenant's project)`);
  return v;
}

interface Source {
  spec: { snapshot_id?: string; source_volid?: string };
  sizeGiB: number;
}

async function resolveSource(
  cinder: Cinder,
  src: VolumeContentSource__Output | null,
  signal: AbortSignal,
): Promise<Source | undefined> {
  if (!src?.type) return undefined;
  if (src.type === 'snapshot') {
    const id = requireId(src.snapshot?.snapshot_id, 'volume_content_source.snapshot.snapshot_id');
    const s = await cinder.findSnapshot(id, signal);
    if (!s) throw notFound(`source snapshot ${id} does not exist`);
    if (s.status !== 'available') throw failedPrecondition(`source snapshot ${id} is ${s.status}, not available`);
    return { spec: { snapshot_id: id }, sizeGiB: s.size };
  }
  const id = requireId(src.volume?.volume_id, 'volume_content_source.volume.volume_id');
  const v = await cinder.findVolume(id, signal);
  if (!v) throw notFound(`source volume ${id} does not exist`);
  if (v.status !== 'available' && v.status !== 'in-use')
    throw failedPrecondition(`source volume ${id} is ${v.status}; it can be cloned when available or in-use`);
  return { spec: { source_volid: id }, sizeGiB: v.size };
}

const typeMatches = (v: CinderVolume, type: string) => v.volume_type === type || v.volume_type_id === type;

/** Why an existing volume of that name does not answer this request, or undefined when it does. */
function incompatibility(
  v: CinderVolume,
  req: CreateVolumeRequest__Output,
  want: { source?: Source; type?: string; zone?: string; fsType?: string; attachMode: string },
): string | undefined {
  if (!rangeHolds(req.capacity_range, v.size)) return `its size ${v.size} GiB is outside the requested capacity_range`;
  if (
    (v.snapshot_id ?? undefined) !== want.source?.spec.snapshot_id ||
    (v.source_volid ?? undefined) !== want.source?.spec.source_volid
  )
    return `it was made from ${v.snapshot_id ? `snapshot ${v.snapshot_id}` : v.source_volid ? `volume ${v.source_volid}` : 'nothing'}, not the requested source`;
  if (want.type && !typeMatches(v, want.type)) return `its type is ${v.volume_type}, not ${want.type}`;
  if (want.zone && v.availability_zone !== want.zone) return `it is in zone ${v.availability_zone}, not ${want.zone}`;
  // Parameters are comparable only on volumes this driver made (they carry them as metadata).
  if (META.attachMode in v.metadata) {
    if (v.metadata[META.attachMode] !== want.attachMode)
      return `its attachMode is ${v.metadata[META.attachMode]}, not ${want.attachMode}`;
    if (v.metadata[META.fsType] !== want.fsType)
      return `its fsType is ${v.metadata[META.fsType] ?? 'unset'}, not ${want.fsType ?? 'unset'}`;
  }
  for (const c of req.volume_capabilities) {
    const why = unsupportedReason(c, v);
    if (why) return why;
  }
  return undefined;
}

/** No backend had room: the spec's RESOURCE_EXHAUSTED; anything else Cinder failed at is INTERNAL. */
const NO_ROOM = /capacity|space|weighed|weighted|no valid backend|quota/i;

/**
 * A volume that went to `error` is deleted (it is useless and counts against quota) and reported
 * with Cinder's reason. When Cinder was unreachable meanwhile, the failure is most likely its restart
 * cutting the creation short: UNAVAILABLE, so the CO simply retries.
 */
async function failCreation(
  cinder: Cinder,
  v: CinderVolume,
  cinderWasAway: boolean,
  signal: AbortSignal,
): Promise<never> {
  const reason = await cinder.failureReason(v.id, signal);
  await cinder.deleteVolume(v.id, signal);
  const msg = `Cinder could not create volume ${v.name} (${v.id}), so it was deleted: ${reason}`;
  if (cinderWasAway) throw unavailable(`${msg} (Cinder was unreachable meanwhile; retry)`);
  throw NO_ROOM.test(reason) ? resourceExhausted(msg) : internal(msg);
}

/**
 * A volume still `creating` after this long was most likely never scheduled: a Cinder restart lost
 * the request (it lives only in the message bus until then). RBD volumes are ready in about a second.
 */
const STUCK_AFTER_MS = 30_000;
const ageMs = (v: CinderVolume) => Date.now() - cinderTime(v.created_at);

/**
 * Wait while Cinder creates the volume. `volume` is undefined when it is gone: deleted by someone
 * else, or removed here (`unscheduled`) because Cinder never scheduled it (Cinder deletes an
 * unscheduled volume in any state; a scheduled one answers 400 and is waited for). `away`: Cinder
 * was unreachable meanwhile.
 */
async function awaitCreated(
  cinder: Cinder,
  v: CinderVolume,
  signal: AbortSignal,
  estimate: DurationEstimate,
): Promise<{ volume?: CinderVolume; away: boolean; unscheduled?: boolean }> {
  let away = false;
  let unstickTried = false;
  const stuck = (x: CinderVolume) => !unstickTried && ageMs(x) > STUCK_AFTER_MS;
  let current: CinderVolume | undefined = v;
  while (current && CREATING.has(current.status)) {
    if (stuck(current)) {
      unstickTried = true;
      try {
        await cinder.deleteVolume(current.id, signal);
        return { away, unscheduled: true };
      } catch (e) {
        if (!(e instanceof OpenStackError && e.kind === 'bad-request')) throw e;
      }
    }
    current = await pollUntil(
      () => cinder.findVolume(v.id, signal),
      (x) => !x || !CREATING.has(x.status) || stuck(x),
      {
        what: `volume ${v.name} (${v.id}) to become available`,
        signal,
        estimate,
        onTransient: () => (away = true),
      },
    );
  }
  return { volume: current, away };
}

/** CreateVolume: idempotent by name, waits until Cinder has the volume available. */
/** How long a create request may take to be answered, whatever the CO's deadline (see createVolume). */
export const POST_TIMEOUT_MS = 60_000;

export async function createVolume(
  t: Tenant,
  req: CreateVolumeRequest__Output,
  ops: VolumeOps,
  signal: AbortSignal,
): Promise<CreateVolumeResponse> {
  const name = requireId(req.name, 'name');
  const caps = checkCapabilities(req.volume_capabilities);
  for (const c of caps) {
    const why = unsupportedReason(c);
    if (why) throw invalidArgument(`volume_capabilities: ${why}`);
  }
  const params = parseCreateParameters(req.parameters);
  const type = parseMutableParameters(req.mutable_parameters).type ?? params.type;
  const cinder = t.cinder;

  const source = await resolveSource(cinder, req.volume_content_source, signal);
  const size = sizeInGiB(req.capacity_range, source?.sizeGiB ?? 1, source ? 'a volume from this source' : 'a volume');
  const zone =
    params.availability ??
    (mentionsZones(req.accessibility_requirements)
      ? chooseZone(req.accessibility_requirements, await t.zones(signal))
      : undefined);
  const estimate = source ? ops.took.clone : ops.took.create;

  const existing = (await cinder.volumesNamed(name, signal)).filter((v) => !GONE_OR_GOING.has(v.status));
  if (existing.length > 1)
    throw failedPrecondition(
      `${existing.length} Cinder volumes are named ${name} (${existing.map((v) => v.id).join(', ')}); delete the extra ones by hand`,
    );
  let volume = existing[0];
  if (volume) {
    const why = incompatibility(volume, req, {
      source,
      type,
      zone,
      fsType: params.fsType,
      attachMode: params.attachMode,
    });
    if (why) throw alreadyExists(`volume ${name} exists (${volume.id}) but does not match this request: ${why}`);
    const found = (await awaitCreated(cinder, volume, signal, estimate)).volume;
    if (found && found.status !== 'error') return { volume: volumeView(found, t) };
    if (found) await cinder.deleteVolume(found.id, signal); // a failed earlier attempt: start again
  }

  try {
    // Not cut short by the caller's deadline: a POST Cinder may already act on must be seen to its end
    // while this call still holds the name's lock, or a retry could look for the name too early and
    // create the volume twice. The deadline is honoured right after.
    volume = await cinder.createVolume(
      {
        name,
        size,
        volume_type: type,
        availability_zone: zone,
        ...source?.spec,
        metadata: volumeMetadata(ops.clusterId, params),
      },
      AbortSignal.timeout(POST_TIMEOUT_MS),
    );
    signal.throwIfAborted();
  } catch (e) {
    if (e instanceof OpenStackError && e.kind === 'not-found' && type && /type/i.test(e.message))
      throw invalidArgument(`parameter "type": ${e.message}`);
    if (e instanceof OpenStackError && e.kind === 'bad-request' && /availability zone/i.test(e.message))
      throw params.availability
        ? invalidArgument(`parameter "availability": ${e.message}`)
        : resourceExhausted(e.message);
    throw e;
  }
  const created = await awaitCreated(cinder, volume, signal, estimate);
  if (created.unscheduled)
    throw unavailable(
      `Cinder never scheduled volume ${name} (${volume.id}) in ${STUCK_AFTER_MS / 1000} s (a restart lost the request?), so it was deleted; retry`,
    );
  if (!created.volume)
    throw unavailable(`volume ${name} (${volume.id}) vanished while being created (deleted by someone else?); retry`);
  volume = created.volume;
  if (volume.status === 'error') await failCreation(cinder, volume, created.away, signal);
  if (caps.some(isMultiNode) && !volume.multiattach) {
    await cinder.deleteVolume(volume.id, signal);
    throw invalidArgument(
      `volume_capabilities: ${unsupportedReason(caps.find(isMultiNode)!, volume)} (type ${volume.volume_type}); the volume was deleted`,
    );
  }
  return { volume: volumeView(volume, t) };
}

/** DeleteVolume: idempotent; waits until Cinder has really removed it so nothing leaks silently. */
export async function deleteVolume(
  t: Tenant,
  volumeId: string | undefined,
  ops: VolumeOps,
  signal: AbortSignal,
): Promise<void> {
  const id = requireId(volumeId, 'volume_id');
  const cinder = t.cinder;
  const left = await deleteUntilGone({
    remove: () => cinder.deleteVolume(id, signal),
    find: () => cinder.findVolume(id, signal),
    refused: async (v, message) => failedPrecondition(await whyNotDeletable(cinder, v, message, signal)),
    what: `volume ${id} to be deleted`,
    signal,
    estimate: ops.took.delete,
  });
  if (left)
    throw (left.status === 'error_deleting' ? internal : failedPrecondition)(
      `Cinder could not delete volume ${id} (now ${left.status}): ${await cinder.failureReason(id, signal)}`,
    );
}

async function whyNotDeletable(
  cinder: Cinder,
  v: CinderVolume,
  cinderMessage: string,
  signal: AbortSignal,
): Promise<string> {
  const nodes = publishedNodes(v);
  if (v.attachments.length || ['in-use', 'attaching', 'reserved', 'detaching'].includes(v.status))
    return `volume ${v.id} is still attached${nodes.length ? ` (published on ${nodes.join(', ')})` : ''}; ControllerUnpublishVolume it first`;
  const snapshots = await cinder.listSnapshots({ volumeId: v.id }, signal);
  if (snapshots.length)
    return `volume ${v.id} has ${snapshots.length} snapshot(s) (${snapshots.map((s) => s.id).join(', ')}); delete them first`;
  return `volume ${v.id} is ${v.status}: ${cinderMessage}`;
}

/** ControllerExpandVolume: os-extend, online for in-use volumes; node expansion for filesystems. */
export async function expandVolume(
  t: Tenant,
  req: ControllerExpandVolumeRequest__Output,
  ops: VolumeOps,
  signal: AbortSignal,
): Promise<ControllerExpandVolumeResponse> {
  const id = requireId(req.volume_id, 'volume_id');
  if (!req.capacity_range) throw invalidArgument('capacity_range is required');
  const cap = req.volume_capability ? checkCapability(req.volume_capability, 'volume_capability') : undefined;
  const want = sizeInGiB(req.capacity_range, 1);
  const cinder = t.cinder;
  let v = await volumeOrNotFound(cinder, id, signal);
  if (cap) {
    const why = unsupportedReason(cap, v);
    if (why) throw invalidArgument(`volume_capability: ${why}`);
  }
  const nodeExpansion = !isBlock(cap);
  if (v.size >= want && v.status !== 'extending')
    return { capacity_bytes: v.size * GiB, node_expansion_required: nodeExpansion };
  if (v.status !== 'extending') {
    if (v.status !== 'available' && v.status !== 'in-use')
      throw failedPrecondition(`volume ${id} is ${v.status}; it can be expanded when available or in-use`);
    await cinder.extendVolume(id, want, signal);
  }
  const done = await pollUntil(
    () => volumeOrNotFound(cinder, id, signal),
    (x) => x.status !== 'extending',
    { what: `volume ${id} to grow to ${want} GiB`, signal, estimate: ops.took.extend },
  );
  v = done;
  if (v.size < want)
    throw internal(
      `Cinder could not extend volume ${id} to ${want} GiB (now ${v.status}, ${v.size} GiB): ${await cinder.failureReason(id, signal)}`,
    );
  return { capacity_bytes: v.size * GiB, node_expansion_required: nodeExpansion };
}

/** ControllerModifyVolume: `type` → Cinder retype (same backend: no data moves). */
export async function modifyVolume(
  t: Tenant,
  req: ControllerModifyVolumeRequest__Output,
  ops: VolumeOps,
  signal: AbortSignal,
): Promise<void> {
  const id = requireId(req.volume_id, 'volume_id');
  const { type } = parseMutableParameters(req.mutable_parameters);
  if (!type) throw invalidArgument('mutable_parameters: nothing to modify (this driver can change "type")');
  const cinder = t.cinder;
  const v = await volumeOrNotFound(cinder, id, signal);
  if (typeMatches(v, type)) return;
  if (v.status !== 'retyping') {
    if (v.status !== 'available' && v.status !== 'in-use')
      throw failedPrecondition(`volume ${id} is ${v.status}; it can be retyped when available or in-use`);
    try {
      await cinder.retypeVolume(id, type, signal);
    } catch (e) {
      if (e instanceof OpenStackError && e.kind === 'not-found')
        throw invalidArgument(`mutable_parameters "type": ${e.message}`);
      throw e;
    }
  }
  const done = await pollUntil(
    () => volumeOrNotFound(cinder, id, signal),
    (x) => x.status !== 'retyping',
    { what: `volume ${id} to be retyped to ${type}`, signal, estimate: ops.took.retype },
  );
  if (!typeMatches(done, type))
    throw internal(
      `Cinder could not retype volume ${id} to ${type} (it is ${done.volume_type}, ${done.status}): ${await cinder.failureReason(id, signal)}`,
    );
}
