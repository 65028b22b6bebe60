import type { NodeVolumes } from '../node/volumes/node-volumes.js';
import { TOPOLOGY_ZONE_KEY } from '../package-info.js';
import { failedPrecondition, invalidArgument, outOfRange } from '../server/errors.js';
import { asCsi } from './status.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import type { ServiceSpecs } from './service-specs.js';
import type { NodeExpandVolumeRequest__Output } from './generated/csi/v1/NodeExpandVolumeRequest.js';
import type { NodeExpandVolumeResponse } from './generated/csi/v1/NodeExpandVolumeResponse.js';
import type { NodeGetCapabilitiesResponse } from './generated/csi/v1/NodeGetCapabilitiesResponse.js';
import type { NodeGetInfoResponse } from './generated/csi/v1/NodeGetInfoResponse.js';
import type { NodeGetVolumeStatsRequest__Output } from './generated/csi/v1/NodeGetVolumeStatsRequest.js';
import type { NodeGetVolumeStatsResponse } from './generated/csi/v1/NodeGetVolumeStatsResponse.js';
import type { NodePublishVolumeRequest__Output } from './generated/csi/v1/NodePublishVolumeRequest.js';
import type { NodeServiceCapability } from './generated/csi/v1/NodeServiceCapability.js';
import type { NodeStageVolumeRequest__Output } from './generated/csi/v1/NodeStageVolumeRequest.js';
import type { NodeUnpublishVolumeRequest__Output } from './generated/csi/v1/NodeUnpublishVolumeRequest.js';
import type { NodeUnstageVolumeRequest__Output } from './generated/csi/v1/NodeUnstageVolumeRequest.js';
import { isReadOnlyMode } from '../vocabulary.js';
import { kubeletPath, required, stageCredentials, volumeUse } from './node-requests.js';
import { parsePublishContext } from './volume-context.js';

export interface NodeServiceOptions {
  nodeId: string;
  zone: string;
  /**
   * What this node can hold now (measured at each NodeGetInfo: kubelet asks every nodeAllocatableUpdatePeriodSeconds).
   */
  maxVolumesPerNode: () => Promise<number>;
  /** The kubelet root as configured and, when it is a symlink, resolved. */
  kubeletRoots: readonly string[];
  volumes: NodeVolumes;
}

/** Only what works is advertised. */
const CAPABILITIES = [
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
  'VOLUME_MOUNT_GROUP',
] as const;

const byVolume = (r: { volume_id?: string }) => [r.volume_id];

