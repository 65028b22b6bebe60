import { createHash } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import type { AttachMode } from './attach-mode.js';
import type { Runner } from './command.js';
import { Inspection } from './inspection.js';
import type { KubeletRoot } from './kubelet-paths.js';
import type { ImageMeta } from './mappers/image-meta.js';
import type { MapperSet } from './mappers/index.js';
import type { ImageSpec } from './mappers/mapper.js';
import type { FilesystemUsage } from './mount.js';
import type { Mounter } from './mounter.js';
import { NodeState } from './node-state.js';
import type { PassthroughPublisher } from './passthrough.js';
import { Publishing } from './publishing.js';
import type { RuntimeDetector } from './runtime.js';
import { isInterruptedWrite, type StageRecords, volumeKey } from './stage-record.js';
import { Staging } from './staging.js';

export type AccessType = 'mount' | 'block';

export interface VolumeUse {
  accessType: AccessType;
  accessMode: string;
  /** Requested filesystem (capability fsType, else volume_context fsType); undefined: what the device holds, else ext4. */
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
  /** The RBD images' own metadata (the format intent every node sees). */
  meta: ImageMeta;
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


export const describeUse = (u: { accessType: string; accessMode: string; readonly: boolean; fsType?: string }, flags: string[]) =>
  `${u.accessType} ${u.accessMode}${u.readonly ? ' read-only' : ''}${u.fsType ? ` ${u.fsType}` : ''}${flags.length ? ` (${flags.join(',')})` : ''}`;

/**
 * The node's volumes: map an RBD image and mount it at the staging path, bind it to pods' target
 * paths, and undo it all — the stage transaction (staging.ts), the publish policy (publishing.ts) and
 * inspection (inspection.ts) over shared state (node-state.ts). Callers hold the volume's lock (one
 * operation per volume at a time).
 */
export class NodeVolumes {
  private readonly s: NodeState;
  private readonly staging: Staging;
  private readonly publishing: Publishing;
  private readonly inspection: Inspection;
  constructor(o: NodeVolumesOptions) {
    this.s = new NodeState(o);
    this.staging = new Staging(this.s);
    this.publishing = new Publishing(this.s, this.staging);
    this.inspection = new Inspection(this.s);
  }

  get records(): StageRecords {
    return this.s.records;
  }

  /**
   * At start: remove what a crash can leave that no stage record knows — transient keyrings (a kill
   * while a map held one), interrupted atomic writes (a kill before the rename: records, format
   * intents, Kata direct-volume files) and mappings made before their record was written. Returns what
   * it removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    const tmp = join(this.s.o.stateDir, 'tmp');
    for (const f of await readdir(tmp).catch(() => [] as string[])) {
      await rm(join(tmp, f), { force: true });
      removed.push(`transient keyring ${join(tmp, f)}`);
    }
    for (const dir of [this.s.records.dir, this.s.formats.dir])
      for (const f of (await readdir(dir).catch(() => [] as string[])).filter(isInterruptedWrite)) {
        await rm(join(dir, f), { force: true });
        removed.push(`interrupted write ${join(dir, f)}`);
      }
    removed.push(...(await this.s.o.passthrough.sweep()));
    const { records } = await this.s.records.list();
    const known = new Set(records.map((r) => volumeKey(r.volumeId)));
    for (const mapper of Object.values(this.s.o.mappers.byKind)) if (mapper.sweep) removed.push(...(await mapper.sweep(known)));
    return removed;
  }

  /** The kubelet root as configured and resolved (the same when it is no symlink). */
  get kubeletRoots(): readonly string[] {
    return [...new Set([this.s.o.paths.root, this.s.o.paths.real])];
  }

  stage(req: StageRequest): Promise<void> {
    return this.staging.stage(req);
  }

  unstage(volumeId: string, stagingPath: string, signal?: AbortSignal): Promise<void> {
    return this.staging.unstage(volumeId, stagingPath, signal);
  }

  publish(req: PublishRequest): Promise<void> {
    return this.publishing.publish(req);
  }

  unpublish(volumeId: string, targetPath: string, signal?: AbortSignal): Promise<void> {
    return this.publishing.unpublish(volumeId, targetPath, signal);
  }

  stats(volumeId: string, volumePath: string, signal?: AbortSignal): Promise<VolumeStats> {
    return this.inspection.stats(volumeId, volumePath, signal);
  }

  expand(volumeId: string, volumePath: string, requiredBytes: number, accessType?: AccessType, signal?: AbortSignal): Promise<number> {
    return this.inspection.expand(volumeId, volumePath, requiredBytes, accessType, signal);
  }
}
