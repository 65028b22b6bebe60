import { join } from 'node:path';
import { withKeyring } from '../host/ceph-key.js';
import { deviceNumber } from '../host/block-device.js';
import { CommandError, lastLines } from '../host/command.js';
import { NodeError } from '../errors.js';
import { seLinuxContext, seLinuxEnabled } from '../host/selinux.js';
import { failpoint } from '../../failpoints.js';
import type { FormatIntent } from '../ceph/format-intents.js';
import { imageSpecString } from '../mappers/mapper.js';
import { mountAt, mountOptions } from '../host/mount-commands.js';
import { DEFAULT_FS_TYPE, FS_TYPES, type FsType, isFsType } from '../../vocabulary.js';
import { describeUse, fingerprint, type StageRequest } from './types.js';
import { hostMountDeferrable, type NodeContext, stagingReal } from './context.js';
import { type StageRecord, volumeKey } from './stage-records.js';

/**
 * NodeStageVolume and NodeUnstageVolume as a transaction: every step is recorded before the one that
 * cannot be undone (the record before the map, the mapping before the filesystem is looked at, the
 * format intent before mkfs), so a kill at any point leaves what the next call repairs or undoes.
 */
export class Staging {
  constructor(private readonly ctx: NodeContext) {}

  /**
   * One RBD image, one stage on this node: stages naming the same image (under any volume id) run one
   * after another, and each finds the others' records (imageNotStagedElsewhere).
   */
  async stage(req: StageRequest): Promise<void> {
    if (req.publishedFor !== req.volumeId)
      throw new NodeError(
        'invalid-argument',
        `publish_context was written for volume ${req.publishedFor}, not ${req.volumeId}: it belongs to another volume`,
      );
    await this.ctx.images.run(`${req.image.pool}/${req.image.image}`, () => this.stageImage(req), req.signal);
  }

