import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, realpathSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Loop devices backed by a file under `dir`, and loops stacked on those (a read-only block
 * publish), the stacked ones first so they can be detached in order.
 */
export function ourLoops(dir: string): string[] {
  const backing = new Map<string, string>();
  for (const n of readdirSync('/sys/block').filter((n) => n.startsWith('loop'))) {
    try {
      backing.set(`/dev/${n}`, readFileSync(`/sys/block/${n}/loop/backing_file`, 'utf8').trim());
    } catch {
      // not attached
    }
  }
  // a file on a mount of another container's namespace shows by a longer path (from that namespace's
  // top, e.g. with a chroot's prefix), so any path with `dir` in it counts (test dirs are unique)
  const base = [...backing].filter(([, f]) => f.includes(`${dir}/`)).map(([l]) => l);
  const stacked = [...backing].filter(([, f]) => base.includes(f)).map(([l]) => l);
  return [...stacked, ...base];
}

/** Every path below `dir` (files and dirs), relative to it. */
function walk(dir: string, rel = ''): string[] {
  let entries;
  try {
    entries = readdirSync(join(dir, rel), { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const p = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? [p, ...walk(dir, p)] : [p];
  });
}

export interface LeakScope {
  stateDir: string;
  kubeletRoot: string;
  /** Paths under the kubelet root the test itself made (as kubelet would), relative to it. */
  allowed?: string[];
}

/**
 * What a node plugin left behind under a test's dirs: loop devices backed by its files, rbd-fuse
 * processes, mounts, stage records, other files. [] when clean.
 */
export function nodeLeaks(s: LeakScope): string[] {
  const leaks: string[] = [];
  const real = realpathSync(s.kubeletRoot); // the mount table shows a symlinked root resolved
  const under = (p: string) =>
    p.startsWith(`${s.stateDir}/`) || p.startsWith(`${s.kubeletRoot}/`) || p.startsWith(`${real}/`);
  for (const loop of ourLoops(s.stateDir)) leaks.push(`loop device ${loop}`);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (/rbd-fuse$/.test(argv[0] ?? '') && argv.some(under))
      leaks.push(`rbd-fuse process ${pid}: ${argv.join(' ').trim()}`);
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4]?.replace(/\\040/g, ' ');
    if (mp && under(mp)) leaks.push(`mount at ${mp}`);
  }
  for (const f of walk(s.stateDir))
    if (!['volumes', 'fuse', 'tmp'].includes(f)) leaks.push(`file ${join(s.stateDir, f)}`);
  const allowed = new Set(s.allowed ?? []);
  for (const f of walk(s.kubeletRoot))
    if (![...allowed].some((a) => a === f || a.startsWith(`${f}/`))) leaks.push(`file ${join(s.kubeletRoot, f)}`);
  return leaks;
}

/** Where kubelet puts a volume's staging dir and the dir holding a pod's target for it (nothing made). */
export const kubeletLayout = {
  staging: (root: string, pv: string) =>
    join(root, 'plugins/kubernetes.io/csi/cinder.csi.stackube.io', pv, 'globalmount'),
  targetDir: (root: string, pod: string, pv: string) => join(root, 'pods', pod, 'volumes/kubernetes.io~csi', pv),
};

/**
 * The directories a CO (kubelet) makes for a node plugin: staging dirs and the parents of target
 * paths, laid out as kubelet lays them out. release() removes them deepest first the way kubelet
 * does, with rmdir only: a dir that is still mounted or not empty is reported, never deleted into.
 */
export class CoPaths {
  private readonly made: string[] = [];
  constructor(readonly root: string) {}

  private mkdir(path: string): string {
    const parts = path.slice(this.root.length + 1).split('/');
    for (let i = 1; i <= parts.length; i++) {
      const p = join(this.root, ...parts.slice(0, i));
      try {
        mkdirSync(p);
        this.made.push(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    return path;
  }

  staging(pv: string): string {
    return this.mkdir(kubeletLayout.staging(this.root, pv));
  }

  /** A mount target: its parent exists, the plugin creates the target itself. */
  target(pod: string, pv: string): string {
    return join(this.mkdir(kubeletLayout.targetDir(this.root, pod, pv)), 'mount');
  }

  /** A block target: a file the plugin creates in an existing dir. */
  blockTarget(pod: string, pv: string): string {
    return join(this.mkdir(join(this.root, 'plugins/kubernetes.io/csi/volumeDevices/publish', pv)), pod);
  }

  release(): string[] {
    const failures: string[] = [];
    for (const p of this.made.splice(0).sort((a, b) => b.length - a.length)) {
      try {
        rmdirSync(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
          failures.push(`cannot remove ${p}: ${(e as NodeJS.ErrnoException).code}`);
      }
    }
    return failures;
  }
}

/** Volume capabilities as a CO sends them. */
export const cap = {
  mount: (fsType = '', mode = 'SINGLE_NODE_WRITER', mountFlags: string[] = [], group = '') => ({
    mount: { fs_type: fsType, mount_flags: mountFlags, volume_mount_group: group },
    access_mode: { mode },
  }),
  block: (mode = 'SINGLE_NODE_WRITER') => ({ block: {}, access_mode: { mode } }),
};

/**
 * After a failed test: take down whatever is left under the test's dirs (mounts deepest first,
 * loop devices, rbd-fuse processes by pid) and remove the dirs, so one failure does not leave
 * mounts and processes on a machine others share. Touches nothing outside `base`.
 */
export function forceCleanup(base: string): void {
  const under = (p: string) => p.startsWith(`${base}/`);
  const mounts = () =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4]?.replace(/\\040/g, ' '))
      .filter((m): m is string => !!m && under(m))
      .sort((a, b) => b.length - a.length);
  // loops first, by backing file: a lazy unmount of the FUSE mount below them would hide the path
  const loops = ourLoops(base);
  for (const m of mounts()) spawnSync('umount', [m]);
  for (const l of loops) spawnSync('losetup', ['-d', l]);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (/rbd-fuse$/.test(argv[0] ?? '') && argv.some(under)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const m of mounts()) spawnSync('umount', ['-l', m]);
  if (!mounts().length) rmSync(base, { recursive: true, force: true });
}
