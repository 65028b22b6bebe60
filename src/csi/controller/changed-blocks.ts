import { isCinderId } from '../../ceph/names.js';
import { CephError } from '../../ceph/cli.js';
import type { Extent, ImageRef, RbdReader, RbdSnapshot } from '../../ceph/rbd.js';
import type { CinderSnapshot } from '../../openstack/cinder.js';
import { failedPrecondition, invalidArgument, notFound, outOfRange, unavailable } from '../../server/errors.js';
import type { BlockMetadata } from '../generated/csi/v1/BlockMetadata.js';
import type { GetMetadataDeltaResponse } from '../generated/csi/v1/GetMetadataDeltaResponse.js';
import { GiB } from './sizes.js';
import type { Tenant } from './tenants.js';

/** Extents per message when the client leaves it to the plugin, and the most it may ask for (~100 KB). */
export const DEFAULT_PAGE = 1024;
export const MAX_PAGE = 4096;

/** What both RPCs stream (GetMetadataAllocatedResponse has the same shape). */
export type MetadataPage = GetMetadataDeltaResponse & { block_metadata: BlockMetadata[] };

export interface ExtentQuery {
  startingOffset: number;
  maxResults: number;
}

/** Where a Cinder snapshot lives in Ceph: its volume's image and the RBD snapshot of it. */
interface RbdSnapshotOf {
  ref: ImageRef;
  snap: RbdSnapshot;
}

function checkQuery(q: ExtentQuery): void {
  if (!Number.isSafeInteger(q.startingOffset) || q.startingOffset < 0)
    throw invalidArgument('starting_offset must be a byte offset of 0 or more');
  if (!Number.isSafeInteger(q.maxResults) || q.maxResults < 0)
    throw invalidArgument('max_results must be 0 (the plugin chooses) or a positive count');
}

/** A snapshot the tenant's project sees in Cinder, ready to be read; anything else is its CSI error. */
async function visibleSnapshot(t: Tenant, field: string, id: string, signal: AbortSignal): Promise<CinderSnapshot> {
  if (!id) throw invalidArgument(`${field} is required`);
  const s = await t.cinder.findSnapshot(id, signal);
  // another tenant's snapshot is as absent as one that never was
  if (!s) throw notFound(`${field} ${id} does not exist (in this tenant's project)`);
  if (s.status === 'creating') throw unavailable(`snapshot ${id} is still being cut; ask again once it is ready`);
  if (s.status !== 'available')
    throw failedPrecondition(`snapshot ${id} is ${s.status}: only an available snapshot's blocks can be listed`);
  return s;
}

const notTracked = (what: string, why: string) =>
  failedPrecondition(`changed block tracking is not available for ${what}: ${why}; take a full backup`);
const NOT_IN_POOLS = 'its RBD image is not in the Ceph pools this driver reads (--rbd-pools)';

/** The RBD image of a Cinder volume: another backend, or an image Cinder renamed when it migrated it, has none. */
async function imageOf(rbd: RbdReader, volumeId: string, signal: AbortSignal): Promise<ImageRef> {
  // Cinder's ids are UUIDs; anything else never names an RBD image of Cinder's
  const ref = isCinderId(volumeId) ? await rbd.locate(`volume-${volumeId}`, signal) : undefined;
  if (!ref) throw notTracked(`volume ${volumeId}`, NOT_IN_POOLS);
  return ref;
}

/** The RBD snapshots behind Cinder snapshots of one volume, found in the pools the driver reads. */
async function rbdSnapshots(
  rbd: RbdReader,
  volumeId: string,
  snapshots: CinderSnapshot[],
  signal: AbortSignal,
): Promise<RbdSnapshotOf[]> {
  const found = isCinderId(volumeId) ? await rbd.findImage(`volume-${volumeId}`, signal) : undefined;
  if (!found) throw notTracked(`volume ${volumeId}`, NOT_IN_POOLS);
  return snapshots.map((s) => {
    const snap = found.snapshots.find((r) => r.name === `snapshot-${s.id}`);
    if (!snap) throw notTracked(`snapshot ${s.id}`, "it is not an RBD snapshot of its volume's image");
    return { ref: found.ref, snap };
  });
}