/** The Node service: thin — validate, call NodeVolumes, map the result. */
export function nodeService(o: NodeServiceOptions): ServiceSpecs<NodeHandlers> {
  const path = (value: string | undefined, field: string) => kubeletPath(value, field, o.kubeletRoots);
  return {
    NodeGetCapabilities: {
      handler: async (): Promise<NodeGetCapabilitiesResponse> => ({
        capabilities: CAPABILITIES.map((type): NodeServiceCapability => ({ rpc: { type } })),
      }),
    },

    NodeGetInfo: {
      handler: async (): Promise<NodeGetInfoResponse> => ({
        node_id: o.nodeId,
        max_volumes_per_node: await o.maxVolumesPerNode(),
        accessible_topology: { segments: { [TOPOLOGY_ZONE_KEY]: o.zone } },
      }),
    },

    NodeStageVolume: {
      lockKeys: byVolume,
      handler: async (req: NodeStageVolumeRequest__Output, ctx) => {
        const volumeId = required(req.volume_id, 'volume_id');
        const stagingPath = path(req.staging_target_path, 'staging_target_path');
        const use = volumeUse(req.volume_capability, req.volume_context);
        const image = parsePublishContext(req.publish_context);
        const credentials = stageCredentials(req.secrets);
        const readonly = isReadOnlyMode(use.accessMode) || image.accessMode === 'ro';
        const { volumeId: publishedFor, ...spec } = image;
        await asCsi(ctx, () =>
          o.volumes.stage({
            ...use,
            volumeId,
            stagingPath,
            image: spec,
            publishedFor,
            readonly,
            credentials,
            signal: ctx.signal,
          }),
        );
        return {};
      },
    },

    NodeUnstageVolume: {
      lockKeys: byVolume,
      handler: async (req: NodeUnstageVolumeRequest__Output, ctx) => {
        const volumeId = required(req.volume_id, 'volume_id');
        const stagingPath = path(req.staging_target_path, 'staging_target_path');
        await asCsi(ctx, () => o.volumes.unstage(volumeId, stagingPath, ctx.signal));
        return {};
      },
    },

    NodePublishVolume: {
      lockKeys: byVolume,
      handler: async (req: NodePublishVolumeRequest__Output, ctx) => {
        const volumeId = required(req.volume_id, 'volume_id');
        const targetPath = path(req.target_path, 'target_path');
        const use = volumeUse(req.volume_capability, req.volume_context);
        // this plugin stages: a publish without a staging path is a CO that skipped NodeStageVolume
        const stagingPath = kubeletPath(
          req.staging_target_path,
          'staging_target_path',
          o.kubeletRoots,
          failedPrecondition,
        );
        await asCsi(ctx, () =>
          o.volumes.publish({
            ...use,
            volumeId,
            stagingPath,
            targetPath,
            readonly: req.readonly,
            volumeContext: req.volume_context ?? {},
            signal: ctx.signal,
            log: ctx.log,
          }),
        );
        return {};
      },
    },

    NodeUnpublishVolume: {
      lockKeys: byVolume,
      handler: async (req: NodeUnpublishVolumeRequest__Output, ctx) => {
        const volumeId = required(req.volume_id, 'volume_id');
        const targetPath = path(req.target_path, 'target_path');
        await asCsi(ctx, () => o.volumes.unpublish(volumeId, targetPath, ctx.signal));
        return {};
      },
    },

    NodeGetVolumeStats: {
      handler: async (req: NodeGetVolumeStatsRequest__Output, ctx): Promise<NodeGetVolumeStatsResponse> => {
        const volumeId = required(req.volume_id, 'volume_id');
        // read-only: a path is looked up among what this plugin staged and published, never touched
        // when it is not one of them (NOT_FOUND, as the spec says for a volume not at that path)
        const volumePath = required(req.volume_path, 'volume_path');
        const s = await asCsi(ctx, () => o.volumes.stats(volumeId, volumePath, ctx.signal));
        const usage: NodeGetVolumeStatsResponse['usage'] = [];
        if (s.usage) {
          usage.push({ unit: 'BYTES', ...s.usage.bytes });
          usage.push({ unit: 'INODES', ...s.usage.inodes });
        }
        if (s.sizeBytes !== undefined) usage.push({ unit: 'BYTES', total: s.sizeBytes });
        return { usage, volume_condition: { abnormal: !!s.problem, message: s.message } };
      },
    },

    NodeExpandVolume: {
      lockKeys: byVolume,
      handler: async (req: NodeExpandVolumeRequest__Output, ctx): Promise<NodeExpandVolumeResponse> => {
        const volumeId = required(req.volume_id, 'volume_id');
        const volumePath = required(req.volume_path, 'volume_path'); // looked up among known paths, as for stats
        const requiredBytes = req.capacity_range?.required_bytes ?? 0;
        const limitBytes = req.capacity_range?.limit_bytes ?? 0;
        if (requiredBytes < 0 || limitBytes < 0) throw invalidArgument('capacity_range bytes cannot be negative');
        if (limitBytes && requiredBytes > limitBytes)
          throw outOfRange(`capacity_range required_bytes ${requiredBytes} exceeds limit_bytes ${limitBytes}`);
        const accessType = req.volume_capability ? (req.volume_capability.block ? 'block' : 'mount') : undefined;
        const capacity_bytes = await asCsi(ctx, () =>
          o.volumes.expand(volumeId, volumePath, requiredBytes, accessType, ctx.signal),
        );
        return { capacity_bytes };
      },
    },
  };
}
