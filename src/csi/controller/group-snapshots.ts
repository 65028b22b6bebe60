import { createHash } from 'node:crypto';
import { z } from 'zod';
import { failpoint } from '../../failpoints.js';
import { KeyedQueue } from '../../keyed-queue.js';
import {
  type Cinder,
  type CinderGroup,
  type CinderGroupSnapshot,
  type CinderSnapshot,
  cinderTime,
} from '../../openstack/cinder.js';
import { OpenStackError } from '../../openstack/errors.js';
import { DurationEstimate, pollUntil, untilSettled } from '../../openstack/wait.js';
import {
  alreadyExists,
  failedPrecondition,
  internal,
  invalidArgument,
  notFound,
  unavailable,
} from '../../server/errors.js';
import { DRIVER_NAME } from '../../package-info.js';
import type { CreateVolumeGroupSnapshotRequest__Output } from '../generated/csi/v1/CreateVolumeGroupSnapshotRequest.js';
import type { VolumeGroupSnapshot } from '../generated/csi/v1/VolumeGroupSnapshot.js';
import { deleteUntilGone } from './deletion.js';
import { K8S_PREFIX, META, name, parseWith } from './parameters.js';
import type { Tenant } from './tenants.js';
import { snapshotIsCut, snapshotView } from './views.js';
import { POST_TIMEOUT_MS, requireId, volumeOrNotFound } from './volumes.js';

/**
 * Volume group snapshots on Cinder's generic volume groups. Cinder cuts a group snapshot of a group,
 * so the flow puts the source volumes into a group of this driver's, cuts, and takes them out again:
 * one group per project, group type and set of volume types, shared by all of its group snapshots
 * (Cinder counts groups against a quota of 10 per project by default; group snapshots have none), and
 * deleted once its last group snapshot is. Flows of one project run one after another: they share it.
 *
 * Consistency: the CSI spec asks for write-order consistency across the members, or a failure. Cinder's
 * RBD driver has no group snapshot of its own, so Cinder takes the members' snapshots one after another;
 * writes landing between two of them would be in one and not the other. This driver therefore cuts a
 * group snapshot only of volumes that are not attached (Cinder status `available`), where no write can
 * land while it is cut, and answers FAILED_PRECONDITION for in-use ones.
 */

/** The member snapshots' tag: the group snapshot they belong to (so they are found without a scan). */
export const GROUP_SNAPSHOT_META = `${DRIVER_NAME}/group-snapshot`;

/** Keys the external-snapshotter adds with --extra-create-metadata; recorded on every member. */
const K8S_GROUP_KEYS = [
  'csi.storage.k8s.io/volumegroupsnapshot/name',
  'csi.storage.k8s.io/volumegroupsnapshot/namespace',
  'csi.storage.k8s.io/volumegroupsnapshotcontent/name',
];

const parametersSchema = z.object({ groupType: name.optional() }).strict();

/** At most this many volumes in one group snapshot (each costs Cinder calls while the project's flows wait). */
export const MAX_GROUP_MEMBERS = 128;

/** VolumeGroupSnapshotClass parameters: `groupType` (default: Cinder's default_group_type). */
export function parseGroupParameters(params: Record<string, string> | undefined): {
  groupType?: string;
  k8s: Record<string, string>;
} {
  const own: Record<string, string> = {};
  const k8s: Record<string, string> = {};
  for (const [k, v] of Object.entries(params ?? {})) {
    if (K8S_GROUP_KEYS.includes(k)) k8s[k] = v;
    else if (!k.startsWith(K8S_PREFIX)) own[k] = v;
  }
  return { ...parseWith(parametersSchema, own, 'parameters', 'groupType'), k8s };
}

export class GroupSnapshotOps {
  readonly took = {
    group: new DurationEstimate(),
    update: new DurationEstimate(),
    cut: new DurationEstimate(),
    delete: new DurationEstimate(),
  };
  private readonly queue = new KeyedQueue();

  constructor(readonly clusterId: string) {}

  /** Run `fn` after every flow of the same key started before it (they share that project's group). */
  serially<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(key, fn);
  }

  /** The shared group's name: this driver's, the cluster's, and which group and volume types it is of. */
  groupName(groupTypeId: string, volumeTypes: string[]): string {
    const key = createHash('sha256')
      .update(`${groupTypeId}\n${volumeTypes.join(',')}`)
      .digest('hex')
      .slice(0, 12);
    return `${DRIVER_NAME}/${this.clusterId}/${key}`;
  }

  /** This cluster's groups are named under this prefix. */
  get groupPrefix(): string {
    return `${DRIVER_NAME}/${this.clusterId}/`;
  }
}

