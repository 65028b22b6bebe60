import { mkdir, readdir, readFile, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { deviceSize, readProblem } from '../host/block-device.js';
import type { Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import type { LoopDevices } from '../host/loop.js';
import { mountAt, readMounts, unmount } from '../host/mount-commands.js';
import { findProcesses, processArgv, stopProcess } from '../host/processes.js';
import {
  cephClientArgs,
  confFile,
  imageSpecString,
  type ImageSpec,
  type MapRequest,
  type Mapping,
  type RbdMapper,
} from './mapper.js';
import { cephFailure, mapFailure } from './map-output.js';
import type { DaemonStarter } from './mapper-host.js';

export interface FuseOptions {
  run: Runner;
  /** Where rbd-fuse processes are started: here, or in the node pod's mapper host. */
  daemons: DaemonStarter;
  /**
   * The loop devices over the image files: with the mapper host, attached and looked up there too, so
   * a device's hold on its file belongs to the long-lived container's mount of it, not the plugin's.
   */
  loops: LoopDevices;
  /** rbd-fuse mount points and logs live in <stateDir>/fuse. */
  stateDir: string;
  cephConf?: string;
}

/**
 * rbd-fuse + loop: for hosts without the rbd or nbd kernel modules. One rbd-fuse process per
 * staged image shows it as a file, and a loop device turns the file into a block device.
 *
 * rbd-fuse runs in the foreground of its own session (setsid), its output in a log under the state
 * dir, so it is no child the plugin's exit can take down — and, in the node pod, in the mapper host's
 * container, so a restart of the plugin's container cannot either; the stage record keeps its pid.
 */
export class FuseMapper implements RbdMapper {
  readonly kind = 'fuse' as const;
  constructor(private readonly o: FuseOptions) {}

  paths(volumeKey: string, image: string) {
    const mountpoint = join(this.o.stateDir, 'fuse', volumeKey);
    return { mountpoint, imageFile: join(mountpoint, image), log: `${mountpoint}.log` };
  }

  /**
   * rbd-fuse's own arguments: conf, pool, the one image, the mount point; -f keeps it from forking away from its pid.
   */
  fuseArgs(spec: ImageSpec, mountpoint: string): string[] {
    return ['-f', '-c', confFile(this.o.cephConf), '-p', spec.pool, '-r', spec.image, mountpoint];
  }

  /** rbd-fuse takes no identity arguments; librados reads them from CEPH_ARGS (whitespace-separated). */
  fuseEnv(spec: ImageSpec, keyringFile: string): Record<string, string> {
    const args = cephClientArgs(spec, keyringFile);
    const spaced = args.find((a) => /\s/.test(a));
    if (spaced)
      throw new NodeError(
        'internal',
        `cannot pass "${spaced}" to rbd-fuse: CEPH_ARGS cannot hold whitespace (move the keyring or state dir to a path without spaces)`,
      );
    return { CEPH_ARGS: args.join(' ') };
  }

  async map(req: MapRequest): Promise<Mapping> {
    const { spec, volumeKey } = req;
    const p = this.paths(volumeKey, spec.image);
    // whatever a crashed attempt left (only possible if its mount point is still there)
    if (
      await stat(p.mountpoint).then(
        () => true,
        () => false,
      )
    )
      await this.unmap(spec, volumeKey);
    await mkdir(p.mountpoint, { recursive: true, mode: 0o700 });
    let daemon: { pid: number; exitCode: () => number | undefined } | undefined;
    try {
      daemon = await this.o.daemons.spawn(
        'rbd-fuse',
        this.fuseArgs(spec, p.mountpoint),
        this.fuseEnv(spec, req.keyringFile),
        p.log,
      );
      await this.waitForImage(spec, p, daemon.exitCode, req.beforeOpen, req.signal);
      // one open of the image file at a time: rbd-fuse rebuilds its image list on every open and
      // getattr without locking it, so concurrent opens can fail with ENOENT
      const device = await this.o.loops.attach(p.imageFile, req.readonly, req.signal);
      return { kind: 'fuse', device, pid: daemon.pid, mountpoint: p.mountpoint, imageFile: p.imageFile };
    } catch (e) {
      await this.unmap(
        spec,
        volumeKey,
        daemon
          ? { kind: 'fuse', device: '', pid: daemon.pid, mountpoint: p.mountpoint, imageFile: p.imageFile }
          : undefined,
      ).catch((c: Error) => {
        throw new NodeError(
          'internal',
          `${mapFailure(e, 'rbd-fuse', spec).message}; undoing the attempt failed too: ${c.message}`,
        );
      });
      throw mapFailure(e, 'rbd-fuse', spec);
    }
  }

  /**
   * Ready when the image file shows under the FUSE mount. rbd-fuse exiting means it could not
   * connect (its log says why); mounted without the file means the image does not exist. rbd-fuse opens
   * the image at the file's first stat (not at mount or readdir): `beforeOpen` is awaited just before it.
   */
  private async waitForImage(
    spec: ImageSpec,
    p: ReturnType<FuseMapper['paths']>,
    exitCodeOf: () => number | undefined,
    beforeOpen: Promise<unknown> | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    // librados gives up on the monitors after --client_mount_timeout (30 s); a little longer here
    const until = Date.now() + 45_000;
    // a short fixed poll: rbd-fuse is up in ~50-100 ms, and a backoff would overshoot by tens of ms
    for (;;) {
      const exitCode = exitCodeOf();
      if (exitCode !== undefined)
        throw cephFailure(await readFile(p.log, 'utf8').catch(() => ''), `rbd-fuse (exit ${exitCode})`, spec);
      if (mountAt(await readMounts(), p.mountpoint)) {
        await beforeOpen;
        const missing = await stat(p.imageFile).then(
          () => undefined,
          (e: NodeJS.ErrnoException) => e.code ?? 'error',
        );
        if (!missing) return;
        if (missing === 'ENOENT')
          throw new NodeError(
            'not-found',
            `RBD image ${imageSpecString(spec)} does not exist (was its Cinder volume deleted?)`,
          );
        // ENOTCONN and the like: rbd-fuse died while connecting; the exit code tells the rest
      }
      if (Date.now() > until) throw cephFailure(await this.logTail(p.log), 'rbd-fuse', spec, true);
      signal?.throwIfAborted();
      await sleep(5);
    }
  }

  private async logTail(log: string): Promise<string> {
    return (await readFile(log, 'utf8').catch(() => '')).slice(-2000);
  }

  /** rbd-fuse processes serving this mount point: the recorded pid (if it still is one) and any found by scan. */
  private async fuseProcesses(mountpoint: string, recordedPid?: number): Promise<number[]> {
    const isOurs = (argv: string[] | undefined) =>
      !!argv && /(^|\/)rbd-fuse$/.test(argv[0] ?? '') && argv.includes(mountpoint);
    const pids = new Set(await findProcesses(isOurs));
    if (recordedPid && isOurs(await processArgv(recordedPid))) pids.add(recordedPid);
    return [...pids];
  }

  async unmap(spec: ImageSpec, volumeKey: string, mapping?: Mapping): Promise<void> {
    const p = this.paths(volumeKey, spec.image);
    const fuse = mapping?.kind === 'fuse' ? mapping : undefined;
    const mountpoint = fuse?.mountpoint ?? p.mountpoint;
    const imageFile = fuse?.imageFile ?? p.imageFile;
    // loop first (it holds the image file open), then the FUSE mount (its unmount ends rbd-fuse), then any straggler
    for (const loop of await this.o.loops.backedBy(imageFile)) await this.o.loops.detach(loop);
    // the kernel lets go of a detached loop's file a moment later: "busy" then is no user, only that
    for (let i = 0; i < 10 && mountAt(await readMounts(), mountpoint); i++) {
      const busy = await unmount(this.o.run, mountpoint).then(
        () => false,
        (e: unknown) => {
          if (e instanceof NodeError && e.kind === 'failed-precondition') return true;
          throw e;
        },
      );
      if (!busy) break;
      await sleep(50 * (i + 1));
    }
    for (const pid of await this.fuseProcesses(mountpoint, fuse?.pid)) await stopProcess(pid);
    if (mountAt(await readMounts(), mountpoint))
      await this.o.run('umount', ['--lazy', mountpoint], { timeoutMs: 30_000 });
    await rmdir(mountpoint).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT')
        throw new NodeError('internal', `cannot remove the rbd-fuse mount point ${mountpoint}: ${e.code}`);
    });
    await rm(`${mountpoint}.log`, { force: true });
  }

  async sweep(knownVolumeKeys: Set<string>): Promise<string[]> {
    const dir = join(this.o.stateDir, 'fuse');
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const removed: string[] = [];
    for (const e of entries) {
      if (!e.isDirectory() || knownVolumeKeys.has(e.name)) continue;
      const mountpoint = join(dir, e.name);
      // loops over whatever image file rbd-fuse showed there (its name is not known without a record)
      for (const loop of await this.o.loops.under(mountpoint)) await this.o.loops.detach(loop);
      await this.unmap({ pool: '', image: '-', monitors: [], user: '', cluster: '' }, e.name, {
        kind: 'fuse',
        device: '',
        pid: 0,
        mountpoint,
        imageFile: join(mountpoint, '-'),
      });
      removed.push(`rbd-fuse mapping ${mountpoint}`);
    }
    return removed;
  }

  async kill(mapping: Mapping): Promise<void> {
    if (mapping.kind !== 'fuse') return;
    for (const pid of await this.fuseProcesses(mapping.mountpoint, mapping.pid)) await stopProcess(pid, 0, 'SIGKILL');
  }

  async health(mapping: Mapping): Promise<string | undefined> {
    if (mapping.kind !== 'fuse') return `not an rbd-fuse mapping (${mapping.kind})`;
    if (!(await this.fuseProcesses(mapping.mountpoint, mapping.pid)).length)
      return `rbd-fuse (pid ${mapping.pid}) serving ${mapping.imageFile} has exited: the device no longer reaches Ceph; unstage and stage the volume again`;
    if (!mountAt(await readMounts(), mapping.mountpoint)) return `the rbd-fuse mount ${mapping.mountpoint} is gone`;
    if ((await this.o.loops.backingFile(mapping.device)) !== mapping.imageFile)
      return `${mapping.device} is no longer attached to ${mapping.imageFile}`;
    return readProblem(this.o.run, mapping.device);
  }

  /**
   * Show a grown image: rbd-fuse answers stat() with librbd's current size (librbd hears the
   * resize), the kernel caches that answer for a second, and the loop device re-reads the file
   * size on --set-capacity. No re-map: the filesystem on the loop stays mounted.
   */
  async refresh(mapping: Mapping, minBytes = 0, signal?: AbortSignal): Promise<number> {
    if (mapping.kind !== 'fuse') throw new NodeError('internal', `not an rbd-fuse mapping (${mapping.kind})`);
    const until = Date.now() + 3000;
    // the size as rbd-fuse answers it, asked by a child: a hung rbd-fuse costs a timeout, not an I/O thread
    const size = async () =>
      Number(
        (await this.o.run('stat', ['--format', '%s', mapping.imageFile], { timeoutMs: 10_000, signal })).stdout.trim(),
      );
    while ((await size()) < minBytes && Date.now() < until) await sleep(200, undefined, { signal });
    await this.o.run('losetup', ['--set-capacity', mapping.device], { signal, timeoutMs: 30_000 });
    return deviceSize(mapping.device);
  }
}
