import { TOPOLOGY_ZONE_KEY } from '../package-info.js';
import type { RpcSpec } from '../server/interceptors.js';
import type { NodeGetCapabilitiesResponse } from './generated/csi/v1/NodeGetCapabilitiesResponse.js';
import type { NodeGetInfoResponse } from './generated/csi/v1/NodeGetInfoResponse.js';

export interface NodeServiceOptions {
  nodeId: string;
  zone: string;
  maxVolumesPerNode: number;
}

/** The Node service: what this node is, and (as they are built) the volume RPCs. */
export function nodeService(o: NodeServiceOptions): Record<string, RpcSpec> {
  return {
    NodeGetCapabilities: {
      // Only what works is advertised; the volume RPCs add theirs as they land.
      handler: async (): Promise<NodeGetCapabilitiesResponse> => ({ capabilities: [] }),
    },
    NodeGetInfo: {
      handler: async (): Promise<NodeGetInfoResponse> => ({
        node_id: o.nodeId,
        max_volumes_per_node: o.maxVolumesPerNode,
        accessible_topology: { segments: { [TOPOLOGY_ZONE_KEY]: o.zone } },
      }),
    },
  };
}