const GONE = new Set(['deleting', 'error_deleting']);

export function groupSnapshotView(
  gs: CinderGroupSnapshot,
  members: CinderSnapshot[],
  t: Pick<Tenant, 'csiId'>,
): VolumeGroupSnapshot {
  const ms = cinderTime(gs.created_at);
  return {
    group_snapshot_id: t.csiId(gs.id),
    snapshots: members.map((m) => snapshotView(m, t)),
    creation_time: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 },
    ready_to_use: gs.status === 'available' && members.length > 0 && members.every(snapshotIsCut),
  };
}

async function groupType(
  cinder: Cinder,
  wanted: string | undefined,
  signal: AbortSignal,
): Promise<{ id: string; name: string }> {
  if (wanted) {
    const t = await cinder.findGroupType(wanted, signal);
    if (!t)
      throw failedPrecondition(
        `group type "${wanted}" (parameter groupType) does not exist or is not public: an OpenStack admin creates it (openstack volume group type create ${wanted})`,
      );
    return t;
  }
  const t = await cinder.defaultGroupType(signal);
  if (!t)
    throw failedPrecondition(
      'no group type: set the VolumeGroupSnapshotClass parameter groupType, or have Cinder name one in its default_group_type',
    );
  return t;
}

/** The tagged members of a group snapshot. */
const taggedMembers = (cinder: Cinder, gsId: string, signal: AbortSignal) =>
  cinder.listSnapshots({ metadata: { [GROUP_SNAPSHOT_META]: gsId } }, signal);

const awaitGroupStatus = (cinder: Cinder, g: CinderGroup, ops: GroupSnapshotOps, signal: AbortSignal) =>
  untilSettled(g, () => cinder.findGroup(g.id, signal), ['creating', 'updating'], {
    what: `volume group ${g.name} (${g.id}) to settle`,
    signal,
    estimate: g.status === 'creating' ? ops.took.group : ops.took.update,
  });

const awaitCut = (cinder: Cinder, gs: CinderGroupSnapshot, ops: GroupSnapshotOps, signal: AbortSignal) =>
  untilSettled(gs, () => cinder.findGroupSnapshot(gs.id, signal), ['creating'], {
    what: `group snapshot ${gs.name} (${gs.id}) to be cut`,
    signal,
    estimate: ops.took.cut,
  });

/** Move volumes in or out of a group and wait until Cinder is done; Cinder's refusal → FAILED_PRECONDITION. */
async function changeMembers(
  cinder: Cinder,
  g: CinderGroup,
  change: { add?: string[]; remove?: string[] },
  ops: GroupSnapshotOps,
  signal: AbortSignal,
): Promise<void> {
  if (!change.add?.length && !change.remove?.length) return;
  try {
    await cinder.updateGroupVolumes(g.id, change, signal);
  } catch (e) {
    if (e instanceof OpenStackError && e.kind === 'bad-request')
      throw failedPrecondition(
        `Cinder will not ${change.add?.length ? `put volumes ${change.add.join(', ')} into` : 'take volumes out of'} group ${g.id} (is one in another volume group, or busy?): ${e.message}`,
      );
    throw e;
  }
  const now = await awaitGroupStatus(cinder, { ...g, status: 'updating' }, ops, signal);
  if (now?.status !== 'available')
    throw internal(
      `volume group ${g.id} went to ${now?.status ?? 'nowhere'} while its volumes changed: ${await cinder.failureReason(g.id, signal)}`,
    );
}

/** Take every volume out of a group (what a crashed flow left in it, or this flow's after the cut). */
async function emptyGroup(cinder: Cinder, g: CinderGroup, ops: GroupSnapshotOps, signal: AbortSignal): Promise<void> {
  const inside = (await cinder.groupVolumes(g.id, signal)).map((v) => v.id);
  await changeMembers(cinder, g, { remove: inside }, ops, signal);
}

/**
 * This project's group for the given group and volume types, available and empty: found (and
 * emptied of what a crashed flow left), or created.
 */
