import { createHash } from 'node:crypto';
import type { Logger } from '../../log.js';
import type { Runner } from '../host/command.js';
import type { KubeletRoot } from '../host/kubelet-paths.js';
import type { FilesystemUsage } from '../host/mount-commands.js';
import type { Mounter } from '../host/mounter.js';
import type { AttachMode } from '../../vocabulary.js';
import type { PassthroughPublisher } from '../kata/passthrough.js';
import type { RuntimeDetector } from '../kata/runtime.js';
import type { BlankCheck } from '../ceph/blank-check.js';
import type { FormatIntents } from '../ceph/format-intents.js';
import type { CephClients } from '../fencing/ceph-clients.js';
import type { MapperSet } from '../mappers/index.js';
import type { ImageSpec } from '../mappers/mapper.js';

/**
 * The node volume API's own types, and what its parts share: a leaf, so the facade (node-volumes.ts)
 * and the parts it is made of (staging, publishing, inspection, context) all import from here and
 * never from each other's facade.
 */

export type AccessType = 'mount' | 'block';

export interface VolumeUse {
  accessType: AccessType;
  accessMode: string;
  /**
   * Requested filesystem (capability fsType, else volume_context fsType); undefined: what the device holds, else ext4.
   */
  fsType?: string;
  mountFlags: string[];
  /** VOLUME_MOUNT_GROUP: the group (gid) the pod runs with. */
  mountGroup?: number;
  /** Mount access: volume_context attachMode (auto when absent). */
  attachMode?: AttachMode;
}

export interface StageRequest extends VolumeUse {
  volumeId: string;
  stagingPath: string;
  image: ImageSpec;
  /** Map and mount read-only (reader-only access mode, or the controller attached read-only). */
  readonly: boolean;
  /** From the node-stage secret: userID overrides the publish_context user, userKey is the key. */
  credentials: { user?: string; key?: string };
  /** The volume id the controller published the image for (publish_context): it must be volumeId. */
  publishedFor: string;
  signal?: AbortSignal;
}

export interface PublishRequest extends VolumeUse {
  volumeId: string;
  stagingPath: string;
  targetPath: string;
  readonly: boolean;
  volumeContext: Record<string, string>;
  signal?: AbortSignal;
  /** The RPC's logger, for the one line a guessed runtime is worth. */
  log?: Logger;
}

export interface VolumeStats {
  usage?: FilesystemUsage;
  /** Block volumes: the device size. */
  sizeBytes?: number;
  /** Why the volume is unusable, or undefined when it is healthy. */
  problem?: string;
  message: string;
}

export interface NodeVolumesOptions {
  run: Runner;
  mappers: MapperSet;
  stateDir: string;
  /** --ceph-keyring, for stages whose secret has no key. */
  cephKeyring?: string;
  log: Logger;
  /** Whether a publish goes to a VM (Kata) or to the host. */
  runtime: RuntimeDetector;
  /** Hands devices to VMs through Kata's direct-volume files. */
  passthrough: PassthroughPublisher;
  /** Resolves, makes and pins paths under the kubelet root. */
  paths: KubeletRoot;
  /** The format intents every node that maps an image sees. */
  intents: FormatIntents;
  /** Whether an image is blank, read from the cluster. */
  blankCheck: BlankCheck;
  /** Which Ceph client instance maps each image here, and whether the controller fenced it. */
  clients: CephClients;
  /** How filesystems are made, mounted and measured; the host's by default (tests pass a small fake). */
  mounter?: Mounter;
  /** Where map/unmap timings and re-maps are reported (the server's Prometheus metrics). */
  metrics?: NodeMetrics;
}

/** What the node layer reports to metrics. */
export interface NodeMetrics {
  mapperOperation(mapper: string, operation: 'map' | 'unmap', seconds: number, failed: boolean): void;
  /** A staged volume's mapping broke (or never finished) and is made anew. */
  mapperRestart(mapper: string): void;
}

export const fingerprint = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 32);

export const describeUse = (
  u: { accessType: string; accessMode: string; readonly: boolean; fsType?: string },
  flags: string[],
) =>
  `${u.accessType} ${u.accessMode}${u.readonly ? ' read-only' : ''}${u.fsType ? ` ${u.fsType}` : ''}${flags.length ? ` (${flags.join(',')})` : ''}`;
