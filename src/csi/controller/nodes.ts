import type { Connector, VolumeAttachmentSummary } from '../../openstack/cinder.js';
import { invalidArgument, notFound } from '../../server/errors.js';

/** Kubernetes node names are DNS-1123 subdomains: lower-case alphanumerics, '-' and '.', at most 253. */
const NODE_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const isNodeName = (id: string) => NODE_NAME.test(id);

/**
 * A node id is the Kubernetes node name (NodeGetInfo). There is no node registry the controller
 * could consult (no Nova; a node is whatever kubelet registered), so "node does not exist" can only
 * be known for ids no Kubernetes node can have: those are NOT_FOUND. An empty id is INVALID_ARGUMENT.
 */
export function checkNodeId(id: string | undefined): string {
  if (!id) throw invalidArgument('node_id is required');
  if (!isNodeName(id))
    throw notFound(`node "${id.slice(0, 80)}" does not exist: node ids of this driver are Kubernetes node names (lower-case DNS-1123 subdomains, at most 253 characters)`);
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