async function sharedGroup(
  cinder: Cinder,
  type: { id: string; name: string },
  volumeTypes: string[],
  ops: GroupSnapshotOps,
  signal: AbortSignal,
): Promise<CinderGroup> {
  const name = ops.groupName(type.id, volumeTypes);
  for (const found of (await cinder.groupsNamed(name, signal)).filter((g) => !GONE.has(g.status))) {
    const g = await awaitGroupStatus(cinder, found, ops, signal);
    if (g?.status === 'available') {
      await emptyGroup(cinder, g, ops, signal);
      return g;
    }
    if (g) await cinder.deleteGroup(g.id, signal).catch(() => undefined); // an errored group holds no snapshot
  }
  const description =
    `group snapshots of ${DRIVER_NAME} (cluster ${ops.clusterId}), group type ${type.name}; holds volumes only while one is cut`.slice(
      0,
      255,
    );
  let created: CinderGroup;
  try {
    created = await cinder.createGroup(
      { name, description, group_type: type.id, volume_types: volumeTypes },
      AbortSignal.timeout(POST_TIMEOUT_MS),
    );
  } catch (e) {
    if (e instanceof OpenStackError && e.kind === 'bad-request')
      throw failedPrecondition(
        `Cinder will not make a volume group of type ${type.name} for volume types ${volumeTypes.join(', ')}: ${e.message}`,
      );
    throw e;
  }
  // POST answers with the id and name only: the group is being created
  const g = await awaitGroupStatus(cinder, { ...created, status: 'creating' }, ops, signal);
  if (g?.status === 'available') return g;
  const reason = await cinder.failureReason(created.id, signal);
  await cinder.deleteGroup(created.id, signal).catch(() => undefined);
  throw failedPrecondition(
    `Cinder could not make a volume group of type ${type.name} for volume types ${volumeTypes.join(', ')} (it went to ${g?.status ?? 'nowhere'}): ${reason}`,
  );
}

/**
 * Delete this cluster's groups of the project that hold no group snapshot any more (Cinder refuses
 * the others: kept). Run after a group snapshot is deleted or a flow failed.
 */
async function releaseIdleGroups(cinder: Cinder, ops: GroupSnapshotOps, signal: AbortSignal): Promise<void> {
  const ours = (await cinder.listGroups(signal)).filter(
    (g) => g.name?.startsWith(ops.groupPrefix) && !GONE.has(g.status),
  );
  for (const g of ours) {
    if (g.status === 'available') await emptyGroup(cinder, g, ops, signal);
    const asked = await cinder.deleteGroup(g.id, signal).catch((e: unknown) => {
      if (e instanceof OpenStackError && e.kind === 'bad-request') return false; // it holds group snapshots
      throw e;
    });
    if (asked)
      await pollUntil(
        () => cinder.findGroup(g.id, signal),
        (x) => !x || x.status !== 'deleting',
        { what: `volume group ${g.id} to be deleted`, signal, estimate: ops.took.delete },
      );
  }
}

/**
 * The end of a cut: every member tagged (so ListSnapshots and the group's lookups find it) and the
 * source volumes out of the group again. Also what repairs a flow killed after the cut.
 */
async function finishCut(
  cinder: Cinder,
  gs: CinderGroupSnapshot,
  sourceIds: string[],
  tags: Record<string, string>,
  ops: GroupSnapshotOps,
  signal: AbortSignal,
): Promise<CinderSnapshot[]> {
  const members = new Map((await taggedMembers(cinder, gs.id, signal)).map((s) => [s.id, s]));
  const tagged = new Set([...members.values()].map((s) => s.volume_id));
  for (const volumeId of sourceIds.filter((v) => !tagged.has(v))) {
    for (const s of (await cinder.listSnapshots({ volumeId }, signal)).filter((x) => x.group_snapshot_id === gs.id)) {
      const metadata = { ...tags, [GROUP_SNAPSHOT_META]: gs.id };
      await cinder.setSnapshotMetadata(s.id, metadata, signal);
      members.set(s.id, { ...s, metadata: { ...s.metadata, ...metadata } });
    }
  }
  await failpoint('group-snapshot:tagged');
  const g = await cinder.findGroup(gs.group_id, signal);
  if (g) await emptyGroup(cinder, (await awaitGroupStatus(cinder, g, ops, signal)) ?? g, ops, signal);
  return [...members.values()].sort((a, b) => a.volume_id.localeCompare(b.volume_id));
}

