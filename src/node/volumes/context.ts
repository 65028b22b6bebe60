import { KeyedQueue } from '../../keyed-queue.js';
import { isBlockDevice, deviceNumber, kernelName } from '../host/block-device.js';
import { NodeError } from '../errors.js';
import type { PathKind } from '../host/kubelet-paths.js';
import type { RbdMapper } from '../mappers/mapper.js';
import { mountAt, type MountEntry } from '../host/mount-commands.js';
import { hostMounter, type Mounter } from '../host/mounter.js';
import type { NodeVolumesOptions } from './types.js';
import { type StageRecord, StageRecords } from './stage-records.js';

/** The resolved forms of a record's paths (records written before they were kept: the paths as given). */
export const stagingReal = (r: StageRecord) => r.stagingReal ?? r.stagingPath;
export const targetReal = (r: StageRecord, target: string) => r.targets[target]?.real ?? target;

/** A filesystem volume may sit mapped but unmounted when its device goes (or may go) to VMs. */
export const hostMountDeferrable = (record: StageRecord) =>
  record.accessType === 'mount' && record.attachMode !== 'filesystem' && !!record.fsType;

/**
 * What the node's volume operations share: their dependencies (given at start), the records on disk,
 * the mounter, and the checks and mounts more than one of them makes. State lives only in the records,
 * so a restarted plugin carries on where the last one stopped.
 */
export class NodeContext {
  readonly run: NodeVolumesOptions['run'];
  readonly mappers: NodeVolumesOptions['mappers'];
  readonly stateDir: string;
  readonly cephKeyring?: string;
  readonly log: NodeVolumesOptions['log'];
  readonly runtime: NodeVolumesOptions['runtime'];
  readonly passthrough: NodeVolumesOptions['passthrough'];
  readonly paths: NodeVolumesOptions['paths'];
  readonly intents: NodeVolumesOptions['intents'];
  readonly blankCheck: NodeVolumesOptions['blankCheck'];
  readonly clients: NodeVolumesOptions['clients'];
  readonly metrics?: NodeVolumesOptions['metrics'];
  readonly mounter: Mounter;
  readonly records: StageRecords;
  /** Stages of one RBD image (pool/image), one after another. */
  readonly images = new KeyedQueue();

  constructor(o: NodeVolumesOptions) {
    ({
      run: this.run,
      mappers: this.mappers,
      stateDir: this.stateDir,
      cephKeyring: this.cephKeyring,
      log: this.log,
      runtime: this.runtime,
      passthrough: this.passthrough,
      paths: this.paths,
      intents: this.intents,
      blankCheck: this.blankCheck,
      clients: this.clients,
      metrics: this.metrics,
    } = o);
    this.mounter = o.mounter ?? hostMounter(o.run);
    this.records = new StageRecords(o.stateDir);
  }

  mapperFor(record: Pick<StageRecord, 'mapper'>): RbdMapper {
    return this.mappers.byKind[record.mapper];
  }

  /**
   * Mount (or bind) onto a resolved path held open without following symlinks, then check the mount
   * is there; one that landed anywhere else is taken down again.
   */
  async mountOnto(real: string, kind: PathKind, field: string, mount: (at: string) => Promise<void>): Promise<void> {
    const before = new Set((await this.mounter.mounts()).map((m) => m.id));
    await this.paths.pinned(real, kind, field, mount);
    const after = await this.mounter.mounts();
    if (mountAt(after, real)) return;
    for (const m of after.filter((x) => !before.has(x.id)).reverse())
      await this.mounter.unmount(m.mountpoint).catch(() => undefined);
    throw new NodeError('internal', `the mount meant for ${real} did not land there; it was taken down again`);
  }

  /**
   * Unmount a recorded path through its parent held open: if a component above it was replaced (by a
   * symlink, say) the parent is not where it was recorded, and nothing is unmounted through it.
   */
  async unmountRecorded(real: string, field: string, signal?: AbortSignal): Promise<void> {
    await this.paths.inParent(real, field, (entry) => this.mounter.unmount(entry, signal));
  }

  /** Make a recorded mount read-only, through its parent held open (as unmountRecorded). */
  async remountReadOnly(real: string, field: string): Promise<void> {
    await this.paths.inParent(real, field, (entry) => this.mounter.remountReadOnly(entry));
  }

  /** Recorded targets still in use: mounted, or (handed to a VM) with their direct-volume file in place. */
  async livePublishes(record: StageRecord, mounts?: MountEntry[]): Promise<string[]> {
    const m = mounts ?? (await this.mounter.mounts());
    const live: string[] = [];
    for (const [t, target] of Object.entries(record.targets))
      if (target.kind === 'passthrough' ? await this.passthrough.isPublished(t) : mountAt(m, target.real ?? t))
        live.push(t);
    return live;
  }

  /** Mounts of the volume's device other than the staging path (binds of it, or the device node bound elsewhere). */
  async otherUsers(record: StageRecord): Promise<string[]> {
    if (!record.mapping || !(await isBlockDevice(record.mapping.device))) return [];
    const [mounts, dev, name] = await Promise.all([
      this.mounter.mounts(),
      deviceNumber(record.mapping.device).catch(() => ''),
      kernelName(record.mapping.device),
    ]);
    return mounts
      .filter(
        (m) =>
          m.mountpoint !== stagingReal(record) &&
          ((dev && m.devNumber === dev) || (m.fsType === 'devtmpfs' && m.root === `/${name}`)),
      )
      .map((m) => m.mountpoint);
  }
}
