import { z } from 'zod';
import { invalidArgument } from '../server/errors.js';
import { PUBLISH_CONTEXT_KEYS } from '../vocabulary.js';

/**
 * The contract between ControllerPublishVolume (writes publish_context, its keys in the vocabulary) and
 * the node (reads it): everything the node needs to map the RBD image, each value a string, the whole
 * map well under 4 KiB. Cinder hands out no Ceph key (OSSN-0085): the node takes it from its secret or keyring.
 */
export interface RbdPublishContext {
  pool: string;
  image: string;
  /** host:port of each monitor, IPv6 hosts in brackets. */
  monitors: string[];
  user: string;
  cluster: string;
  attachmentId: string;
  accessMode: 'rw' | 'ro';
  /** The volume it was published for: the node stages it as that volume only. */
  volumeId: string;
}

const rbdConnectionData = z.object({
  name: z.string().regex(/^[^/]+\/[^/]+$/, 'name must be pool/image'),
  hosts: z.array(z.string()).min(1, 'no monitor hosts'),
  ports: z.array(z.union([z.string(), z.number()])).min(1, 'no monitor ports'),
  auth_username: z.string().nullish(),
  cluster_name: z.string().nullish(),
});

/**
 * The attachments API returns connection_info flattened ({driver_volume_type, name, hosts, …});
 * os-initialize_connection nests the driver's part under `data`. Both are accepted.
 */
const connectionInfoSchema = z.preprocess(
  (ci) =>
    ci && typeof ci === 'object' && !('data' in ci)
      ? { driver_volume_type: (ci as { driver_volume_type?: unknown }).driver_volume_type, data: ci }
      : ci,
  z.object({
    driver_volume_type: z.literal('rbd', { message: 'only RBD volumes are supported by this driver' }),
    data: rbdConnectionData,
  }),
);

/** The pool and image an attachment's connection_info names, or undefined when it names no RBD image. */
export function rbdImageOf(connectionInfo: unknown): { pool: string; image: string } | undefined {
  const r = connectionInfoSchema.safeParse(connectionInfo);
  if (!r.success) return undefined;
  const [pool, image] = r.data.data.name.split('/') as [string, string];
  return { pool, image };
}

/** Cinder's RBD connection_info (from an attachment) → publish_context. */
export function publishContextFromConnection(
  connectionInfo: unknown,
  attachmentId: string,
  accessMode: 'rw' | 'ro',
  volumeId: string,
): Record<string, string> {
  const r = connectionInfoSchema.safeParse(connectionInfo);
  if (!r.success)
    throw new Error(
      `Cinder returned connection info this driver cannot use: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  const d = r.data.data;
  const [pool, image] = d.name.split('/') as [string, string];
  const monitors = d.hosts.map((h, i) => `${h.includes(':') ? `[${h}]` : h}:${d.ports[i] ?? d.ports[0]}`);
  const K = PUBLISH_CONTEXT_KEYS;
  return {
    [K.pool]: pool,
    [K.image]: image,
    [K.monitors]: monitors.join(','),
    [K.user]: d.auth_username || 'admin',
    [K.cluster]: d.cluster_name || 'ceph',
    [K.attachmentId]: attachmentId,
    [K.accessMode]: accessMode,
    [K.volumeId]: volumeId,
  };
}

const publishContextSchema = z.object({
  [PUBLISH_CONTEXT_KEYS.pool]: z.string().regex(/^[\w.-]+$/, 'must be an RBD pool name'),
  [PUBLISH_CONTEXT_KEYS.image]: z.string().regex(/^[\w.-]+$/, 'must be an RBD image name'),
  [PUBLISH_CONTEXT_KEYS.monitors]: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d+(,(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d+)*$/, 'must be host:port[,host:port…]'),
  [PUBLISH_CONTEXT_KEYS.user]: z.string().regex(/^[\w.-]+$/, 'must be a Ceph user name'),
  [PUBLISH_CONTEXT_KEYS.cluster]: z
    .string()
    .regex(/^[\w.-]+$/)
    .default('ceph'),
  [PUBLISH_CONTEXT_KEYS.attachmentId]: z.string().default(''),
  [PUBLISH_CONTEXT_KEYS.accessMode]: z.enum(['rw', 'ro']).default('rw'),
  [PUBLISH_CONTEXT_KEYS.volumeId]: z.string().min(1, 'is required').max(128),
});

/** publish_context from NodeStage → what the mapper needs, or INVALID_ARGUMENT naming the bad key. */
export function parsePublishContext(pc: Record<string, string> | undefined): RbdPublishContext {
  const r = publishContextSchema.safeParse(pc ?? {});
  if (!r.success)
    throw invalidArgument(
      `publish_context is not one ControllerPublishVolume of cinder.csi.stackube.io wrote (one before 0.2 names no volumeId: publish the volume again): ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.code === 'invalid_type' ? 'is required' : i.message}`).join('; ')}`,
    );
  const v = r.data;
  const K = PUBLISH_CONTEXT_KEYS;
  return {
    pool: v[K.pool],
    image: v[K.image],
    monitors: v[K.monitors].split(','),
    user: v[K.user],
    cluster: v[K.cluster],
    attachmentId: v[K.attachmentId],
    accessMode: v[K.accessMode],
    volumeId: v[K.volumeId],
  };
}