/** Delete a group snapshot (with its members) and wait until it is gone; what is left when Cinder gave up. */
function removeGroupSnapshot(cinder: Cinder, id: string, ops: GroupSnapshotOps, signal: AbortSignal) {
  return deleteUntilGone({
    remove: () => cinder.deleteGroupSnapshot(id, signal),
    find: () => cinder.findGroupSnapshot(id, signal),
    refused: async (gs, message) =>
      failedPrecondition(`group snapshot ${id} is ${gs.status} and cannot be deleted now: ${message}`),
    what: `group snapshot ${id} to be deleted`,
    signal,
    estimate: ops.took.delete,
  });
}

/** CreateVolumeGroupSnapshot: idempotent by name; blocks until every member is cut. */
export async function createGroupSnapshot(
  t: Tenant,
  req: CreateVolumeGroupSnapshotRequest__Output,
  ops: GroupSnapshotOps,
  signal: AbortSignal,
): Promise<VolumeGroupSnapshot> {
  const name = requireId(req.name, 'name');
  const sourceIds = req.source_volume_ids.map((id, i) => requireId(id, `source_volume_ids[${i}]`));
  if (!sourceIds.length) throw invalidArgument('source_volume_ids: a group snapshot needs at least one volume');
  if (sourceIds.length > MAX_GROUP_MEMBERS)
    throw invalidArgument(
      `source_volume_ids: ${sourceIds.length} volumes; a group snapshot takes at most ${MAX_GROUP_MEMBERS}`,
    );
  const twice = sourceIds.find((id, i) => sourceIds.indexOf(id) !== i);
  if (twice) throw invalidArgument(`source_volume_ids: volume ${twice} is named twice`);
  const { groupType: wanted, k8s } = parseGroupParameters(req.parameters);
  const tags = { [META.cluster]: ops.clusterId, ...k8s };
  const cinder = t.cinder;

  return ops.serially(await t.projectId(signal), async () => {
    const type = await groupType(cinder, wanted, signal);
    const existing = (await cinder.groupSnapshotsNamed(name, signal)).filter((g) => !GONE.has(g.status));
    if (existing.length > 1)
      throw failedPrecondition(
        `${existing.length} Cinder group snapshots are named ${name} (${existing.map((g) => g.id).join(', ')}); delete the extra ones by hand`,
      );
    if (existing[0]) {
      if (existing[0].group_type_id !== type.id)
        throw alreadyExists(
          `group snapshot ${name} exists (${existing[0].id}) but of another group type than ${type.name}`,
        );
      const cut = await awaitCut(cinder, existing[0], ops, signal);
      if (cut?.status === 'available') {
        const members = await finishCut(cinder, cut, sourceIds, tags, ops, signal);
        const of = members.map((m) => m.volume_id).sort();
        if (of.join() !== [...sourceIds].sort().join())
          throw alreadyExists(
            `group snapshot ${name} exists (${cut.id}) but of volumes ${of.join(', ')}, not ${[...sourceIds].sort().join(', ')}`,
          );
        return groupSnapshotView(cut, members, t);
      }
      if (cut) await removeGroupSnapshot(cinder, cut.id, ops, signal); // a failed earlier attempt: start again
    }

    const volumes = await Promise.all(sourceIds.map((id) => volumeOrNotFound(cinder, id, signal)));
    const busy = volumes.filter((v) => v.status !== 'available');
    if (busy.length)
      throw failedPrecondition(
        `volumes ${busy.map((v) => `${v.id} (${v.status})`).join(', ')} are not available: Cinder's RBD backend cuts a group snapshot member by member, which is write-order consistent only for volumes no pod writes to; stop the pods (detach the volumes) first, or snapshot them one by one`,
      );
    const volumeTypes = [...new Set(volumes.map((v) => v.volume_type_id ?? v.volume_type ?? ''))]
      .filter(Boolean)
      .sort();
    const group = await sharedGroup(cinder, type, volumeTypes, ops, signal);
    let gs: CinderGroupSnapshot | undefined;
    try {
      await changeMembers(cinder, group, { add: sourceIds }, ops, signal);
      await failpoint('group-snapshot:filled');
      // seen to its end past the caller's deadline, as CreateSnapshot's POST
      gs = await cinder.createGroupSnapshot(
        { group_id: group.id, name, description: `${DRIVER_NAME} cluster ${ops.clusterId}` },
        AbortSignal.timeout(POST_TIMEOUT_MS),
      );
      gs = { ...gs, status: 'creating' }; // POST answers with the id and name only
      await failpoint('group-snapshot:posted');
      const cut = await awaitCut(cinder, gs, ops, signal);
      if (!cut)
        throw unavailable(
          `group snapshot ${name} (${gs.id}) disappeared while being cut (deleted by someone else?); retry to take it again`,
        );
      if (cut.status !== 'available')
        throw internal(
          `Cinder could not cut group snapshot ${name} (${cut.id} went to ${cut.status}): ${await cinder.failureReason(cut.id, signal)}`,
        );
      return groupSnapshotView(cut, await finishCut(cinder, cut, sourceIds, tags, ops, signal), t);
    } catch (e) {
      // nothing half-made stays: the group snapshot (its members with it), the volumes in the group, an idle group
      const undo = async () => {
        // Cinder deletes a group snapshot only once it is no longer being cut
        const settled = gs && (await awaitCut(cinder, gs, ops, AbortSignal.timeout(POST_TIMEOUT_MS)));
        if (settled) await removeGroupSnapshot(cinder, settled.id, ops, AbortSignal.timeout(POST_TIMEOUT_MS));
        await releaseIdleGroups(cinder, ops, AbortSignal.timeout(POST_TIMEOUT_MS));
      };
      await undo().catch((u: Error) => {
        throw internal(
          `${(e as Error).message}; undoing the attempt failed too (${u.message}): retry the request, which finds and repairs what is left`,
        );
      });
      throw e;
    }
  });
}

