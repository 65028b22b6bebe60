import type { Cinder, CinderSnapshot } from '../../openstack/cinder.js';
import { OpenStackError } from '../../openstack/errors.js';
import { DurationEstimate, untilSettled } from '../../openstack/wait.js';
import {
  alreadyExists,
  failedPrecondition,
  internal,
  invalidArgument,
  notFound,
  unavailable,
} from '../../server/errors.js';
import type { CreateSnapshotRequest__Output } from '../generated/csi/v1/CreateSnapshotRequest.js';
import type { CreateSnapshotResponse } from '../generated/csi/v1/CreateSnapshotResponse.js';
import { deleteUntilGone } from './deletion.js';
import { META } from './parameters.js';
import type { Tenant } from './tenants.js';
import { snapshotView } from './views.js';
import { POST_TIMEOUT_MS, requireId } from './volumes.js';

/** Keys the external-snapshotter adds with --extra-create-metadata; recorded on the Cinder snapshot. */
const K8S_SNAPSHOT_KEYS = [
  'csi.storage.k8s.io/volumesnapshot/name',
  'csi.storage.k8s.io/volumesnapshot/namespace',
  'csi.storage.k8s.io/volumesnapshotcontent/name',
];

export class SnapshotOps {
  readonly took = { create: new DurationEstimate(), delete: new DurationEstimate() };

  constructor(readonly clusterId: string) {}
}

function snapshotMetadata(clusterId: string, params: Record<string, string> | undefined): Record<string, string> {
  const meta: Record<string, string> = { [META.cluster]: clusterId };
  for (const [k, v] of Object.entries(params ?? {})) {
    if (K8S_SNAPSHOT_KEYS.includes(k)) meta[k] = v;
    else if (!k.startsWith('csi.storage.k8s.io/'))
      throw invalidArgument(`parameters: unknown parameter "${k}" (snapshots take no parameters)`);
  }
  return meta;
}

const awaitCut = (cinder: Cinder, s: CinderSnapshot, ops: SnapshotOps, signal: AbortSignal) =>
  untilSettled(s, () => cinder.findSnapshot(s.id, signal), ['creating'], {
    what: `snapshot ${s.name} (${s.id}) to be cut`,
    signal,
    estimate: ops.took.create,
  });

/** CreateSnapshot: idempotent by name; blocks until Cinder has cut it (RBD has no post-processing). */
export async function createSnapshot(
  t: Tenant,
  req: CreateSnapshotRequest__Output,
  ops: SnapshotOps,
  signal: AbortSignal,
): Promise<CreateSnapshotResponse> {
  const name = requireId(req.name, 'name');
  const volumeId = requireId(req.source_volume_id, 'source_volume_id');
  const metadata = snapshotMetadata(ops.clusterId, req.parameters);
  const cinder = t.cinder;

  // a group snapshot's members carry its name too, and are never what a CreateSnapshot made
  const existing = (await cinder.snapshotsNamed(name, signal)).filter(
    (s) => s.status !== 'deleting' && s.status !== 'error_deleting' && !s.group_snapshot_id,
  );
  if (existing.length > 1)
    throw failedPrecondition(
      `${existing.length} Cinder snapshots are named ${name} (${existing.map((s) => s.id).join(', ')}); delete the extra ones by hand`,
    );
  let snap: CinderSnapshot | undefined = existing[0];
  if (snap && snap.volume_id !== volumeId)
    throw alreadyExists(`snapshot ${name} exists (${snap.id}) but of volume ${snap.volume_id}, not ${volumeId}`);
  if (snap) {
    snap = await awaitCut(cinder, snap, ops, signal);
    if (snap?.status === 'error')
      await cinder.deleteSnapshot(snap.id, signal); // a failed earlier attempt: start again
    else if (snap) return { snapshot: snapshotView(snap, t) };
  }

  try {
    // seen to its end past the caller's deadline, under the name's lock (as CreateVolume's POST)
    snap = await cinder.createSnapshot({ name, volume_id: volumeId, metadata }, AbortSignal.timeout(POST_TIMEOUT_MS));
    signal.throwIfAborted();
  } catch (e) {
    if (e instanceof OpenStackError && e.kind === 'not-found')
      throw notFound(`source volume ${volumeId} does not exist: ${e.message}`);
    if (e instanceof OpenStackError && e.kind === 'bad-request' && /status/i.test(e.message))
      throw failedPrecondition(`volume ${volumeId} cannot be snapshotted now: ${e.message}`);
    throw e;
  }
  const done = await awaitCut(cinder, snap, ops, signal);
  if (!done)
    throw unavailable(
      `snapshot ${name} (${snap.id}) disappeared while being cut (deleted by someone else?); retry to take it again`,
    );
  if (done.status !== 'available') {
    const reason = await cinder.failureReason(done.id, signal);
    await cinder.deleteSnapshot(done.id, signal);
    throw internal(
      `Cinder could not snapshot volume ${volumeId} (snapshot ${done.id} went to ${done.status}, so it was deleted): ${reason}`,
    );
  }
  return { snapshot: snapshotView(done, t) };
}

/** DeleteSnapshot: idempotent; waits until it is gone, or Cinder says it is still in use. */
export async function deleteSnapshot(
  t: Tenant,
  snapshotId: string | undefined,
  ops: SnapshotOps,
  signal: AbortSignal,
): Promise<void> {
  const id = requireId(snapshotId, 'snapshot_id');
  const cinder = t.cinder;
  const left = await deleteUntilGone({
    remove: () => cinder.deleteSnapshot(id, signal),
    find: () => cinder.findSnapshot(id, signal),
    refused: async (s, message) =>
      failedPrecondition(
        s.group_snapshot_id
          ? `snapshot ${id} is a member of group snapshot ${s.group_snapshot_id}: it is deleted with the group snapshot (DeleteVolumeGroupSnapshot), not on its own`
          : `snapshot ${id} is ${s.status} and cannot be deleted now: ${message}`,
      ),
    what: `snapshot ${id} to be deleted`,
    signal,
    estimate: ops.took.delete,
  });
  if (!left) return;
  // The RBD driver puts a snapshot that clones still depend on back to `available`.
  if (left.status === 'available')
    throw failedPrecondition(
      `snapshot ${id} is in use (volumes were cloned from it): ${await cinder.failureReason(id, signal)}`,
    );
  throw internal(
    `Cinder could not delete snapshot ${id} (now ${left.status}): ${await cinder.failureReason(id, signal)}`,
  );
}

/** GetSnapshot (alpha): current state, not blocking while it is being cut. */
export async function getSnapshot(
  t: Tenant,
  snapshotId: string | undefined,
  signal: AbortSignal,
): Promise<CreateSnapshotResponse> {
  const id = requireId(snapshotId, 'snapshot_id');
  const s = await t.cinder.findSnapshot(id, signal);
  if (!s) throw notFound(`snapshot ${id} does not exist`);
  return { snapshot: snapshotView(s, t) };
}
