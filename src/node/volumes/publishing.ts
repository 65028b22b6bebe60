import { allowsOnePublishPerNode } from '../../vocabulary.js';
import { NodeError } from '../errors.js';
import { failpoint } from '../../failpoints.js';
import { seLinuxContext, splitMountOptions } from '../host/selinux.js';
import { isReadOnlyMount, mountAt, type MountEntry } from '../host/mount-commands.js';
import { fingerprint, type PublishRequest } from './types.js';
import { hostMountDeferrable, type NodeContext, stagingReal, targetReal } from './context.js';
import { publishConflict } from '../kata/passthrough.js';
import type { StageRecord } from './stage-records.js';
import type { Staging } from './staging.js';

/**
 * NodePublishVolume and NodeUnpublishVolume: the policy of who gets a staged device — a bind for a runc
 * pod, the device itself for a block volume, the device handed to a VM — and one device in one kernel.
 */
export class Publishing {
  constructor(
    private readonly ctx: NodeContext,
    private readonly staging: Staging,
  ) {}

  async publish(req: PublishRequest): Promise<void> {
    // both paths on their resolved form before anything else (a planted symlink is bad input, whatever the record says)
    await this.ctx.paths.resolve(req.stagingPath, 'staging_target_path');
    const real = await this.ctx.paths.resolve(req.targetPath, 'target_path');
    let record = await this.ctx.records.read(req.volumeId);
    if (!record)
      throw new NodeError(
        'failed-precondition',
        `volume ${req.volumeId} is not staged on this node: NodeStageVolume must succeed first`,
      );
    if (record.stagingPath !== req.stagingPath)
      throw new NodeError(
        'failed-precondition',
        `volume ${req.volumeId} is staged at ${record.stagingPath}, not at ${req.stagingPath}`,
      );
    if (record.accessType !== req.accessType)
      throw new NodeError(
        'failed-precondition',
        `volume ${req.volumeId} is staged for ${record.accessType} access; it cannot be published for ${req.accessType} access`,
      );
    const ready =
      record.phase !== 'mapping' &&
      !!record.mapping &&
      (record.accessType === 'block' || record.phase === 'mounted' || hostMountDeferrable(record));
    if (!ready)
      throw new NodeError(
        'failed-precondition',
        `volume ${req.volumeId} is not fully staged at ${req.stagingPath} (${record.phase}); stage it again`,
      );

    const args = fingerprint({
      s: req.stagingPath,
      t: req.accessType,
      m: req.accessMode,
      fs: req.fsType ?? '',
      f: req.mountFlags,
      g: req.mountGroup ?? null,
      ro: req.readonly,
      vc: req.volumeContext,
    });
    const mounts = await this.ctx.mounter.mounts();
    const known = record.targets[req.targetPath];
    if (known) {
      if (known.args !== args)
        throw new NodeError(
          'already-exists',
          `volume ${req.volumeId} is already published at ${req.targetPath} (${known.readonly ? 'read-only' : 'read-write'}) with other arguments; unpublish it first`,
        );
      if (
        known.kind === 'passthrough'
          ? await this.ctx.passthrough.isPublished(req.targetPath)
          : mountAt(mounts, known.real ?? req.targetPath)
      )
        return;
    } else {
      const others = (await this.ctx.livePublishes(record, mounts)).filter((t) => t !== req.targetPath);
      if (others.length && allowsOnePublishPerNode(req.accessMode))
        throw new NodeError(
          'failed-precondition',
          `volume ${req.volumeId} is already published at ${others.join(', ')}; access mode ${req.accessMode} allows one publish per node`,
        );
      if (mountAt(mounts, real))
        throw new NodeError(
          'already-exists',
          `${req.targetPath} already has something mounted that this plugin did not publish`,
        );
    }

    // a filesystem volume goes to the host or, for a VM pod, as a device to the VM; a raw block
    // volume is a device either way (kubelet hands Kata the device node)
    let kind: 'mount' | 'block' | 'passthrough' = req.accessType;
    if (req.accessType === 'mount') {
      const d = await this.ctx.runtime.decide(req.attachMode ?? 'auto', req.volumeContext, req.signal, req.log);
      if ('error' in d)
        throw new NodeError(d.error, `volume ${req.volumeId} cannot be published at ${req.targetPath}: ${d.why}`);
      const to = d.mode === 'passthrough' ? 'passthrough' : 'mount';
      if (to === 'mount') sameSeLinuxContext(record, req);
      record = await this.makeRoomFor(record, to, req.targetPath, mounts);
      kind = to;
    }

    // recorded before mounting: a crash in between leaves a target unpublish can find
    const readonly = req.readonly || record.readonly;
    const withTarget = await this.ctx.records.write({
      ...record,
      targets: { ...record.targets, [req.targetPath]: { kind, readonly, args, real } },
    });
    await failpoint('publish:recorded');
    try {
      if (kind === 'block') await this.publishBlock(withTarget, req.targetPath, real, readonly);
      else if (kind === 'passthrough') {
        await this.ctx.paths.ensureDir(real, 'target_path');
        await this.ctx.passthrough.publish(req.targetPath, real, {
          device: withTarget.mapping!.device,
          fsType: withTarget.fsType!,
          readonly,
          fsGroup: req.mountGroup,
        });
      } else {
        const mounted =
          withTarget.phase === 'mounted'
            ? withTarget
            : await this.staging.mountStaging(withTarget, withTarget.mountFlags, req.signal);
        await this.publishMount(mounted, real, readonly, req.mountGroup, req.signal);
      }
      await failpoint('publish:mounted');
    } catch (e) {
      await this.removeTarget((await this.ctx.records.read(req.volumeId)) ?? withTarget, req.targetPath).catch(
        (c: Error) =>
          this.ctx.log.error(
            { volumeId: req.volumeId, target: req.targetPath, error: c.message },
            'cleanup of a failed publish failed',
          ),
      );
      throw e;
    }
  }