  private async stageImage(req: StageRequest): Promise<void> {
    const stageArgs = fingerprint({
      pool: req.image.pool,
      image: req.image.image,
      t: req.accessType,
      m: req.accessMode,
      ro: req.readonly,
      fs: req.fsType ?? '',
      f: req.mountFlags,
    });
    const real = await this.ctx.paths.resolve(req.stagingPath, 'staging_target_path');
    await this.ctx.paths.ensureDir(real, 'staging_target_path');
    const existing = await this.ctx.records.read(req.volumeId);
    if (existing) {
      if (existing.stagingPath !== req.stagingPath)
        throw new NodeError(
          'failed-precondition',
          `volume ${req.volumeId} is already staged at ${existing.stagingPath}; a volume has one staging path per node`,
        );
      if (existing.stageArgs !== stageArgs)
        throw new NodeError(
          'already-exists',
          `volume ${req.volumeId} is already staged at ${req.stagingPath} as ${describeUse(existing, existing.mountOptions)}, which this request (${describeUse(req, req.mountFlags)}) does not match`,
        );
      const broken = await this.stageProblem(existing);
      if (!broken) return;
      const published = await this.ctx.livePublishes(existing);
      if (published.length)
        throw new NodeError(
          'failed-precondition',
          `volume ${req.volumeId} is staged but ${broken}, and it is still published at ${published.join(', ')}: unpublish and unstage it, then stage again`,
        );
      this.ctx.log.warn(
        { volumeId: req.volumeId, problem: broken },
        'restaging a volume whose stage did not finish or broke',
      );
      this.ctx.metrics?.mapperRestart(existing.mapper);
      await this.undoStage(existing);
      await this.ctx.records.remove(req.volumeId);
    }
    if (mountAt(await this.ctx.mounter.mounts(), real))
      throw new NodeError(
        'failed-precondition',
        `something not staged by this plugin is mounted at ${req.stagingPath}; unmount it first`,
      );
    await this.imageNotStagedElsewhere(req);

    const record = await this.attach({ ...req, stagingReal: real }, stageArgs);
    try {
      // a passthrough volume's device goes to VMs: its host mount waits for a filesystem-mode publish
      if (req.accessType === 'mount' && req.attachMode !== 'passthrough')
        await this.mountStaging(record, req.mountFlags, req.signal);
      else await this.ctx.records.write(record);
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
    const mapper = this.ctx.mappers.active;
    const user = req.credentials.user ?? req.image.user;
    const image = { ...req.image, user };
    let record = await this.ctx.records.write({
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
      clients: [],
      updatedAt: '',
    });
    try {
      await failpoint('stage:recorded');
      return await withKeyring(
        { tmpDir: join(this.ctx.stateDir, 'tmp'), keyringFile: this.ctx.cephKeyring },
        user,
        req.credentials.key,
        async (keyringFile) => {
          // the image's watchers before the map opens it (the one the map adds is this node's client instance),
          // looked up while the mapper's daemon starts
          const before = this.ctx.clients.watchers(image, keyringFile, req.signal);
          before.catch(() => undefined); // the map awaits it and fails with its error
          // and whether a format of the image was begun and cut short, and (for the filesystem check to come)
          // whether the image is blank
          // (a read-only raw block stage neither finishes nor gives up a format: it needs neither)
          const begun =
            req.accessType === 'mount' || !req.readonly
              ? this.ctx.intents.get(image, keyringFile, req.signal)
              : Promise.resolve(undefined);
          const blank =
            req.accessType === 'mount' ? this.ctx.blankCheck.blank(image, keyringFile, req.signal) : undefined;
          begun.catch(() => undefined); // both awaited below
          blank?.catch(() => undefined);
          const mapping = await this.timed(mapper.kind, 'map', () =>
            mapper.map({
              spec: image,
              keyringFile,
              readonly: req.readonly,
              volumeKey: volumeKey(req.volumeId),
              signal: req.signal,
              beforeOpen: before,
            }),
          );
          // the mapping is recorded before the filesystem is looked at: a kill from here on is undone by the record
          record = await this.ctx.records.write({ ...record, mapping, phase: 'mapped', formatted: false });
          await failpoint('stage:mapped');
          // where the controller's fencing finds this node's client: learnt and recorded while the filesystem is
          // checked or made, and done before the stage can report done
          const learning = this.ctx.clients.learn(image, keyringFile, await before, req.signal);
          learning.catch(() => undefined); // awaited below, after the filesystem (whose failure comes first)
          try {
            if (blank)
              record = {
                ...record,
                ...(await this.ensureFilesystem(record, req.fsType, keyringFile, { begun, blank }, req.signal)),
              };
            else if (!req.readonly) await this.abandonFormat(record, await begun, keyringFile, req.signal);
          } catch (e) {
            // the stage is rolled back: so is the record of its client, once written
            if ((await learning.catch(() => [])).length)
              await this.ctx.clients.forget(image, keyringFile).catch(() => undefined);
            throw e;
          }
          const clients = await learning;
          if (!clients.length)
            this.ctx.log.warn(
              { volumeId: req.volumeId, image: imageSpecString(image) },
              'cannot tell which Ceph client instance maps the image here (another mapped it at the same moment): a fence of this node will not cover it',
            );
          record = { ...record, clients };
          return record;
        },
      );
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
      await this.ctx.mountOnto(stagingReal(record), 'dir', 'staging_target_path', (at) =>
        this.ctx.mounter.mountDevice(device, at, record.fsType!, options, signal),
      );
    } catch (e) {
      if (e instanceof NodeError) throw e;
      // the CO's mount flags are input: an option the kernel refuses is theirs to fix, not our bug
      if (
        mountFlags.length &&
        e instanceof CommandError &&
        e.reason === 'exit' &&
        /bad option|unrecognized mount option|invalid argument/i.test(e.stderr)
      ) {
        const hint =
          seLinuxContext(options) && !seLinuxEnabled()
            ? ' (context=: SELinux is not enabled on this node, so the kernel takes no context; see docs/configure.md)'
            : '';
        throw new NodeError(
          'invalid-argument',
          `the kernel refused to mount ${device} (${record.fsType}) with the options ${options.join(',')}${hint}: ${lastLines(e.stderr, 1)}`,
        );
      }
      throw new NodeError(
        'internal',
        `cannot mount ${device} (${imageSpecString(record.image)}, ${record.fsType}) at ${record.stagingPath}: ${(e as Error).message}`,
      );
    }
    await failpoint('stage:mounted');
    return this.ctx.records.write({ ...record, phase: 'mounted', mountOptions: options });
  }

  /**
   * Finish a format that was begun and cut short (whatever the device holds is that mkfs's); else use the
   * filesystem the device holds, or make one if (and only if) the image is blank (both ends read as zeros).
   * Anything else is identified by blkid, and only a filesystem is used.
   */
  private async ensureFilesystem(
    record: StageRecord,
    requested: string | undefined,
    keyringFile: string,
    ahead: { begun: Promise<FormatIntent | undefined>; blank: Promise<boolean> },
    signal?: AbortSignal,
  ): Promise<Pick<StageRecord, 'fsType' | 'formatted'>> {
    const device = record.mapping!.device;
    const what = `${device} (${imageSpecString(record.image)})`;
    const begun = await ahead.begun;
    if (begun) return this.finishFormat(record, what, begun, keyringFile, signal);
    if (await ahead.blank) {
      if (record.readonly)
        throw new NodeError(
          'failed-precondition',
          `${what} is blank and staged read-only: there is no filesystem to mount and none can be made`,
        );
      return this.format(record, what, (requested ?? DEFAULT_FS_TYPE) as FsType, keyringFile, signal, false);
    }
    const content = await this.ctx.mounter.probe(device, signal);
    const refuse = (holds: string) =>
      new NodeError(
        'failed-precondition',
        `${what} holds ${holds}; this driver mounts whole-device filesystems and never formats a device that holds data`,
      );
    if (content.partitionTable) throw refuse(`a ${content.partitionTable} partition table`);
    if (content.other) throw refuse(`${content.other}, not a filesystem`);
    if (!content.fsType) throw refuse('data without a filesystem signature blkid knows');
    if (requested && requested !== content.fsType)
      throw new NodeError(
        'failed-precondition',
        `${what} already holds a ${content.fsType} filesystem, but the volume capability asks for ${requested}; it will not be reformatted`,
      );
    if (!isFsType(content.fsType))
      throw new NodeError(
        'failed-precondition',
        `${what} holds a ${content.fsType} filesystem; this driver mounts ${FS_TYPES.join(', ')}`,
      );
    return { fsType: content.fsType, formatted: false };
  }

  /**
   * mkfs under a write-ahead intent, kept in the cluster before mkfs writes a byte and removed once it has
   * finished: a kill at any moment leaves a format the next stage (here or on another node) finishes, instead
   * of a device refused for ever as "holds data" or half a filesystem mounted.
   */
  private async format(
    record: StageRecord,
    what: string,
    fsType: FsType,
    keyringFile: string,
    signal: AbortSignal | undefined,
    overwrite: boolean,
  ): Promise<Pick<StageRecord, 'fsType' | 'formatted'>> {
    const device = record.mapping!.device;
    await this.ctx.intents.begin(record.image, keyringFile, fsType, signal);
    await failpoint('format:begun');
    try {
      await this.ctx.mounter.format(device, fsType, signal, overwrite);
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new NodeError('internal', `cannot make a ${fsType} filesystem on ${what}: ${(e as Error).message}`);
    }
    await failpoint('format:done');
    await this.ctx.intents.end(record.image, keyringFile, signal);
    return { fsType, formatted: true };
  }

  /**
   * A raw block volume is handed over as it is, for its user to write: a format of it that was begun and cut short
   * is given up first, so no later filesystem stage takes that user's bytes for the unfinished mkfs.
   */
  private async abandonFormat(
    record: StageRecord,
    begun: FormatIntent | undefined,
    keyringFile: string,
    signal?: AbortSignal,
  ): Promise<void> {
    if (!begun) return;
    this.ctx.log.warn(
      { volumeId: record.volumeId, fsType: begun.fsType, node: begun.node, since: begun.at },
      'a format of this volume was begun and cut short; it is given up, the volume is staged as a raw block device',
    );
    await this.ctx.intents.end(record.image, keyringFile, signal);
  }

  private finishFormat(
    record: StageRecord,
    what: string,
    begun: FormatIntent,
    keyringFile: string,
    signal?: AbortSignal,
  ) {
    if (!isFsType(begun.fsType))
      throw new NodeError(
        'failed-precondition',
        `${what} carries a format intent for "${begun.fsType}", which this driver does not make; inspect the image`,
      );
    if (record.readonly)
      throw new NodeError(
        'failed-precondition',
        `the format of ${what} was begun and cut short (on node ${begun.node}); stage it writable once to finish it`,
      );
    this.ctx.log.warn(
      { volumeId: record.volumeId, fsType: begun.fsType, node: begun.node, since: begun.at },
      'finishing a format that was begun and cut short (a kill or failure during mkfs)',
    );
    return this.format(record, what, begun.fsType, keyringFile, signal, true);
  }

  /**
   * One image, one stage on this node: a second volume id naming an image that is staged already would mount one
   * filesystem twice.
   */
  private async imageNotStagedElsewhere(req: StageRequest): Promise<void> {
    const { records } = await this.ctx.records.list();
    const other = records.find(
      (r) => r.volumeId !== req.volumeId && r.image.pool === req.image.pool && r.image.image === req.image.image,
    );
    if (other)
      throw new NodeError(
        'failed-precondition',
        `RBD image ${req.image.pool}/${req.image.image} is already staged on this node as volume ${other.volumeId}`,
      );
  }

  /** Why a recorded stage is not (or no longer) in place, or undefined when it is. */
  async stageProblem(record: StageRecord): Promise<string | undefined> {
    if (record.phase === 'mapping' || !record.mapping) return 'its mapping never finished';
    if (record.accessType === 'mount' && record.phase !== 'mounted' && !hostMountDeferrable(record))
      return 'its filesystem was never mounted';
    if (record.phase === 'mounted') {
      const m = mountAt(await this.ctx.mounter.mounts(), stagingReal(record));
      if (!m) return `nothing is mounted at ${record.stagingPath} any more`;
      if (m.devNumber !== (await deviceNumber(record.mapping.device).catch(() => '')))
        return `${record.stagingPath} no longer holds ${record.mapping.device}`;
    }
    return this.ctx.mapperFor(record).health(record.mapping);
  }

  /** Undo a failed stage; the original error is what the caller reports, a cleanup failure is logged. */
  private async rollback(record: StageRecord, cause: unknown): Promise<void> {
    try {
      await this.undoStage(record);
      await this.ctx.records.remove(record.volumeId);
    } catch (e) {
      this.ctx.log.error(
        { volumeId: record.volumeId, error: (e as Error).message, cause: (cause as Error)?.message },
        'rollback of a failed stage left something behind; NodeUnstageVolume will retry',
      );
    }
  }

  /**
   * Unmount the staging path and unmap. Whatever is mounted at the staging path is this volume's:
   * stage() refuses to start over a foreign mount, and the record exists from then on.
   */
  async undoStage(record: StageRecord, signal?: AbortSignal): Promise<void> {
    if (mountAt(await this.ctx.mounter.mounts(), stagingReal(record)))
      await this.ctx.unmountRecorded(stagingReal(record), 'staging_target_path', signal);
    await failpoint('unstage:unmounted');
    await this.timed(record.mapper, 'unmap', () =>
      this.ctx.mapperFor(record).unmap(record.image, volumeKey(record.volumeId), record.mapping),
    );
  }

  /** Run a map or unmap, its time and outcome reported to the metrics. */
  private async timed<T>(mapper: string, operation: 'map' | 'unmap', fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let failed = true;
    try {
      const r = await fn();
      failed = false;
      return r;
    } finally {
      this.ctx.metrics?.mapperOperation(mapper, operation, (performance.now() - started) / 1000, failed);
    }
  }

  async unstage(volumeId: string, stagingPath: string, signal?: AbortSignal): Promise<void> {
    const record = await this.ctx.records.read(volumeId);
    if (!record || record.stagingPath !== stagingPath) {
      await this.ctx.paths.resolve(stagingPath, 'staging_target_path'); // a path that leads out of the root is refused
      return; // not staged there: nothing to undo
    }
    const published = await this.ctx.livePublishes(record);
    if (published.length)
      throw new NodeError(
        'failed-precondition',
        `volume ${volumeId} is still published at ${published.join(', ')}; NodeUnpublishVolume must come first`,
      );
    const others = await this.ctx.otherUsers(record);
    if (others.length)
      throw new NodeError(
        'failed-precondition',
        `the device of volume ${volumeId} is still mounted at ${others.join(', ')}; unmount it there first`,
      );
    await this.undoStage(record, signal);
    await failpoint('unstage:unmapped');
    await this.forgetClients(record, signal);
    await this.ctx.records.remove(volumeId);
  }

  /** The image is no longer mapped here: its client record goes (left, it is a dead instance's: harmless). */
  private async forgetClients(record: StageRecord, signal?: AbortSignal): Promise<void> {
    if (!record.clients.length || !this.ctx.cephKeyring) return;
    await this.ctx.clients
      .forget(record.image, this.ctx.cephKeyring, signal)
      .catch((e: Error) =>
        this.ctx.log.warn({ volumeId: record.volumeId, error: e.message }, 'could not remove the mapper record'),
      );
  }
}
