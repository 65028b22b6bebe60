import { z } from 'zod';

/**
 * Where fencing keeps what it knows, in Ceph beside the images (so the controller, the `fence` command
 * and every node read one truth, and it survives any process): per node and pool, one RADOS object
 * `stackube-csi.fencing.<node>` whose omap holds
 * - `mapper/<image>`: the Ceph client instances the node's mapper registered for the image (written by
 *   the node at stage, before it reports the stage done; removed at unstage);
 * - `fence/<image>`: a fence of the node's clients for the image (written by the controller before it
 *   blocklists anyone; `released` by the node once it has torn its stage down without writing);
 * - `node` (in the first configured pool only): the operator's `stackube-csi fence NODE`.
 * Not the image's own metadata: librbd hands an image-meta write to the exclusive-lock owner, which on
 * a lost node never answers. Imported by the controller's Ceph module and the node alike: no imports.
 */

export const fencingObject = (node: string) => `stackube-csi.fencing.${node}`;
export const mapperKey = (image: string) => `mapper/${image}`;
export const fenceKey = (image: string) => `fence/${image}`;
export const NODE_MARK_KEY = 'node';

/** One Ceph client instance as the blocklist and `rbd status` name it: `ip:port/nonce`. */
export const CLIENT_ADDRESS = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\]):\d{1,5}\/\d{1,20}$/;

const clients = z.array(z.string().regex(CLIENT_ADDRESS)).max(64);

export const mapperRecordSchema = z.object({ clients, at: z.string().max(64) });
export type MapperRecord = z.infer<typeof mapperRecordSchema>;

/**
 * fencing: written before the first blocklist entry (the clients to fence are fixed from here on);
 * fenced: blocklisted and the image's lock broken; released: the node tore its stage down, the entries
 * may go.
 */
export const FENCE_STATES = ['fencing', 'fenced', 'released'] as const;
export const fenceRecordSchema = z.object({
  clients,
  state: z.enum(FENCE_STATES),
  /** Why the node was taken for lost. */
  reason: z.string().max(200),
  at: z.string().max(64),
});
export type FenceRecord = z.infer<typeof fenceRecordSchema>;

export const nodeMarkSchema = z.object({ reason: z.string().max(200), at: z.string().max(64) });
export type NodeMark = z.infer<typeof nodeMarkSchema>;

/** Longer than any record written here (64 client addresses and a reason): a longer value is someone else's. */
const MAX_RECORD_CHARS = 16_384;

/** A record as stored, or undefined for one that is not (a foreign, damaged or oversized value is no record). */
export function parseRecord<T>(schema: z.ZodType<T>, text: string | undefined): T | undefined {
  if (text === undefined || text.length > MAX_RECORD_CHARS) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** The Kubernetes taint of a node an admin declared shut down (non-graceful node shutdown). */
export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';