  /**
   * One device, one kernel: refuse a publish that would mount on the host a device a VM has, or
   * give a VM a device the host has mounted for pods (or another VM has). A staging mount no pod
   * uses is released for the VM (an auto volume first used by a VM pod).
   */
  private async makeRoomFor(
    record: StageRecord,
    kind: 'mount' | 'passthrough',
    target: string,
    mounts: MountEntry[],
  ): Promise<StageRecord> {
    const of = (k: string) =>
      Object.entries(record.targets)
        .filter(([t, v]) => v.kind === k && t !== target)
        .map(([t]) => t);
    const vmTargets = of('passthrough');
    let hostTargets = of('mount').filter((t) => mountAt(mounts, targetReal(record, t)));
    if (kind === 'passthrough' && record.phase === 'mounted') {
      hostTargets = [...new Set([...hostTargets, ...(await this.ctx.otherUsers(record))])];
      if (!hostTargets.length && !vmTargets.length) {
        this.ctx.log.info(
          { volumeId: record.volumeId, stagingPath: record.stagingPath },
          'unmounting the idle staging mount: the device goes to a VM',
        );
        await this.ctx.unmountRecorded(stagingReal(record), 'staging_target_path');
        record = await this.ctx.records.write({ ...record, phase: 'mapped' });
      }
    }
    const conflict = publishConflict(
      kind === 'passthrough' ? 'passthrough' : 'filesystem',
      { hostMount: record.phase === 'mounted' ? record.stagingPath : undefined, hostTargets, vmTargets },
      target,
    );
    if (conflict)
      throw new NodeError(
        'failed-precondition',
        `volume ${record.volumeId} cannot be ${kind === 'passthrough' ? 'handed to a VM' : 'mounted on the host'} at ${target}: ${conflict}`,
      );
    return record;
  }

  private async publishMount(
    record: StageRecord,
    real: string,
    readonly: boolean,
    mountGroup: number | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    const staging = stagingReal(record);
    if (mountGroup !== undefined) {
      const m = mountAt(await this.ctx.mounter.mounts(), staging);
      if (m && isReadOnlyMount(m))
        this.ctx.log.warn(
          { volumeId: record.volumeId, mountGroup },
          'volume is read-only: its ownership cannot be given to the mount group',
        );
      else if (
        (await this.ctx.paths.pinned(staging, 'dir', 'staging_target_path', (at) =>
          this.ctx.mounter.applyMountGroup(at, mountGroup, signal),
        )) === 'applied'
      )
        this.ctx.log.info({ volumeId: record.volumeId, mountGroup }, 'volume given to the mount group');
    }
    await this.ctx.paths.ensureDir(real, 'target_path');
    await this.ctx.paths.pinned(staging, 'dir', 'staging_target_path', (source) =>
      this.ctx.mountOnto(real, 'dir', 'target_path', (at) => this.ctx.mounter.bind(source, at)),
    );
    if (readonly) await this.ctx.remountReadOnly(real, 'target_path');
  }

