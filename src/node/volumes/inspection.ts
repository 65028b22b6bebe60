import { deviceSize, isBlockDevice } from '../host/block-device.js';
import { CommandError } from '../host/command.js';
import { NodeError } from '../errors.js';
import { imageSpecString } from '../mappers/mapper.js';
import { mountAt } from '../host/mount-commands.js';
import type { AccessType, VolumeStats } from './types.js';
import { type NodeContext, stagingReal, targetReal } from './context.js';
import type { StageRecord } from './stage-records.js';

/** NodeGetVolumeStats and NodeExpandVolume: a volume's health and usage, and growing it. */
export class Inspection {
  constructor(private readonly ctx: NodeContext) {}

  async stats(volumeId: string, volumePath: string, signal?: AbortSignal): Promise<VolumeStats> {
    const record = await this.locate(volumeId, volumePath);
    if (record.targets[volumePath]?.kind === 'passthrough') return this.vmStats(record, volumePath, signal);
    const mounts = await this.ctx.mounter.mounts();
    const isTarget = volumePath !== record.stagingPath;
    const needsMount = isTarget || record.phase === 'mounted';
    const real = isTarget ? targetReal(record, volumePath) : stagingReal(record);
    const mounted = mountAt(mounts, real);
    // the device's health and the filesystem's usage at once: on a hung device each costs its timeout
    const [health, usage] = await Promise.all([
      record.mapping
        ? this.ctx.mapperFor(record).health(record.mapping)
        : Promise.resolve('its mapping never finished'),
      mounted && record.accessType === 'mount'
        ? this.ctx.paths
            .pinned(real, 'dir', 'volume_path', (at) => this.ctx.mounter.usage(at, signal))
            .catch(() => undefined)
        : Promise.resolve(undefined),
    ]);
    const problem = (needsMount && !mounted ? `${volumePath} is no longer mounted` : undefined) ?? health;
    const device = record.mapping?.device;
    const message = problem ?? `healthy: ${imageSpecString(record.image)} on ${device} (${record.mapper})`;
    if (record.accessType === 'block') {
      const sizeBytes =
        device && (await isBlockDevice(device)) ? await deviceSize(device).catch(() => undefined) : undefined;
      return { sizeBytes, problem, message };
    }
    return { usage, problem, message };
  }

  /**
   * A volume in a VM: the host never mounts it, so usage comes from the Kata agent (through
   * kata-ctl or kata-runtime) or, without them, only the device size is known.
   */
  private async vmStats(record: StageRecord, target: string, signal?: AbortSignal): Promise<VolumeStats> {
    const device = record.mapping!.device;
    const s = await this.ctx.passthrough.stats(target, () => deviceSize(device), signal);
    const problem =
      (!(await this.ctx.passthrough.isPublished(target))
        ? `the Kata direct-volume file for ${target} is gone`
        : undefined) ??
      (s.abnormal ? `the guest reports: ${s.abnormal}` : undefined) ??
      (await this.ctx.mapperFor(record).health(record.mapping!));
    const message =
      problem ??
      `healthy: ${imageSpecString(record.image)} on ${device} (${record.mapper}), handed to a VM; ${s.source === 'guest' ? 'usage from the Kata agent' : 'device size only (neither kata-ctl nor kata-runtime reaches the sandbox)'}`;
    if (s.bytes && s.inodes) return { usage: { bytes: s.bytes, inodes: s.inodes }, problem, message };
    return { sizeBytes: s.bytes?.total, problem, message };
  }

  /** The record of a volume staged or published at `path`, or NOT_FOUND. */
  private async locate(volumeId: string, path: string): Promise<StageRecord> {
    const record = await this.ctx.records.read(volumeId);
    if (!record) throw new NodeError('not-found', `volume ${volumeId} is not staged on this node`);
    if (path !== record.stagingPath && !record.targets[path])
      throw new NodeError(
        'not-found',
        `volume ${volumeId} is neither staged nor published at ${path} (it is staged at ${record.stagingPath})`,
      );
    return record;
  }