/**
 * The members of a group snapshot, checked against the ids the CO knows (a mismatch → INVALID_ARGUMENT):
 * the tagged ones, and any it names that belong to it untagged (a group snapshot made without this driver).
 */
async function membersMatching(
  cinder: Cinder,
  gs: CinderGroupSnapshot,
  snapshotIds: string[],
  signal: AbortSignal,
): Promise<CinderSnapshot[]> {
  const asked = [...new Set(snapshotIds)].sort();
  if (asked.length > MAX_GROUP_MEMBERS)
    throw invalidArgument(
      `snapshot_ids: ${asked.length} ids; a group snapshot has at most ${MAX_GROUP_MEMBERS} members`,
    );
  const members = new Map((await taggedMembers(cinder, gs.id, signal)).map((s) => [s.id, s]));
  for (const id of asked.filter((x) => !members.has(x))) {
    const s = await cinder.findSnapshot(id, signal);
    if (s?.group_snapshot_id === gs.id) members.set(id, s);
  }
  const have = [...members.keys()].sort();
  if (asked.length && have.join() !== asked.join())
    throw invalidArgument(
      `snapshot_ids do not match group snapshot ${gs.id}: its members are ${have.join(', ') || 'none'}, the request names ${asked.join(', ')}`,
    );
  return [...members.values()].sort((a, b) => a.volume_id.localeCompare(b.volume_id));
}

/** DeleteVolumeGroupSnapshot: idempotent; the members go with it, then an idle group. */
export async function deleteGroupSnapshot(
  t: Tenant,
  req: { group_snapshot_id?: string; snapshot_ids?: string[] },
  ops: GroupSnapshotOps,
  signal: AbortSignal,
): Promise<void> {
  const id = requireId(req.group_snapshot_id, 'group_snapshot_id');
  const cinder = t.cinder;
  await ops.serially(await t.projectId(signal), async () => {
    const gs = await cinder.findGroupSnapshot(id, signal);
    if (gs) {
      await membersMatching(cinder, gs, req.snapshot_ids ?? [], signal);
      const left = await removeGroupSnapshot(cinder, id, ops, signal);
      if (left?.status === 'available')
        throw failedPrecondition(
          `group snapshot ${id} is in use (volumes were cloned from its members?): ${await cinder.failureReason(id, signal)}`,
        );
      if (left)
        throw internal(
          `Cinder could not delete group snapshot ${id} (now ${left.status}): ${await cinder.failureReason(id, signal)}`,
        );
    }
    await releaseIdleGroups(cinder, ops, signal);
  });
}

/** GetVolumeGroupSnapshot: current state, not blocking while it is being cut. */
export async function getGroupSnapshot(
  t: Tenant,
  req: { group_snapshot_id?: string; snapshot_ids?: string[] },
  signal: AbortSignal,
): Promise<VolumeGroupSnapshot> {
  const id = requireId(req.group_snapshot_id, 'group_snapshot_id');
  const gs = await t.cinder.findGroupSnapshot(id, signal);
  if (!gs) throw notFound(`group snapshot ${id} does not exist`);
  return groupSnapshotView(gs, await membersMatching(t.cinder, gs, req.snapshot_ids ?? [], signal), t);
}
