import { access, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { which } from '../host/capabilities.js';
import type { Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import {
  DirectVolumeCli,
  KATA_BIN_DIRS,
  KataVolumeError,
  MOUNT_INFO_FILE,
  TMP_PREFIX,
  directVolumeDir,
  findDirectVolumeTools,
  readDirectVolume,
  removeDirectVolume,
  writeDirectVolume,
  type DirectVolume,
  type DirectVolumeTool,
  type GuestVolumeStats,
} from './direct-volume.js';

/** Where a staged volume's device is in use on this node: mounted on the host, or handed to VMs. */
export interface DeviceUse {
  /** The staging path when the filesystem is mounted on the host. */
  hostMount?: string;
  /** Targets bind-mounted from the host mount (runc pods, or Kata sharing a directory). */
  hostTargets: string[];
  /** Targets whose device goes to a VM through a direct-volume file. */
  vmTargets: string[];
}

/**
 * Why a publish in `mode` at `target` would put one device in two kernels, or undefined when it
 * would not. ext4/xfs mounted by the host and by a guest at once (or by two guests) corrupt.
 */
export function publishConflict(
  mode: 'filesystem' | 'passthrough',
  use: DeviceUse,
  target: string,
): string | undefined {
  const vms = use.vmTargets.filter((t) => t !== target);
  if (mode === 'filesystem') {
    if (vms.length)
      return `its device is handed to a VM (published for a hypervisor pod at ${vms.join(', ')}); it cannot also be mounted on the host until that pod is gone`;
    return undefined;
  }
  if (use.hostMount) {
    const by = use.hostTargets.length ? ` for ${use.hostTargets.join(', ')}` : '';
    return `its filesystem is mounted on the host at ${use.hostMount}${by}; it cannot also be handed to a VM until the host publishes are gone`;
  }
  if (vms.length)
    return `its device is already handed to a VM (published at ${vms.join(', ')}); two VMs cannot mount one filesystem`;
  return undefined;
}

export interface PassthroughOptions {
  /** --kata-direct-volume-root */
  root: string;
  log: Logger;
  /** How the direct-volume tools are run (tests pass a recorder). */
  run?: Runner;
  /**
   * kata-ctl and/or kata-runtime, in the order to try; undefined: look them up on PATH (and kata-deploy's dirs) each
   * time.
   */
  tools?: DirectVolumeTool[];
}

/** The direct-volume tools on this host: PATH, then where kata-deploy puts them. */
export const hostDirectVolumeTools = () =>
  findDirectVolumeTools((cmd) =>
    which(cmd, { ...process.env, PATH: [process.env.PATH ?? '', ...KATA_BIN_DIRS].filter(Boolean).join(':') }),
  );

export interface PassthroughStats extends GuestVolumeStats {
  /** guest: the Kata agent's numbers for the filesystem in the VM; device: only the device size is known. */
  source: 'guest' | 'device';
}

const rethrow = (e: unknown): never => {
  throw e instanceof KataVolumeError ? new NodeError(e.conflict ? 'already-exists' : 'internal', e.message) : e;
};

/**
 * Publishing a volume's device to a VM pod: target_path stays an empty directory (what the pod's
 * bind mount names) and Kata's direct-volume file beside it says which device to attach.
 */
export class PassthroughPublisher {
  constructor(private readonly o: PassthroughOptions) {}

  /**
   * `target` is the path as kubelet gives it (Kata names the direct-volume file after it); `dir` is
   * that directory resolved and already made by the caller (without following symlinks).
   */
  async publish(target: string, dir: string, volume: DirectVolume): Promise<void> {
    if ((await readdir(dir)).length)
      throw new NodeError(
        'already-exists',
        `target_path ${target} is not empty; the VM would not see the volume there`,
      );
    await writeDirectVolume(this.o.root, target, volume).catch(rethrow);
  }

  /**
   * Remove the direct-volume file that hands `device` to the VM; absent is fine. One handing another
   * device is another volume's publish at the same target: left alone, and false is returned (then the
   * target directory is that publish's too).
   */
  async unpublish(target: string, device: string): Promise<boolean> {
    const removed = await removeDirectVolume(this.o.root, target, device).catch(rethrow);
    if (!removed)
      this.o.log.warn(
        { target, device },
        'the Kata direct-volume file at this target hands another device to a VM: left alone',
      );
    return removed;
  }

  /** The direct-volume file for the target and the sandboxes the runtime recorded, or undefined. */
  async state(target: string) {
    return readDirectVolume(this.o.root, target).catch(rethrow);
  }

  /** At start: the temporary files of direct-volume writes a kill cut short. Returns what it removed. */
  async sweep(): Promise<string[]> {
    const names = (await readdir(this.o.root).catch(() => [] as string[])).filter(
      (n) => n.startsWith(TMP_PREFIX) && n.endsWith('.tmp'),
    );
    await Promise.all(names.map((n) => rm(join(this.o.root, n), { force: true })));
    return names.map((n) => `interrupted write ${join(this.o.root, n)}`);
  }

  /** Whether the direct-volume file for the target is in place (without reading it). */
  async isPublished(target: string): Promise<boolean> {
    return access(join(directVolumeDir(this.o.root, target), MOUNT_INFO_FILE)).then(
      () => true,
      () => false,
    );
  }

  private async clis(): Promise<DirectVolumeCli[]> {
    return (this.o.tools ?? (await hostDirectVolumeTools())).map((t) => new DirectVolumeCli(t, this.o.run));
  }

  /**
   * The guest's filesystem usage through kata-ctl (runtime-rs) or kata-runtime (the Go runtime),
   * whichever reaches the sandbox using the volume; otherwise only the device size (the host cannot
   * look inside a filesystem it never mounts).
   */
  async stats(target: string, deviceBytes: () => Promise<number>, signal?: AbortSignal): Promise<PassthroughStats> {
    const state = await this.state(target);
    if (state?.sandboxIds.length) {
      for (const cli of await this.clis()) {
        try {
          return { ...(await cli.stats(target, signal)), source: 'guest' };
        } catch (e) {
          this.o.log.warn({ target, tool: cli.tool.kind, error: (e as Error).message }, 'direct-volume stats failed');
        }
      }
    }
    const total = await deviceBytes();
    return { bytes: { total, used: 0, available: 0 }, source: 'device' };
  }

  /**
   * After the device has grown: have the Kata agent grow the filesystem in the VM through the first
   * tool that reaches the sandbox; without one (or no sandbox), the filesystem grows when the guest
   * resizes it.
   */
  async expand(target: string, sizeBytes: number, signal?: AbortSignal): Promise<'guest-resized' | 'guest-grows'> {
    const clis = await this.clis();
    const state = await this.state(target);
    if (!clis.length || !state?.sandboxIds.length) return 'guest-grows';
    let failure: unknown;
    for (const cli of clis) {
      try {
        await cli.resize(target, sizeBytes, signal);
        return 'guest-resized';
      } catch (e) {
        failure = e;
        this.o.log.warn({ target, tool: cli.tool.kind, error: (e as Error).message }, 'direct-volume resize failed');
      }
    }
    throw failure;
  }
}