  /**
   * A device node on a read-only mount can still be opened for writing, so a read-only block
   * publish binds a read-only loop device over the volume's device instead (unless the whole
   * mapping is read-only already).
   */
  private async publishBlock(record: StageRecord, target: string, real: string, readonly: boolean): Promise<void> {
    await this.ctx.paths.ensureFile(real, 'target_path');
    let device = record.mapping!.device;
    if (readonly && !record.readonly) {
      device = await this.ctx.mappers.loops.attach(device, true);
      await this.ctx.records.write({
        ...record,
        targets: { ...record.targets, [target]: { ...record.targets[target]!, device } },
      });
    }
    await this.ctx.mountOnto(real, 'file', 'target_path', (at) => this.ctx.mounter.bind(device, at));
    if (readonly) await this.ctx.remountReadOnly(real, 'target_path');
  }

  async unpublish(volumeId: string, targetPath: string, signal?: AbortSignal): Promise<void> {
    const record = await this.ctx.records.read(volumeId);
    if (!record?.targets[targetPath]) {
      const real = await this.ctx.paths.resolve(targetPath, 'target_path'); // a path that leads out of the root is refused
      if (record && mountAt(await this.ctx.mounter.mounts(), real))
        this.ctx.log.warn(
          { volumeId, target: targetPath },
          'unpublish of a target this plugin did not publish: left alone',
        );
      return;
    }
    await this.removeTarget(record, targetPath, signal);
  }

  /**
   * A passthrough target's directory, which stays empty while the VM has the device, removed in its parent held open.
   */
  private async removeEmptyTarget(real: string, target: string): Promise<void> {
    await this.ctx.paths.removeEntry(
      real,
      'target_path',
      `target_path ${target} is not empty after the VM left; something wrote into the host directory (is Kata running with disable_block_device_use = true?)`,
    );
  }

  /**
   * Unmount a recorded target (every stacked mount of it) or take it back from the VM, delete what publish made there,
   * and forget it.
   */
  private async removeTarget(record: StageRecord, target: string, signal?: AbortSignal): Promise<void> {
    const real = targetReal(record, target);
    if (record.targets[target]?.kind === 'passthrough') {
      // the target directory stays empty while the VM has the device: what is in it now was written by someone else
      if (await this.ctx.passthrough.unpublish(target, record.mapping?.device ?? ''))
        await this.removeEmptyTarget(real, target);
      const { [target]: _gone, ...targets } = record.targets;
      await this.ctx.records.write({ ...record, targets });
      return;
    }
    for (let i = 0; i < 8 && mountAt(await this.ctx.mounter.mounts(), real); i++)
      await this.ctx.unmountRecorded(real, 'target_path', signal);
    await failpoint('unpublish:unmounted');
    const roLoop = record.targets[target]?.device;
    if (roLoop && (await this.ctx.mappers.loops.backingFile(roLoop)) === record.mapping?.device)
      await this.ctx.mappers.loops.detach(roLoop);
    // what publish made there, in its parent held open (a symlink found there now is not ours: left alone)
    await this.ctx.paths.removeEntry(real, 'target_path');
    const { [target]: _gone, ...targets } = record.targets;
    await this.ctx.records.write({ ...record, targets });
  }
}

/**
 * A publish binds the staged mount, whose SELinux label is the one it was mounted with: a pod asking
 * for another label (or any, when the stage had none) cannot get it from this volume on this node.
 * Kubernetes mounts a volume with one context at a time, so kubelet does not ask; a CO that does is told.
 */
function sameSeLinuxContext(record: StageRecord, req: PublishRequest): void {
  const wanted = seLinuxContext(splitMountOptions(req.mountFlags));
  const staged = seLinuxContext(splitMountOptions(record.mountFlags));
  if (wanted && wanted !== staged)
    throw new NodeError(
      'failed-precondition',
      `volume ${record.volumeId} is mounted on this node ${staged ? `with SELinux context ${staged}` : 'without an SELinux context'}; a pod with context ${wanted} cannot share it (pods sharing a volume need the same SELinux label, or it must be unstaged first)`,
    );
}