  /** Make the device show the grown image, then grow the filesystem on it; returns the device size. */
  async expand(
    volumeId: string,
    volumePath: string,
    requiredBytes: number,
    accessType?: AccessType,
    signal?: AbortSignal,
  ): Promise<number> {
    const record = await this.locate(volumeId, volumePath);
    if (accessType && accessType !== record.accessType)
      throw new NodeError(
        'invalid-argument',
        `volume ${volumeId} is staged for ${record.accessType} access; the capability says ${accessType}`,
      );
    if (!record.mapping)
      throw new NodeError('failed-precondition', `volume ${volumeId} is not fully staged; stage it again`);
    const size = await this.ctx.mapperFor(record).refresh(record.mapping, requiredBytes, signal);
    if (requiredBytes > size)
      throw new NodeError(
        'failed-precondition',
        `the device of volume ${volumeId} is ${size} bytes, less than the ${requiredBytes} asked for: the image has not grown yet (ControllerExpandVolume first)`,
      );
    if (record.accessType === 'block') return size;
    const vmTargets = Object.entries(record.targets)
      .filter(([, t]) => t.kind === 'passthrough')
      .map(([t]) => t);
    if (vmTargets.length) {
      // the filesystem is the guest's: never touched from the host while a VM has the device
      for (const t of vmTargets) {
        const how = await this.ctx.passthrough.expand(t, size, signal);
        this.ctx.log.info(
          { volumeId, target: t, sizeBytes: size },
          how === 'guest-resized'
            ? 'the Kata agent grew the filesystem in the VM'
            : 'device grown; the filesystem grows when the guest resizes it (neither kata-ctl nor kata-runtime reaches the sandbox)',
        );
      }
      return size;
    }
    if (record.phase === 'mounted') await this.growMounted(record, signal);
    else if (record.fsType?.startsWith('ext')) await this.ctx.mounter.growUnmounted(record.mapping.device, signal);
    else
      this.ctx.log.warn(
        { volumeId, fsType: record.fsType },
        'device grown; the unmounted filesystem grows at its next host mount only if grown there (xfs grows mounted)',
      );
    return size;
  }

  private async growMounted(record: StageRecord, signal?: AbortSignal): Promise<void> {
    const device = record.mapping!.device;
    try {
      await this.ctx.mounter.grow(record.fsType!, device, stagingReal(record), signal);
      return;
    } catch (e) {
      // online resize2fs needs CAP_SYS_RESOURCE; without it, an ext volume that is only staged is grown offline
      const noCapability =
        e instanceof CommandError && /Permission denied to resize filesystem|Operation not permitted/.test(e.stderr);
      if (!noCapability || record.fsType === 'xfs')
        throw new NodeError(
          'internal',
          `cannot grow the ${record.fsType} filesystem of volume ${record.volumeId}: ${(e as Error).message}`,
        );
    }
    const published = await this.ctx.livePublishes(record);
    if (published.length)
      throw new NodeError(
        'failed-precondition',
        `cannot grow the ${record.fsType} filesystem of volume ${record.volumeId} while it is published (${published.join(', ')}): online resize2fs needs CAP_SYS_RESOURCE, which this plugin lacks; run it privileged, or expand while the volume is only staged`,
      );
    this.ctx.log.info(
      { volumeId: record.volumeId },
      'growing the filesystem offline (no CAP_SYS_RESOURCE for an online resize)',
    );
    await this.ctx.unmountRecorded(stagingReal(record), 'staging_target_path');
    try {
      await this.ctx.mounter.growUnmounted(device, signal);
    } finally {
      await this.ctx.mountOnto(stagingReal(record), 'dir', 'staging_target_path', (at) =>
        this.ctx.mounter.mountDevice(device, at, record.fsType!, record.mountOptions),
      );
    }
  }
}
