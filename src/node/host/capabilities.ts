import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { execa } from 'execa';

export type MapperKind = 'krbd' | 'nbd' | 'fuse';

/** What this host offers the node role: tools, devices and kernel support. */
export interface HostCapabilities {
  commands: Record<HostCommand, string | undefined>;
  devFuse: boolean;
  loopControl: boolean;
  freeLoopDevice: string | undefined;
  kernelRbd: boolean;
  kernelNbd: boolean;
}

export const HOST_COMMANDS = [
  'rbd',
  'rbd-nbd',
  'rbd-fuse',
  'losetup',
  'mkfs.ext4',
  'mkfs.xfs',
  'blkid',
  'mount',
  'umount',
  'resize2fs',
  'xfs_growfs',
  'fusermount',
] as const;
export type HostCommand = (typeof HOST_COMMANDS)[number];

/** Debian packages that bring each command, for "install X" advice. */
export const PACKAGE_OF: Record<HostCommand, string> = {
  rbd: 'ceph-common',
  'rbd-nbd': 'rbd-nbd',
  'rbd-fuse': 'rbd-fuse',
  losetup: 'mount (util-linux)',
  'mkfs.ext4': 'e2fsprogs',
  'mkfs.xfs': 'xfsprogs',
  blkid: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  resize2fs: 'e2fsprogs',
  xfs_growfs: 'xfsprogs',
  fusermount: 'fuse3',
};

const SEARCH_EXTRA = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Absolute path of an executable on PATH (or the sbin dirs a non-login PATH may lack). */
export async function which(cmd: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), ...SEARCH_EXTRA];
  for (const d of dirs) {
    const p = join(d, cmd);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Kernel support for a module: loaded (its sysfs dir), or loadable (modprobe dry run). */
async function kernelModule(name: string, sysfs: string): Promise<boolean> {
  if (await exists(sysfs)) return true;
  const r = await execa('modprobe', ['--dry-run', '--quiet', name], { reject: false, timeout: 5000 });
  return r.exitCode === 0;
}

/**
 * Inspect the host. With `only`, just what that mapper needs is checked and no process is
 * spawned (a Probe calls this every few seconds); the rest reads as absent.
 */
export async function detectHost(only?: MapperKind): Promise<HostCapabilities> {
  const paths = await Promise.all(HOST_COMMANDS.map((c) => which(c)));
  const commands = Object.fromEntries(HOST_COMMANDS.map((c, i) => [c, paths[i]])) as Record<
    HostCommand,
    string | undefined
  >;
  const [devFuse, loopControl, kernelRbd, kernelNbd] = await Promise.all([
    exists('/dev/fuse'),
    exists('/dev/loop-control'),
    !only || only === 'krbd' ? kernelModule('rbd', '/sys/bus/rbd') : false,
    !only || only === 'nbd' ? kernelModule('nbd', '/sys/module/nbd') : false,
  ]);
  let freeLoopDevice: string | undefined;
  if (commands.losetup && !only) {
    const r = await execa(commands.losetup, ['--find'], { reject: false, timeout: 5000 });
    freeLoopDevice = r.exitCode === 0 ? String(r.stdout).trim() || undefined : undefined;
  }
  return { commands, devFuse, loopControl, freeLoopDevice, kernelRbd, kernelNbd };
}

/** Why a mapper cannot run on this host, or undefined when it can. */
export function mapperUnusable(kind: MapperKind, h: HostCapabilities): string | undefined {
  const missing = (cmds: HostCommand[]) =>
    cmds.filter((c) => !h.commands[c]).map((c) => `${c} (install ${PACKAGE_OF[c]})`);
  if (kind === 'krbd') {
    const m = missing(['rbd']);
    if (m.length) return `missing ${m.join(', ')}`;
    if (!h.kernelRbd) return 'the kernel has no rbd module (modprobe rbd fails)';
  } else if (kind === 'nbd') {
    const m = missing(['rbd-nbd']);
    if (m.length) return `missing ${m.join(', ')}`;
    if (!h.kernelNbd) return 'the kernel has no nbd module (modprobe nbd fails)';
  } else {
    const m = missing(['rbd-fuse', 'losetup']);
    if (m.length) return `missing ${m.join(', ')}`;
    if (!h.devFuse) return '/dev/fuse is absent (load the fuse module or pass /dev/fuse into the container)';
    if (!h.loopControl && !h.freeLoopDevice) return 'no loop devices (/dev/loop-control absent; load the loop module)';
  }
  return undefined;
}

/**
 * The mapper `auto` picks: krbd where the kernel has rbd (fastest, in-kernel), else rbd-nbd, else
 * rbd-fuse + loop (works anywhere FUSE and loop do). Returns the choice and why the others lost.
 */
export function chooseMapper(h: HostCapabilities): {
  kind?: MapperKind;
  reasons: Record<MapperKind, string | undefined>;
} {
  const reasons = { krbd: mapperUnusable('krbd', h), nbd: mapperUnusable('nbd', h), fuse: mapperUnusable('fuse', h) };
  const kind = (['krbd', 'nbd', 'fuse'] as const).find((k) => !reasons[k]);
  return { kind, reasons };
}
