import { z } from 'zod';
import type { MapperKind } from '../host/capabilities.js';

/** The RBD image to map and where its cluster is (from publish_context). */
export interface ImageSpec {
  pool: string;
  image: string;
  /** host:port of each monitor, IPv6 hosts in brackets. */
  monitors: string[];
  /** Ceph user without the "client." prefix. */
  user: string;
  cluster: string;
}

export interface MapRequest {
  spec: ImageSpec;
  /** A keyring file holding the user's key; it may be removed as soon as map() returns. */
  keyringFile: string;
  readonly: boolean;
  /** A file-name-safe name for this volume: where a mapper keeps per-volume files. */
  volumeKey: string;
  signal?: AbortSignal;
  /**
   * What the caller must see before this mapping's Ceph client opens the image (the watchers it had): the mapper
   * starts its daemon meanwhile and waits for this before the open; a rejection fails the map with its error.
   */
  beforeOpen?: Promise<unknown>;
}

/** What a mapper made, as kept in the stage record: enough to check, refresh and undo it after a restart. */
export const mappingSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('krbd'), device: z.string() }),
  z.object({ kind: z.literal('nbd'), device: z.string(), pid: z.number().int().optional() }),
  z.object({
    kind: z.literal('fuse'),
    /** The loop device over the image file: what the volume is on this host. */
    device: z.string(),
    /** The rbd-fuse process serving the image file. */
    pid: z.number().int(),
    mountpoint: z.string(),
    imageFile: z.string(),
  }),
]);
export type Mapping = z.infer<typeof mappingSchema>;

/**
 * Turns an RBD image into a local block device and back. Every method is idempotent, and unmap
 * also works from nothing but the image spec and volume key (a plugin that crashed mid-map has no
 * Mapping to give it).
 */
export interface RbdMapper {
  readonly kind: MapperKind;
  /** Map the image; on failure nothing of the attempt is left behind. */
  map(req: MapRequest): Promise<Mapping>;
  /** Undo a mapping (or whatever a crashed map left for this volume). */
  unmap(spec: ImageSpec, volumeKey: string, mapping?: Mapping): Promise<void>;
  /**
   * End the mapping's daemon at once (SIGKILL, no flush), for a mapping whose Ceph client is fenced: I/O
   * through the device then fails instead of waiting for ever on a cluster that refuses it. unmap follows.
   */
  kill(mapping: Mapping): Promise<void>;
  /** Why the mapping is unusable, or undefined when it serves I/O. */
  health(mapping: Mapping): Promise<string | undefined>;
  /** Make the device show the image's current size (after an expand); returns the size in bytes. */
  refresh(mapping: Mapping, minBytes?: number, signal?: AbortSignal): Promise<number>;
  /**
   * Take down mappings of this mapper that no stage record knows (a crash between map and record); returns what it
   * removed.
   */
  sweep?(knownVolumeKeys: Set<string>): Promise<string[]>;
}

/** `pool/image` as the Ceph tools write it. */
export const imageSpecString = (s: Pick<ImageSpec, 'pool' | 'image'>) => `${s.pool}/${s.image}`;

/**
 * Who to be, where the key is and which monitors: arguments every Ceph client tool (and CEPH_ARGS)
 * understands. The key itself never appears, only the keyring file's path, so `ps` shows no secret.
 */
export function cephClientArgs(spec: ImageSpec, keyringFile: string): string[] {
  return [
    '--id',
    spec.user,
    '--keyring',
    keyringFile,
    '-m',
    spec.monitors.join(','),
    // librados waits 300 s for monitors by default; a map must fail well inside a CO's deadline
    '--client_mount_timeout',
    '30',
  ];
}

/** The conf file a tool reads: the configured one, else none (monitors and user come from arguments). */
export const confFile = (cephConf: string | undefined) => cephConf ?? '/dev/null';
