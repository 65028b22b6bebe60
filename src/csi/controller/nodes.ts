import type { KubeClient } from '../../kube/client.js';
import type { Connector, VolumeAttachmentSummary } from '../../openstack/cinder.js';
import { NODE_NAME } from '../../ceph/names.js';
import { DRIVER_NAME } from '../../package-info.js';
import { invalidArgument, notFound, resourceExhausted, unavailable } from '../../server/errors.js';
import { SharedFlights } from '../../shared-flight.js';

export const isNodeName = (id: string) => NODE_NAME.test(id);

/**
 * A node id is the Kubernetes node name (NodeGetInfo). Ids no Kubernetes node can have are NOT_FOUND
 * here already; whether a well-formed one exists is KnownNodes' to say. An empty id is INVALID_ARGUMENT.
 */
export function checkNodeId(id: string | undefined): string {
  if (!id) throw invalidArgument('node_id is required');
  if (!isNodeName(id))
    throw notFound(
      `node "${id.slice(0, 80)}" does not exist: node ids of this driver are Kubernetes node names (lower-case DNS-1123 subdomains, at most 253 characters)`,
    );
  return id;
}

/**
 * The host connector for a node. `host` names the node for Cinder's own records (hidden from
 * tenants); `mountpoint` records it again where a tenant can read it back — Cinder shows it as the
 * attachment's `device` in GET /volumes — which is how publish, unpublish and ListVolumes find
 * which node an attachment belongs to, atomically with its creation. No instance_uuid: Cinder would
 * consult Nova on detach. No ip: RBD ignores it, and the controller does not know the node's address.
 */
export function connectorFor(nodeId: string): Connector {
  return {
    host: nodeId,
    platform: 'x86_64',
    os_type: 'linux',
    multipath: false,
    initiator: `iqn.2024-01.io.stackube.csi:${nodeId}`,
    mountpoint: nodeId,
  };
}

/** The node an attachment serves, when this driver made it (no Nova server, a node name as device). */
export function nodeOfAttachment(a: VolumeAttachmentSummary): string | undefined {
  return !a.server_id && a.device && isNodeName(a.device) ? a.device : undefined;
}

export interface KnownNodesOptions {
  /** The Kubernetes API (in a cluster): CSINodes say which nodes run this driver, VolumeAttachments what they hold. */
  kube?: Pick<KubeClient, 'getCsiNode' | 'listVolumeAttachments'>;
  /** --mode all: the node plugin served beside this controller, and its max_volumes_per_node. */
  own?: { nodeId: string; maxVolumes: () => Promise<number> };
  /** The limit of a node that reports none (--max-volumes-per-node). */
  defaultLimit: number;
}

export interface NodeFacts {
  /** How many volumes the node may hold (what it reported in NodeGetInfo, through kubelet's CSINode). */
  limit: number;
  /** Volumes attached to it now, cluster-wide (VolumeAttachments); undefined: count the tenant's in Cinder. */
  attached?: number;
}

/** VolumeAttachments change with every attach: a list is reused this long for the counts of many publishes. */
const ATTACHMENTS_FRESH_MS = 2000;

/**
 * Which nodes exist for ControllerPublishVolume, and what they may hold. In a cluster: the CSINode
 * objects kubelet's registration creates, whose drivers[] entry for this driver carries the node id
 * (and, as allocatable.count, the node's max_volumes_per_node). In --mode all: the one node beside
 * the controller. A controller with neither cannot tell: it takes any well-formed node id (and counts
 * only the request tenant's attachments against the default limit) — documented in configure.md.
 */
export class KnownNodes {
  private readonly attachments = new SharedFlights<'all', { attacher: string; node: string }[]>({
    timeoutMs: 30_000,
    keepMs: ATTACHMENTS_FRESH_MS,
  });
  constructor(private readonly o: KnownNodesOptions) {}

  async facts(nodeId: string, signal?: AbortSignal): Promise<NodeFacts> {
    if (this.o.own?.nodeId === nodeId && !this.o.kube) return { limit: await this.o.own.maxVolumes() };
    if (!this.o.kube) {
      if (this.o.own)
        throw notFound(
          `node "${nodeId.slice(0, 80)}" does not exist: this driver serves node ${this.o.own.nodeId} only (--mode all)`,
        );
      return { limit: this.o.defaultLimit };
    }
    const limit = await this.registeredLimit(nodeId, signal);
    return { limit, attached: await this.attachedTo(nodeId, signal) };
  }

  private async registeredLimit(nodeId: string, signal?: AbortSignal): Promise<number> {
    let node;
    try {
      node = await this.o.kube!.getCsiNode(nodeId, signal);
    } catch (e) {
      const kind = (e as { kind?: string }).kind;
      if (kind === 'not-found') {
        if (this.o.own?.nodeId === nodeId) return this.o.own.maxVolumes();
        throw notFound(
          `node "${nodeId.slice(0, 80)}" does not exist: there is no CSINode of that name (kubelet has not registered the ${DRIVER_NAME} node plugin there)`,
        );
      }
      throw unavailable(`cannot tell whether node ${nodeId.slice(0, 80)} exists: ${(e as Error).message}`);
    }
    const entry = node.spec.drivers?.find((d) => d.name === DRIVER_NAME && d.nodeID === nodeId);
    if (!entry)
      throw notFound(
        `node "${nodeId.slice(0, 80)}" does not run the ${DRIVER_NAME} node plugin (its CSINode lists no such driver)`,
      );
    return entry.allocatable?.count ?? this.o.defaultLimit;
  }

  private async attachedTo(nodeId: string, signal?: AbortSignal): Promise<number> {
    const list = (own: AbortSignal) =>
      this.o
        .kube!.listVolumeAttachments(own)
        .then((l) =>
          l.items.filter((i) => i.status?.attached).map((i) => ({ attacher: i.spec.attacher, node: i.spec.nodeName })),
        );
    try {
      return (await this.attachments.get('all', list, signal)).filter(
        (a) => a.attacher === DRIVER_NAME && a.node === nodeId,
      ).length;
    } catch (e) {
      throw unavailable(`cannot count the volumes attached to node ${nodeId.slice(0, 80)}: ${(e as Error).message}`);
    }
  }
}

/** RESOURCE_EXHAUSTED when a node already holds its limit (the CO schedules by it; this guards the rest). */
export function checkRoom(nodeId: string, attached: number, limit: number): void {
  if (limit > 0 && attached >= limit)
    throw resourceExhausted(
      `node ${nodeId} already holds ${attached} volumes of this driver, its limit (max_volumes_per_node) is ${limit}: detach one first, or raise the limit (see docs/configure.md)`,
    );
}
