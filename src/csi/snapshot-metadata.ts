import type { RbdReader } from '../ceph/rbd.js';
import type { SnapshotMetadataHandlers } from './generated/csi/v1/SnapshotMetadata.js';
import type { ServiceSpecs } from './service-specs.js';
import { allocatedBlocks, changedBlocks } from './controller/changed-blocks.js';
import { TenantScope } from './controller/scope.js';
import type { Tenants } from './controller/tenants.js';

export interface SnapshotMetadataOptions {
  tenants: Tenants;
  /** Ceph as the operator's read-only identity: where the block maps are. */
  rbd: RbdReader;
}

/**
 * The SnapshotMetadata service (changed block tracking): the allocated or changed extents of Cinder
 * snapshots, read from the RBD snapshots behind them once the tenant's project has shown it sees them.
 */
export function snapshotMetadataService(o: SnapshotMetadataOptions): ServiceSpecs<SnapshotMetadataHandlers> {
  const scope = new TenantScope(o.tenants);
  return {
    GetMetadataAllocated: {
      stream: (r, ctx) =>
        scope.streamByIds([r.snapshot_id], 'snapshotter', r.secrets, ctx, (t, [id]) =>
          allocatedBlocks(t, o.rbd, id!, { startingOffset: r.starting_offset, maxResults: r.max_results }, ctx.signal),
        ),
    },
    GetMetadataDelta: {
      stream: (r, ctx) =>
        scope.streamByIds(
          [r.base_snapshot_id, r.target_snapshot_id],
          'snapshotter',
          r.secrets,
          ctx,
          (t, [base, target]) =>
            changedBlocks(
              t,
              o.rbd,
              { base: base!, target: target! },
              { startingOffset: r.starting_offset, maxResults: r.max_results },
              ctx.signal,
            ),
        ),
    },
  };
}
