import type { Cinder, CinderVolume } from '../../openstack/cinder.js';
import { OpenStackError } from '../../openstack/errors.js';
import { alreadyExists, failedPrecondition, internal, invalidArgument } from '../../server/errors.js';
import type { ControllerPublishVolumeRequest__Output } from '../generated/csi/v1/ControllerPublishVolumeRequest.js';
import type { ControllerPublishVolumeResponse } from '../generated/csi/v1/ControllerPublishVolumeResponse.js';
import type { ControllerUnpublishVolumeRequest__Output } from '../generated/csi/v1/ControllerUnpublishVolumeRequest.js';
import { publishContextFromConnection, rbdImageOf } from '../volume-context.js';
import type { NodeFencing } from './fencing.js';
import { checkCapability, isMultiNode, isReadOnly, unsupportedReason } from './capabilities.js';
import { checkNodeId, checkRoom, connectorFor, type KnownNodes, nodeOfAttachment } from './nodes.js';
import type { Tenant } from './tenants.js';
import { requireId, volumeOrNotFound } from './volumes.js';

/** The spec caps what a CO must carry per volume; ours is ~300 bytes. */
const MAX_PUBLISH_CONTEXT_BYTES = 4096;

/** Volume states in which an attachment exists that never completed (a publish that died midway). */
const HALF_ATTACHED = new Set(['reserved', 'attaching']);

function contextFrom(
  connectionInfo: unknown,
  attachmentId: string,
  mode: 'rw' | 'ro',
  volumeId: string,
): Record<string, string> {
  let pc: Record<string, string>;
  try {
    pc = publishContextFromConnection(connectionInfo, attachmentId, mode, volumeId);
  } catch (e) {
    throw internal(`attachment ${attachmentId}: ${(e as Error).message}`);
  }
  const bytes = Object.entries(pc).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
  if (bytes > MAX_PUBLISH_CONTEXT_BYTES)
    throw internal(`publish_context would be ${bytes} bytes, over the ${MAX_PUBLISH_CONTEXT_BYTES} the CO must carry`);
  return pc;
}

/**
 * Attachments that never completed are leftovers of a publish that failed or was cut off: never
 * handed to a CO (publish answers only after os-complete), so they are removed before going on.
 * Only then is the volume's status honest about who has it.
 */
async function clearHalfAttachments(cinder: Cinder, v: CinderVolume, signal: AbortSignal): Promise<void> {
  if (!HALF_ATTACHED.has(v.status)) return;
  for (const a of await cinder.volumeAttachments(v.id, signal))
    if (a.status !== 'attached') await cinder.deleteAttachment(a.id, signal);
}

/** ControllerPublishVolume: one Cinder attachment per (volume, node), through the attachments API. */
export async function publishVolume(
  t: Tenant,
  nodes: KnownNodes,
  req: ControllerPublishVolumeRequest__Output,
  signal: AbortSignal,
  fencing?: NodeFencing,
): Promise<ControllerPublishVolumeResponse> {
  const id = requireId(req.volume_id, 'volume_id');
  const node = checkNodeId(req.node_id);
  // a node that gets volumes again has come back: fences it released since go (in the background)
  fencing?.unfenceReleased(node);
  const cap = checkCapability(req.volume_capability, 'volume_capability');
  const cinder = t.cinder;
  const v = await volumeOrNotFound(cinder, id, signal);
  const facts = await nodes.facts(node, signal);
  const why = unsupportedReason(cap, v);
  if (why) throw invalidArgument(`volume_capability: ${why}`);
  const mode = req.readonly || isReadOnly(cap) ? 'ro' : 'rw';

  const mine = v.attachments.find((a) => nodeOfAttachment(a) === node);
  if (mine) {
    const a = await cinder.getAttachment(mine.attachment_id, signal);
    if (a.attach_mode && a.attach_mode !== 'null' && a.attach_mode !== mode)
      throw alreadyExists(
        `volume ${id} is already published on node ${node} ${a.attach_mode === 'ro' ? 'read-only' : 'read-write'}; unpublish it before publishing it ${mode === 'ro' ? 'read-only' : 'read-write'}`,
      );
    return { publish_context: contextFrom(a.connection_info, a.id, mode, t.csiId(id)) };
  }
  const elsewhere = v.attachments.map(
    (a) => nodeOfAttachment(a) ?? (a.server_id ? `Nova server ${a.server_id}` : `attachment ${a.attachment_id}`),
  );
  if (elsewhere.length && (!v.multiattach || !isMultiNode(cap)))
    throw failedPrecondition(
      `volume ${id} is published on ${elsewhere.join(', ')} and ${v.multiattach ? `${cap.access_mode!.mode} allows one node` : 'is not multiattach'}; unpublish it there first`,
    );

  checkRoom(node, facts.attached ?? (await attachedInTenant(t, node, signal)), facts.limit);
  await clearHalfAttachments(cinder, v, signal);
  let a;
  try {
    a = await cinder.createAttachment(id, connectorFor(node), mode, signal);
  } catch (e) {
    if (e instanceof OpenStackError && e.kind === 'bad-request' && /status/i.test(e.message))
      throw failedPrecondition(`volume ${id} cannot be attached now: ${e.message}`);
    throw e;
  }
  try {
    await cinder.completeAttachment(a.id, signal);
    return { publish_context: contextFrom(a.connection_info, a.id, mode, t.csiId(id)) };
  } catch (e) {
    // Never leave an attachment the CO was not told about.
    await cinder.deleteAttachment(a.id).catch(() => undefined);
    throw e;
  }
}

/** Pages of the tenant's volumes looked through for a node's attachments, at most (1000 volumes each). */
const MAX_PAGES = 20;

/**
 * Without the Kubernetes API: the volumes of the request's tenant that are attached to the node. Only in-use volumes
 * are listed (the ones whose completed attachments the volume list shows at all): a tenant's whole list at every
 * publish made 40 publishes at once take four times the raw attachment calls.
 */
async function attachedInTenant(t: Tenant, node: string, signal: AbortSignal): Promise<number> {
  let count = 0;
  let marker: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const volumes = await t.cinder.listVolumes({ status: 'in-use', limit: 1000, marker }, signal);
    count += volumes.filter((v) => v.attachments.some((a) => nodeOfAttachment(a) === node)).length;
    if (volumes.length < 1000) break;
    marker = volumes.at(-1)!.id;
  }
  return count;
}

/**
 * ControllerUnpublishVolume: delete that node's attachment (every node's when node_id is empty). From a
 * lost node (fencing.ts) the attachment goes only once the node's Ceph clients for the image are fenced:
 * a partitioned node must not write on after another has taken the volume over.
 */
export async function unpublishVolume(
  t: Tenant,
  req: ControllerUnpublishVolumeRequest__Output,
  signal: AbortSignal,
  fencing?: NodeFencing,
): Promise<void> {
  const id = requireId(req.volume_id, 'volume_id');
  const cinder = t.cinder;
  const v = await cinder.findVolume(id, signal);
  if (!v) return; // a volume that is gone is published nowhere
  const node = req.node_id || undefined;
  for (const a of v.attachments) {
    const on = nodeOfAttachment(a); // attachments not made by this driver (Nova's) are left alone
    if (!on || (node && on !== node)) continue;
    const lost = fencing && (await fencing.lostReason(on, signal));
    if (lost) {
      const ref = rbdImageOf((await cinder.getAttachment(a.attachment_id, signal)).connection_info);
      if (ref) await fencing.fenceImage(on, ref, lost, signal);
    }
    await cinder.deleteAttachment(a.attachment_id, signal);
  }
  await clearHalfAttachments(cinder, v, signal);
}