/** rbd's extents, where an image or snapshot that is not there means there is no block map to read. */
async function* tracked(extents: AsyncIterable<Extent>, snapshotId: string): AsyncGenerator<Extent> {
  try {
    yield* extents;
  } catch (e) {
    if (e instanceof CephError && e.kind === 'not-found')
      throw notTracked(`snapshot ${snapshotId}`, "it is not an RBD snapshot of its volume's image");
    throw e;
  }
}

/**
 * The extents of a stream in pages: adjacent extents merged (rbd prints one per object), cut to start at
 * `startingOffset` (the spec lets a resumed stream start there exactly), at most `maxResults` a page. The
 * first page goes out even when empty, so the client learns the capacity and the metadata type.
 */
export async function* extentPages(
  extents: AsyncIterable<Extent>,
  capacity: number,
  q: ExtentQuery,
): AsyncGenerator<MetadataPage> {
  const size = Math.min(q.maxResults || DEFAULT_PAGE, MAX_PAGE);
  const page = (block_metadata: BlockMetadata[]): MetadataPage => ({
    block_metadata_type: 'VARIABLE_LENGTH',
    volume_capacity_bytes: capacity,
    block_metadata,
  });
  let batch: BlockMetadata[] = [];
  let sent = false;
  let run: Extent | undefined;
  const flush = function* (e: Extent) {
    const end = e.offset + e.length;
    if (end <= q.startingOffset) return;
    const from = Math.max(e.offset, q.startingOffset);
    batch.push({ byte_offset: from, size_bytes: end - from });
    if (batch.length >= size) {
      yield page(batch);
      sent = true;
      batch = [];
    }
  };
  for await (const e of extents) {
    if (run && run.offset + run.length === e.offset) run = { offset: run.offset, length: run.length + e.length };
    else {
      if (run) yield* flush(run);
      run = e;
    }
  }
  if (run) yield* flush(run);
  if (batch.length || !sent) yield page(batch);
}

function checkOffset(q: ExtentQuery, capacity: number): void {
  if (q.startingOffset >= capacity)
    throw outOfRange(`starting_offset ${q.startingOffset} is not below the volume's size (${capacity} bytes)`);
}

/** GetMetadataAllocated: the extents of one snapshot that hold data (whole RADOS objects). */
export async function* allocatedBlocks(
  t: Tenant,
  rbd: RbdReader,
  snapshotId: string,
  q: ExtentQuery,
  signal: AbortSignal,
): AsyncGenerator<MetadataPage> {
  checkQuery(q);
  const s = await visibleSnapshot(t, 'snapshot_id', snapshotId, signal);
  // Cinder's RBD images are exactly their size in GiB, and a snapshot has the size its volume had
  const capacity = s.size * GiB;
  checkOffset(q, capacity);
  const ref = await imageOf(rbd, s.volume_id, signal);
  yield* extentPages(tracked(rbd.allocated(ref, `snapshot-${s.id}`, signal), s.id), capacity, q);
}

/** GetMetadataDelta: the extents written or discarded between two snapshots of one volume, to the byte. */
export async function* changedBlocks(
  t: Tenant,
  rbd: RbdReader,
  ids: { base: string; target: string },
  q: ExtentQuery,
  signal: AbortSignal,
): AsyncGenerator<MetadataPage> {
  checkQuery(q);
  const [base, target] = await Promise.all([
    visibleSnapshot(t, 'base_snapshot_id', ids.base, signal),
    visibleSnapshot(t, 'target_snapshot_id', ids.target, signal),
  ]);
  if (base.volume_id !== target.volume_id)
    throw invalidArgument(
      `base_snapshot_id ${base.id} and target_snapshot_id ${target.id} are snapshots of different volumes; a delta is between two snapshots of one volume`,
    );
  const [from, to] = await rbdSnapshots(rbd, base.volume_id, [base, target], signal);
  // RBD snapshot ids grow with every snapshot cut: they order the two exactly, whatever the clocks say
  if (from!.snap.id >= to!.snap.id)
    throw invalidArgument(
      base.id === target.id
        ? `base_snapshot_id and target_snapshot_id are the same snapshot ${base.id}; the target must be taken after the base`
        : `target_snapshot_id ${target.id} was taken before base_snapshot_id ${base.id}; the target must be the later one`,
    );
  checkOffset(q, to!.snap.size);
  yield* extentPages(
    tracked(rbd.changed(to!.ref, from!.snap.name, to!.snap.name, signal), target.id),
    to!.snap.size,
    q,
  );
}
