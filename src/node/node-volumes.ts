import { createHash } from 'node:crypto';
import { lstat, readdir, rm, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { AttachMode } from '../csi/volume-context.js';
import type { Logger } from '../log.js';
import { deviceNumber, deviceSize, endsAreZero, isBlockDevice, kernelName } from './block-device.js';
import { withKeyring } from './ceph-key.js';
import { CommandError, type Runner } from './command.js';
import { NodeError } from './errors.js';
import type { KubeletRoot, PathKind } from './kubelet-paths.js';
import { failpoint } from './failpoints.js';
import { attachLoop, detachLoop, loopBackingFile } from './loop.js';
import { FORMAT_INTENT_KEY, type ImageMeta } from './mappers/image-meta.js';
import type { MapperSet } from './mappers/index.js';
import { imageSpecString, type ImageSpec, type RbdMapper } from './mappers/mapper.js';
import {
  applyMountGroupInChild,
  bindMount,
  filesystemUsage,
  formatDevice,
  growFilesystem,
  growUnmountedExt,
  isReadOnlyMount,
  mountAt,
  mountDevice,
  mountOptions,
  probeDevice,
  readMounts,
  remountReadOnly,
  SUPPORTED_FS_TYPES,
  unmount,
  type FilesystemUsage,
  type FsType,
  type MountEntry,
} from './mount.js';
import { publishConflict, type PassthroughPublisher } from './passthrough.js';
import type { RuntimeDetector } from './runtime.js';
import { FormatIntents, type StageRecord, StageRecords, volumeKey } from './stage-record.js';

export type AccessType = 'mount' | 'block';

/** Access modes that allow one publish per node (the spec's "Non MULTI_NODE" rows, minus SINGLE_NODE_MULTI_WRITER). */
const ONE_PUBLISH_MODES = new Set(['SINGLE_NODE_WRITER', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_READER_ONLY', 'UNKNOWN']);

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
  /** The volume id the controller published the image for (publish_context), when it says. */
  publishedFor?: string;
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
}

const fingerprint = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 32);

/** The resolved forms of a record's paths (records written before they were kept: the paths as given). */
const stagingReal = (r: StageRecord) => r.stagingReal ?? r.stagingPath;
const targetReal = (r: StageRecord, target: string) => r.targets[target]?.real ?? target;

const describeUse = (u: { accessType: string; accessMode: string; readonly: boolean; fsType?: string }, flags: string[]) =>
  `${u.accessType} ${u.accessMode}${u.readonly ? ' read-only' : ''}${u.fsType ? ` ${u.fsType}` : ''}${flags.length ? ` (${flags.join(',')})` : ''}`;

/**
 * The node's volumes: map an RBD image and mount it at the staging path, bind it to pods' target
 * paths, and undo it all. State lives only in stage records on disk, so a restarted plugin carries
 * on where the last one stopped. Callers hold the volume's lock (one operation per volume at a time).
 */
export class NodeVolumes {
  readonly records: StageRecords;
  private readonly formats: FormatIntents;
  constructor(private readonly o: NodeVolumesOptions) {
    this.records = new StageRecords(o.stateDir);
    this.formats = new FormatIntents(o.stateDir);
  }

  /**
   * At start: remove what a crash can leave that no stage record knows — transient keyrings (a kill
   * while a map held one) and mappings made before their record was written. Returns what it removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    const tmp = join(this.o.stateDir, 'tmp');
    for (const f of await readdir(tmp).catch(() => [] as string[])) {
      await rm(join(tmp, f), { force: true });
      removed.push(`transient keyring ${join(tmp, f)}`);
    }
    const { records } = await this.records.list();
    const known = new Set(records.map((r) => volumeKey(r.volumeId)));
    for (const mapper of Object.values(this.o.mappers.byKind)) if (mapper.sweep) removed.push(...(await mapper.sweep(known)));
    return removed;
  }

  /** The kubelet root as configured and resolved (the same when it is no symlink). */
  get kubeletRoots(): readonly string[] {
    return [...new Set([this.o.paths.root, this.o.paths.real])];
  }

  private mapperFor(record: Pick<StageRecord, 'mapper'>): RbdMapper {
    return this.o.mappers.byKind[record.mapper];
  }

  // ---- NodeStageVolume ---------------------------------------------------------------------------

  async stage(req: StageRequest): Promise<void> {
    const stageArgs = fingerprint({ pool: req.image.pool, image: req.image.image, t: req.accessType, m: req.accessMode, ro: req.readonly, fs: req.fsType ?? '', f: req.mountFlags });
    const real = await this.o.paths.resolve(req.stagingPath, 'staging_target_path');
    await this.o.paths.ensureDir(real, 'staging_target_path');
    const existing = await this.records.read(req.volumeId);
    if (existing) {
      if (existing.stagingPath !== req.stagingPath)
        throw new NodeError('failed-precondition', `volume ${req.volumeId} is already staged at ${existing.stagingPath}; a volume has one staging path per node`);
      if (existing.stageArgs !== stageArgs)
        throw new NodeError('already-exists', `volume ${req.volumeId} is already staged at ${req.stagingPath} as ${describeUse(existing, existing.mountOptions)}, which this request (${describeUse(req, req.mountFlags)}) does not match`);
      const broken = await this.stageProblem(existing);
      if (!broken) return;
      const published = await this.livePublishes(existing);
      if (published.length)
        throw new NodeError('failed-precondition', `volume ${req.volumeId} is staged but ${broken}, and it is still published at ${published.join(', ')}: unpublish and unstage it, then stage again`);
      this.o.log.warn({ volumeId: req.volumeId, problem: broken }, 'restaging a volume whose stage did not finish or broke');
      await this.undoStage(existing);
      await this.records.remove(req.volumeId);
    }
    if (mountAt(await readMounts(), real))
      throw new NodeError('failed-precondition', `something not staged by this plugin is mounted at ${req.stagingPath}; unmount it first`);
    await this.imageNotStagedElsewhere(req);

    const record = await this.attach({ ...req, stagingReal: real }, stageArgs);
    try {
      // a passthrough volume's device goes to VMs: its host mount waits for a filesystem-mode publish
      if (req.accessType === 'mount' && req.attachMode !== 'passthrough') await this.mountStaging(record, req.mountFlags, req.signal);
      else await this.records.write(record);
    } catch (e) {
      await this.rollback(record, e);
      throw e;
    }
  }

  /**
   * Map the image (and, for a filesystem volume, make the filesystem if the device is blank)
   * without mounting it. Returns the record at phase "mapped" for the caller to write (or mount
   * and write): until then the record on disk says "mapping", and a crash is undone by volume key.
   * A hypervisor pod's volume stops here.
   */
  async attach(req: StageRequest & { stagingReal: string }, stageArgs: string): Promise<StageRecord> {
    const mapper = this.o.mappers.active;
    const user = req.credentials.user ?? req.image.user;
    const image = { ...req.image, user };
    let record = await this.records.write({
      version: 1,
      volumeId: req.volumeId,
      stagingPath: req.stagingPath,
      stagingReal: req.stagingReal,
      stageArgs,
      image,
      mapper: mapper.kind,
      phase: 'mapping',
      attachMode: req.attachMode ?? 'auto',
      mountFlags: req.mountFlags,
      accessType: req.accessType,
      accessMode: req.accessMode,
      readonly: req.readonly,
      mountOptions: [],
      formatted: false,
      targets: {},
      updatedAt: '',
    });
    try {
      failpoint('stage:recorded');
      return await withKeyring({ tmpDir: join(this.o.stateDir, 'tmp'), keyringFile: this.o.cephKeyring }, user, req.credentials.key, async (keyringFile) => {
        const mapping = await mapper.map({ spec: image, keyringFile, readonly: req.readonly, volumeKey: volumeKey(req.volumeId), signal: req.signal });
        // the mapping is recorded before the filesystem is looked at: a kill from here on is undone by the record
        record = await this.records.write({ ...record, mapping, phase: 'mapped', formatted: false });
        failpoint('stage:mapped');
        if (req.accessType === 'mount') record = { ...record, ...(await this.ensureFilesystem(record, req.fsType, keyringFile, req.signal)) };
        return record;
      });
    } catch (e) {
      await this.rollback(record, e);
      throw e;
    }
  }

  /** Mount the (mapped, formatted) device at the staging path. */
  async mountStaging(record: StageRecord, mountFlags: string[], signal?: AbortSignal): Promise<StageRecord> {
    const device = record.mapping!.device;
    const options = mountOptions(record.fsType!, mountFlags, record.readonly);
    try {
      await this.mountOnto(stagingReal(record), 'dir', 'staging_target_path', (at) => mountDevice(this.o.run, device, at, record.fsType!, options, signal));
    } catch (e) {
      if (e instanceof NodeError) throw e;
      throw new NodeError('internal', `cannot mount ${device} (${imageSpecString(record.image)}, ${record.fsType}) at ${record.stagingPath}: ${(e as Error).message}`);
    }
    failpoint('stage:mounted');
    return this.records.write({ ...record, phase: 'mounted', mountOptions: options });
  }

  /**
   * Use the filesystem the device holds, or make one if (and only if) the device is blank: both
   * ends read as zeros. Anything else is identified by blkid, and only a filesystem is used.
   */
  private async ensureFilesystem(record: StageRecord, requested: string | undefined, keyringFile: string, signal?: AbortSignal): Promise<Pick<StageRecord, 'fsType' | 'formatted'>> {
    const device = record.mapping!.device;
    const what = `${device} (${imageSpecString(record.image)})`;
    // an intent this node wrote stands only while the image still carries it (a format finished on
    // another node since removed it): then what the device holds is an mkfs cut short, no tenant's data
    if (await this.formats.get(record.image)) {
      const onImage = await this.o.meta.get(record.image, keyringFile, FORMAT_INTENT_KEY, signal);
      if (onImage) return this.finishFormat(record, what, onImage, keyringFile, signal);
      await this.formats.end(record.image);
    }
    if (await endsAreZero(this.o.run, device, signal)) {
      if (record.readonly) throw new NodeError('failed-precondition', `${what} is blank and staged read-only: there is no filesystem to mount and none can be made`);
      return this.format(record, what, (requested ?? 'ext4') as FsType, keyringFile, signal, false);
    }
    const content = await probeDevice(this.o.run, device, signal);
    const refuse = (holds: string) => new NodeError('failed-precondition', `${what} holds ${holds}; this driver mounts whole-device filesystems and never formats a device that holds data`);
    if (content.partitionTable) throw refuse(`a ${content.partitionTable} partition table`);
    if (content.other) throw refuse(`${content.other}, not a filesystem`);
    if (!content.fsType) {
      // unrecognised bytes: an mkfs cut short on another node (or before this node kept its intent) says so on the image
      const onImage = await this.o.meta.get(record.image, keyringFile, FORMAT_INTENT_KEY, signal);
      if (onImage) return this.finishFormat(record, what, onImage, keyringFile, signal);
      throw refuse('data without a filesystem signature blkid knows');
    }
    if (requested && requested !== content.fsType)
      throw new NodeError('failed-precondition', `${what} already holds a ${content.fsType} filesystem, but the volume capability asks for ${requested}; it will not be reformatted`);
    if (!(SUPPORTED_FS_TYPES as readonly string[]).includes(content.fsType))
      throw new NodeError('failed-precondition', `${what} holds a ${content.fsType} filesystem; this driver mounts ${SUPPORTED_FS_TYPES.join(', ')}`);
    return { fsType: content.fsType, formatted: false };
  }

  /**
   * mkfs under a write-ahead intent, kept on this node and on the image itself before mkfs writes a
   * byte and removed once it has finished: a kill at any moment leaves a format the next stage (here
   * or on another node) finishes, instead of a device refused for ever as "holds data".
   */
  private async format(record: StageRecord, what: string, fsType: FsType, keyringFile: string, signal: AbortSignal | undefined, overwrite: boolean): Promise<Pick<StageRecord, 'fsType' | 'formatted'>> {
    const device = record.mapping!.device;
    await this.formats.begin(record.image, fsType, device);
    await this.o.meta.set(record.image, keyringFile, FORMAT_INTENT_KEY, `${fsType} ${new Date().toISOString()}`, signal);
    failpoint('format:begun');
    try {
      await formatDevice(this.o.run, device, fsType, signal, overwrite);
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new NodeError('internal', `cannot make a ${fsType} filesystem on ${what}: ${(e as Error).message}`);
    }
    failpoint('format:done');
    await this.o.meta.remove(record.image, keyringFile, FORMAT_INTENT_KEY, signal);
    await this.formats.end(record.image);
    return { fsType, formatted: true };
  }

  private finishFormat(record: StageRecord, what: string, intent: string, keyringFile: string, signal?: AbortSignal) {
    const [fsType = 'ext4', since = ''] = intent.split(' ');
    if (!(SUPPORTED_FS_TYPES as readonly string[]).includes(fsType)) throw new NodeError('failed-precondition', `${what} carries a format intent for "${fsType.slice(0, 20)}", which this driver does not make; inspect the image`);
    this.o.log.warn({ volumeId: record.volumeId, device: record.mapping!.device, fsType, since }, 'finishing a format that was begun and cut short (a kill or failure during mkfs)');
    return this.format(record, what, fsType as FsType, keyringFile, signal, true);
  }

  /**
   * One image, one stage on this node: a second volume id naming an image that is staged already would
   * mount one filesystem twice (and the volume id must be the one the controller published).
   */
  private async imageNotStagedElsewhere(req: StageRequest): Promise<void> {
    if (req.publishedFor !== undefined && req.publishedFor !== req.volumeId)
      throw new NodeError('invalid-argument', `publish_context was written for volume ${req.publishedFor}, not ${req.volumeId}: it belongs to another volume`);
    const { records } = await this.records.list();
    const other = records.find((r) => r.volumeId !== req.volumeId && r.image.pool === req.image.pool && r.image.image === req.image.image);
    if (other) throw new NodeError('failed-precondition', `RBD image ${req.image.pool}/${req.image.image} is already staged on this node as volume ${other.volumeId}`);
  }

  /**
   * Mount (or bind) onto a resolved path held open without following symlinks, then check the mount
   * is there; one that landed anywhere else is taken down again.
   */
  private async mountOnto(real: string, kind: PathKind, field: string, mount: (at: string) => Promise<void>): Promise<void> {
    const before = new Set((await readMounts()).map((m) => m.id));
    await this.o.paths.pinned(real, kind, field, mount);
    const after = await readMounts();
    if (mountAt(after, real)) return;
    for (const m of after.filter((x) => !before.has(x.id)).reverse()) await unmount(this.o.run, m.mountpoint).catch(() => undefined);
    throw new NodeError('internal', `the mount meant for ${real} did not land there; it was taken down again`);
  }

  /** Unmount a recorded path, unless something in it changed since (then it is not this mount any more). */
  private async unmountRecorded(real: string, signal?: AbortSignal): Promise<void> {
    if (!(await this.o.paths.unchanged(real)))
      throw new NodeError('failed-precondition', `${real} no longer resolves to itself (a component was replaced, perhaps by a symlink); not unmounting through it`);
    await unmount(this.o.run, real, signal);
  }

  /** Why a recorded stage is not (or no longer) in place, or undefined when it is. */
  private async stageProblem(record: StageRecord): Promise<string | undefined> {
    if (record.phase === 'mapping' || !record.mapping) return 'its mapping never finished';
    if (record.accessType === 'mount' && record.phase !== 'mounted' && !hostMountDeferrable(record)) return 'its filesystem was never mounted';
    if (record.phase === 'mounted') {
      const m = mountAt(await readMounts(), stagingReal(record));
      if (!m) return `nothing is mounted at ${record.stagingPath} any more`;
      if (m.devNumber !== (await deviceNumber(record.mapping.device).catch(() => ''))) return `${record.stagingPath} no longer holds ${record.mapping.device}`;
    }
    return this.mapperFor(record).health(record.mapping);
  }

  /** Undo a failed stage; the original error is what the caller reports, a cleanup failure is logged. */
  private async rollback(record: StageRecord, cause: unknown): Promise<void> {
    try {
      await this.undoStage(record);
      await this.records.remove(record.volumeId);
    } catch (e) {
      this.o.log.error({ volumeId: record.volumeId, error: (e as Error).message, cause: (cause as Error)?.message }, 'rollback of a failed stage left something behind; NodeUnstageVolume will retry');
    }
  }

  /**
   * Unmount the staging path and unmap. Whatever is mounted at the staging path is this volume's:
   * stage() refuses to start over a foreign mount, and the record exists from then on.
   */
  private async undoStage(record: StageRecord, signal?: AbortSignal): Promise<void> {
    if (mountAt(await readMounts(), stagingReal(record))) await this.unmountRecorded(stagingReal(record), signal);
    failpoint('unstage:unmounted');
    await this.mapperFor(record).unmap(record.image, volumeKey(record.volumeId), record.mapping);
  }

  // ---- NodeUnstageVolume -------------------------------------------------------------------------

  async unstage(volumeId: string, stagingPath: string, signal?: AbortSignal): Promise<void> {
    const record = await this.records.read(volumeId);
    if (!record || record.stagingPath !== stagingPath) {
      await this.o.paths.resolve(stagingPath, 'staging_target_path'); // a path that leads out of the root is refused
      return; // not staged there: nothing to undo
    }
    const published = await this.livePublishes(record);
    if (published.length)
      throw new NodeError('failed-precondition', `volume ${volumeId} is still published at ${published.join(', ')}; NodeUnpublishVolume must come first`);
    const others = await this.otherUsers(record);
    if (others.length) throw new NodeError('failed-precondition', `the device of volume ${volumeId} is still mounted at ${others.join(', ')}; unmount it there first`);
    await this.undoStage(record, signal);
    failpoint('unstage:unmapped');
    await this.records.remove(volumeId);
  }

  /** Recorded targets still in use: mounted, or (handed to a VM) with their direct-volume file in place. */
  private async livePublishes(record: StageRecord, mounts?: MountEntry[]): Promise<string[]> {
    const m = mounts ?? (await readMounts());
    const live: string[] = [];
    for (const [t, target] of Object.entries(record.targets))
      if (target.kind === 'passthrough' ? await this.o.passthrough.isPublished(t) : mountAt(m, target.real ?? t)) live.push(t);
    return live;
  }

  /** Mounts of the volume's device other than the staging path (binds of it, or the device node bound elsewhere). */
  private async otherUsers(record: StageRecord): Promise<string[]> {
    if (!record.mapping || !(await isBlockDevice(record.mapping.device))) return [];
    const [mounts, dev, name] = await Promise.all([readMounts(), deviceNumber(record.mapping.device).catch(() => ''), kernelName(record.mapping.device)]);
    return mounts
      .filter((m) => m.mountpoint !== stagingReal(record) && ((dev && m.devNumber === dev) || (m.fsType === 'devtmpfs' && m.root === `/${name}`)))
      .map((m) => m.mountpoint);
  }

  // ---- NodePublishVolume -------------------------------------------------------------------------

  async publish(req: PublishRequest): Promise<void> {
    // both paths on their resolved form before anything else (a planted symlink is bad input, whatever the record says)
    await this.o.paths.resolve(req.stagingPath, 'staging_target_path');
    const real = await this.o.paths.resolve(req.targetPath, 'target_path');
    let record = await this.records.read(req.volumeId);
    if (!record) throw new NodeError('failed-precondition', `volume ${req.volumeId} is not staged on this node: NodeStageVolume must succeed first`);
    if (record.stagingPath !== req.stagingPath)
      throw new NodeError('failed-precondition', `volume ${req.volumeId} is staged at ${record.stagingPath}, not at ${req.stagingPath}`);
    if (record.accessType !== req.accessType)
      throw new NodeError('failed-precondition', `volume ${req.volumeId} is staged for ${record.accessType} access; it cannot be published for ${req.accessType} access`);
    const ready = record.phase !== 'mapping' && !!record.mapping && (record.accessType === 'block' || record.phase === 'mounted' || hostMountDeferrable(record));
    if (!ready) throw new NodeError('failed-precondition', `volume ${req.volumeId} is not fully staged at ${req.stagingPath} (${record.phase}); stage it again`);

    const args = fingerprint({ s: req.stagingPath, t: req.accessType, m: req.accessMode, fs: req.fsType ?? '', f: req.mountFlags, g: req.mountGroup ?? null, ro: req.readonly, vc: req.volumeContext });
    const mounts = await readMounts();
    const known = record.targets[req.targetPath];
    if (known) {
      if (known.args !== args)
        throw new NodeError('already-exists', `volume ${req.volumeId} is already published at ${req.targetPath} (${known.readonly ? 'read-only' : 'read-write'}) with other arguments; unpublish it first`);
      if (known.kind === 'passthrough' ? await this.o.passthrough.isPublished(req.targetPath) : mountAt(mounts, known.real ?? req.targetPath)) return;
    } else {
      const others = (await this.livePublishes(record, mounts)).filter((t) => t !== req.targetPath);
      if (others.length && ONE_PUBLISH_MODES.has(req.accessMode))
        throw new NodeError('failed-precondition', `volume ${req.volumeId} is already published at ${others.join(', ')}; access mode ${req.accessMode} allows one publish per node`);
      if (mountAt(mounts, real)) throw new NodeError('already-exists', `${req.targetPath} already has something mounted that this plugin did not publish`);
    }

    // a filesystem volume goes to the host or, for a VM pod, as a device to the VM; a raw block
    // volume is a device either way (kubelet hands Kata the device node)
    let kind: 'mount' | 'block' | 'passthrough' = req.accessType;
    if (req.accessType === 'mount') {
      const d = await this.o.runtime.decide(req.attachMode ?? 'auto', req.volumeContext, req.signal, req.log);
      if ('error' in d) throw new NodeError(d.error, `volume ${req.volumeId} cannot be published at ${req.targetPath}: ${d.why}`);
      const to = d.mode === 'passthrough' ? 'passthrough' : 'mount';
      record = await this.makeRoomFor(record, to, req.targetPath, mounts);
      kind = to;
    }

    // recorded before mounting: a crash in between leaves a target unpublish can find
    const readonly = req.readonly || record.readonly;
    const withTarget = await this.records.write({ ...record, targets: { ...record.targets, [req.targetPath]: { kind, readonly, args, real } } });
    failpoint('publish:recorded');
    try {
      if (kind === 'block') await this.publishBlock(withTarget, req.targetPath, real, readonly);
      else if (kind === 'passthrough') {
        await this.o.paths.ensureDir(real, 'target_path');
        await this.o.passthrough.publish(req.targetPath, real, { device: withTarget.mapping!.device, fsType: withTarget.fsType!, readonly, fsGroup: req.mountGroup });
      } else {
        const mounted = withTarget.phase === 'mounted' ? withTarget : await this.mountStaging(withTarget, withTarget.mountFlags, req.signal);
        await this.publishMount(mounted, real, readonly, req.mountGroup, req.signal);
      }
      failpoint('publish:mounted');
    } catch (e) {
      await this.removeTarget((await this.records.read(req.volumeId)) ?? withTarget, req.targetPath).catch((c: Error) => this.o.log.error({ volumeId: req.volumeId, target: req.targetPath, error: c.message }, 'cleanup of a failed publish failed'));
      throw e;
    }
  }

  /**
   * One device, one kernel: refuse a publish that would mount on the host a device a VM has, or
   * give a VM a device the host has mounted for pods (or another VM has). A staging mount no pod
   * uses is released for the VM (an auto volume first used by a VM pod).
   */
  private async makeRoomFor(record: StageRecord, kind: 'mount' | 'passthrough', target: string, mounts: MountEntry[]): Promise<StageRecord> {
    const of = (k: string) => Object.entries(record.targets).filter(([t, v]) => v.kind === k && t !== target).map(([t]) => t);
    const vmTargets = of('passthrough');
    let hostTargets = of('mount').filter((t) => mountAt(mounts, targetReal(record, t)));
    if (kind === 'passthrough' && record.phase === 'mounted') {
      hostTargets = [...new Set([...hostTargets, ...(await this.otherUsers(record))])];
      if (!hostTargets.length && !vmTargets.length) {
        this.o.log.info({ volumeId: record.volumeId, stagingPath: record.stagingPath }, 'unmounting the idle staging mount: the device goes to a VM');
        await this.unmountRecorded(stagingReal(record));
        record = await this.records.write({ ...record, phase: 'mapped' });
      }
    }
    const conflict = publishConflict(kind === 'passthrough' ? 'passthrough' : 'filesystem', { hostMount: record.phase === 'mounted' ? record.stagingPath : undefined, hostTargets, vmTargets }, target);
    if (conflict)
      throw new NodeError('failed-precondition', `volume ${record.volumeId} cannot be ${kind === 'passthrough' ? 'handed to a VM' : 'mounted on the host'} at ${target}: ${conflict}`);
    return record;
  }

  private async publishMount(record: StageRecord, real: string, readonly: boolean, mountGroup: number | undefined, signal?: AbortSignal): Promise<void> {
    const staging = stagingReal(record);
    if (mountGroup !== undefined) {
      const m = mountAt(await readMounts(), staging);
      if (m && isReadOnlyMount(m)) this.o.log.warn({ volumeId: record.volumeId, mountGroup }, 'volume is read-only: its ownership cannot be given to the mount group');
      else if ((await this.o.paths.pinned(staging, 'dir', 'staging_target_path', (at) => applyMountGroupInChild(this.o.run, at, mountGroup, signal))) === 'applied')
        this.o.log.info({ volumeId: record.volumeId, mountGroup }, 'volume given to the mount group');
    }
    await this.o.paths.ensureDir(real, 'target_path');
    await this.o.paths.pinned(staging, 'dir', 'staging_target_path', (source) => this.mountOnto(real, 'dir', 'target_path', (at) => bindMount(this.o.run, source, at)));
    if (readonly) await remountReadOnly(this.o.run, real);
  }

  /**
   * A device node on a read-only mount can still be opened for writing, so a read-only block
   * publish binds a read-only loop device over the volume's device instead (unless the whole
   * mapping is read-only already).
   */
  private async publishBlock(record: StageRecord, target: string, real: string, readonly: boolean): Promise<void> {
    await this.o.paths.ensureFile(real, 'target_path');
    let device = record.mapping!.device;
    if (readonly && !record.readonly) {
      device = await attachLoop(this.o.run, device, true);
      await this.records.write({ ...record, targets: { ...record.targets, [target]: { ...record.targets[target]!, device } } });
    }
    await this.mountOnto(real, 'file', 'target_path', (at) => bindMount(this.o.run, device, at));
    if (readonly) await remountReadOnly(this.o.run, real);
  }

  // ---- NodeUnpublishVolume -----------------------------------------------------------------------

  async unpublish(volumeId: string, targetPath: string, signal?: AbortSignal): Promise<void> {
    const record = await this.records.read(volumeId);
    if (!record?.targets[targetPath]) {
      const real = await this.o.paths.resolve(targetPath, 'target_path'); // a path that leads out of the root is refused
      if (record && mountAt(await readMounts(), real))
        this.o.log.warn({ volumeId, target: targetPath }, 'unpublish of a target this plugin did not publish: left alone');
      return;
    }
    await this.removeTarget(record, targetPath, signal);
  }

  /** Unmount a recorded target (every stacked mount of it) or take it back from the VM, delete what publish made there, and forget it. */
  private async removeTarget(record: StageRecord, target: string, signal?: AbortSignal): Promise<void> {
    const real = targetReal(record, target);
    if (record.targets[target]?.kind === 'passthrough') {
      await this.o.passthrough.unpublish(target, real);
      const { [target]: _gone, ...targets } = record.targets;
      await this.records.write({ ...record, targets });
      return;
    }
    for (let i = 0; i < 8 && mountAt(await readMounts(), real); i++) await this.unmountRecorded(real, signal);
    failpoint('unpublish:unmounted');
    const roLoop = record.targets[target]?.device;
    if (roLoop && (await loopBackingFile(roLoop)) === record.mapping?.device) await detachLoop(this.o.run, roLoop);
    // what publish made there, never through a symlink (one found there now is not ours: left alone)
    const st = (await this.o.paths.unchanged(real)) ? await lstat(real).catch(() => undefined) : undefined;
    try {
      if (st?.isDirectory()) await rmdir(real);
      else if (st?.isFile()) await unlink(real);
    } catch (e) {
      throw new NodeError('internal', `cannot remove ${target} after unmounting it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const { [target]: _gone, ...targets } = record.targets;
    await this.records.write({ ...record, targets });
  }

  // ---- NodeGetVolumeStats ------------------------------------------------------------------------

  async stats(volumeId: string, volumePath: string, signal?: AbortSignal): Promise<VolumeStats> {
    const record = await this.locate(volumeId, volumePath);
    if (record.targets[volumePath]?.kind === 'passthrough') return this.vmStats(record, volumePath, signal);
    const mounts = await readMounts();
    const isTarget = volumePath !== record.stagingPath;
    const needsMount = isTarget || record.phase === 'mounted';
    const real = isTarget ? targetReal(record, volumePath) : stagingReal(record);
    const mounted = mountAt(mounts, real);
    // the device's health and the filesystem's usage at once: on a hung device each costs its timeout
    const [health, usage] = await Promise.all([
      record.mapping ? this.mapperFor(record).health(record.mapping) : Promise.resolve('its mapping never finished'),
      mounted && record.accessType === 'mount' ? this.o.paths.pinned(real, 'dir', 'volume_path', (at) => filesystemUsage(this.o.run, at, signal)).catch(() => undefined) : Promise.resolve(undefined),
    ]);
    const problem = (needsMount && !mounted ? `${volumePath} is no longer mounted` : undefined) ?? health;
    const device = record.mapping?.device;
    const message = problem ?? `healthy: ${imageSpecString(record.image)} on ${device} (${record.mapper})`;
    if (record.accessType === 'block') {
      const sizeBytes = device && (await isBlockDevice(device)) ? await deviceSize(device).catch(() => undefined) : undefined;
      return { sizeBytes, problem, message };
    }
    return { usage, problem, message };
  }

  /**
   * A volume in a VM: the host never mounts it, so usage comes from the Kata agent (through
   * kata-runtime) or, without it, only the device size is known.
   */
  private async vmStats(record: StageRecord, target: string, signal?: AbortSignal): Promise<VolumeStats> {
    const device = record.mapping!.device;
    const s = await this.o.passthrough.stats(target, () => deviceSize(device), signal);
    const problem =
      (!(await this.o.passthrough.isPublished(target)) ? `the Kata direct-volume file for ${target} is gone` : undefined) ??
      (s.abnormal ? `the guest reports: ${s.abnormal}` : undefined) ??
      (await this.mapperFor(record).health(record.mapping!));
    const message = problem ?? `healthy: ${imageSpecString(record.image)} on ${device} (${record.mapper}), handed to a VM; ${s.source === 'guest' ? 'usage from the Kata agent' : 'device size only (kata-runtime cannot reach the sandbox)'}`;
    if (s.bytes && s.inodes) return { usage: { bytes: s.bytes, inodes: s.inodes }, problem, message };
    return { sizeBytes: s.bytes?.total, problem, message };
  }

  /** The record of a volume staged or published at `path`, or NOT_FOUND. */
  private async locate(volumeId: string, path: string): Promise<StageRecord> {
    const record = await this.records.read(volumeId);
    if (!record) throw new NodeError('not-found', `volume ${volumeId} is not staged on this node`);
    if (path !== record.stagingPath && !record.targets[path])
      throw new NodeError('not-found', `volume ${volumeId} is neither staged nor published at ${path} (it is staged at ${record.stagingPath})`);
    return record;
  }

  // ---- NodeExpandVolume --------------------------------------------------------------------------

  /** Make the device show the grown image, then grow the filesystem on it; returns the device size. */
  async expand(volumeId: string, volumePath: string, requiredBytes: number, accessType?: AccessType, signal?: AbortSignal): Promise<number> {
    const record = await this.locate(volumeId, volumePath);
    if (accessType && accessType !== record.accessType)
      throw new NodeError('invalid-argument', `volume ${volumeId} is staged for ${record.accessType} access; the capability says ${accessType}`);
    if (!record.mapping) throw new NodeError('failed-precondition', `volume ${volumeId} is not fully staged; stage it again`);
    const size = await this.mapperFor(record).refresh(record.mapping, requiredBytes, signal);
    if (requiredBytes > size)
      throw new NodeError(
        'failed-precondition',
        `the device of volume ${volumeId} is ${size} bytes, less than the ${requiredBytes} asked for: the image has not grown yet (ControllerExpandVolume first)`,
      );
    if (record.accessType === 'block') return size;
    const vmTargets = Object.entries(record.targets).filter(([, t]) => t.kind === 'passthrough').map(([t]) => t);
    if (vmTargets.length) {
      // the filesystem is the guest's: never touched from the host while a VM has the device
      for (const t of vmTargets) {
        const how = await this.o.passthrough.expand(t, size, signal);
        this.o.log.info({ volumeId, target: t, sizeBytes: size }, how === 'guest-resized' ? 'the Kata agent grew the filesystem in the VM' : 'device grown; the filesystem grows when the guest resizes it (kata-runtime cannot reach the sandbox)');
      }
      return size;
    }
    if (record.phase === 'mounted') await this.growMounted(record, signal);
    else if (record.fsType?.startsWith('ext')) await growUnmountedExt(this.o.run, record.mapping.device, signal);
    else this.o.log.warn({ volumeId, fsType: record.fsType }, 'device grown; the unmounted filesystem grows at its next host mount only if grown there (xfs grows mounted)');
    return size;
  }

  private async growMounted(record: StageRecord, signal?: AbortSignal): Promise<void> {
    const device = record.mapping!.device;
    try {
      await growFilesystem(this.o.run, record.fsType!, device, stagingReal(record), signal);
      return;
    } catch (e) {
      // online resize2fs needs CAP_SYS_RESOURCE; without it, an ext volume that is only staged is grown offline
      const noCapability = e instanceof CommandError && /Permission denied to resize filesystem|Operation not permitted/.test(e.stderr);
      if (!noCapability || record.fsType === 'xfs') throw new NodeError('internal', `cannot grow the ${record.fsType} filesystem of volume ${record.volumeId}: ${(e as Error).message}`);
    }
    const published = await this.livePublishes(record);
    if (published.length)
      throw new NodeError(
        'failed-precondition',
        `cannot grow the ${record.fsType} filesystem of volume ${record.volumeId} while it is published (${published.join(', ')}): online resize2fs needs CAP_SYS_RESOURCE, which this plugin lacks; run it privileged, or expand while the volume is only staged`,
      );
    this.o.log.info({ volumeId: record.volumeId }, 'growing the filesystem offline (no CAP_SYS_RESOURCE for an online resize)');
    await this.unmountRecorded(stagingReal(record));
    try {
      await growUnmountedExt(this.o.run, device, signal);
    } finally {
      await this.mountOnto(stagingReal(record), 'dir', 'staging_target_path', (at) => mountDevice(this.o.run, device, at, record.fsType!, record.mountOptions));
    }
  }
}

/** A filesystem volume may sit mapped but unmounted when its device goes (or may go) to VMs. */
const hostMountDeferrable = (record: StageRecord) => record.accessType === 'mount' && record.attachMode !== 'filesystem' && !!record.fsType;
