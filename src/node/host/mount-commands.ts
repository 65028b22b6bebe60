import { constants, existsSync } from 'node:fs';
import { chmod, chown, open, opendir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, type Runner } from './command.js';
import { NodeError } from '../errors.js';
import { PACKAGE_ROOT } from '../../package-info.js';
import type { FsType } from '../../vocabulary.js';
import { splitMountOptions } from './selinux.js';

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  id: number;
  parent: number;
  /** "major:minor" of the mounted device (of devtmpfs for a bind-mounted device node). */
  devNumber: string;
  /** The path inside the mounted filesystem that is mounted here ("/" unless a bind of a subtree or file). */
  root: string;
  mountpoint: string;
  options: string[];
  fsType: string;
  source: string;
  superOptions: string[];
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const f = pre.split(' ');
    const [fsType, source, superOptions] = post.split(' ');
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      devNumber: f[2] ?? '',
      root: unescape(f[3] ?? ''),
      mountpoint: unescape(f[4] ?? ''),
      options: (f[5] ?? '').split(','),
      fsType: fsType ?? '',
      source: unescape(source ?? ''),
      superOptions: (superOptions ?? '').split(','),
    });
  }
  return out;
}

export async function readMounts(): Promise<MountEntry[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** The topmost mount at a path, if any. */
export function mountAt(mounts: MountEntry[], path: string): MountEntry | undefined {
  return mounts.filter((m) => m.mountpoint === path).at(-1);
}

export const isReadOnlyMount = (m: MountEntry) => m.options.includes('ro') || m.superOptions.includes('ro');

/** What a device holds, as `blkid -p` sees it; all undefined: no signature blkid knows. */
export interface DeviceContent {
  fsType?: string;
  partitionTable?: string;
  /** Something else with a signature (LVM, RAID member, crypto, …). */
  other?: string;
}

export function parseBlkidExport(stdout: string): DeviceContent {
  const v = Object.fromEntries(
    stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string | undefined>;
  const content: DeviceContent = {};
  if (v.PTTYPE) content.partitionTable = v.PTTYPE;
  if (v.TYPE && (v.USAGE ?? 'filesystem') === 'filesystem') content.fsType = v.TYPE;
  else if (v.TYPE) content.other = `${v.TYPE} (${v.USAGE})`;
  return content;
}

/** Low-level probe of the whole device (superblocks and partition tables); blkid exits 2 when it finds nothing. */
export async function probeDevice(run: Runner, device: string, signal?: AbortSignal): Promise<DeviceContent> {
  const r = await run('blkid', ['-p', '-o', 'export', device], { okExitCodes: [2], signal, timeoutMs: 30_000 });
  return r.exitCode === 2 ? {} : parseBlkidExport(r.stdout);
}

/**
 * mkfs for a blank device. No discard (a new RBD image is already all zeros and loop-over-FUSE
 * cannot discard); ext4 initialises inode tables lazily and keeps no root reserve, as kubelet does.
 */
export function mkfsCommand(fsType: FsType, device: string, overwrite = false): [string, string[]] {
  // -f only where this plugin's own unfinished mkfs is to be overwritten (FormatIntents)
  if (fsType === 'xfs') return ['mkfs.xfs', ['-q', '-K', ...(overwrite ? ['-f'] : []), device]];
  return [`mkfs.${fsType}`, ['-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', device]];
}

export async function formatDevice(
  run: Runner,
  device: string,
  fsType: FsType,
  signal?: AbortSignal,
  overwrite = false,
): Promise<void> {
  const [cmd, args] = mkfsCommand(fsType, device, overwrite);
  await run(cmd, args, { signal, timeoutMs: 300_000 });
}

/**
 * Options for mounting a filesystem: the CO's flags, `ro` when read-only, and `nouuid` for xfs so a
 * clone (same UUID) can be mounted beside its source.
 */
export function mountOptions(fsType: string, flags: string[], readonly: boolean): string[] {
  const opts = splitMountOptions(flags);
  if (readonly) opts.push('ro');
  if (fsType === 'xfs') opts.push('nouuid');
  return [...new Set(opts.filter((o) => !(readonly && o === 'rw')))];
}

/**
 * Mount a device. `target` is usually a held-open path (/proc/<pid>/fd/<n>, see kubelet-paths.ts):
 * --no-canonicalize hands it to the kernel as it is, which resolves it to the held directory, where
 * mount(8) would resolve it to a path name again (and follow whatever symlink is there by then).
 */
export async function mountDevice(
  run: Runner,
  device: string,
  target: string,
  fsType: string,
  options: string[],
  signal?: AbortSignal,
): Promise<void> {
  await run(
    'mount',
    ['--no-canonicalize', '-t', fsType, ...(options.length ? ['-o', options.join(',')] : []), device, target],
    { signal, timeoutMs: 120_000 },
  );
}

/** Bind a directory or a device node onto target (held-open paths, as above). */
export async function bindMount(run: Runner, source: string, target: string): Promise<void> {
  await run('mount', ['--no-canonicalize', '-o', 'bind', source, target], { timeoutMs: 60_000 });
}

/**
 * Make a bind mount read-only: a second step, as a bind cannot be made read-only at once. `mountpoint`
 * is usually reached through its parent held open (/proc/<pid>/fd/<n>/<name>, see kubelet-paths.ts),
 * handed to the kernel as it is (--no-canonicalize). A handle of the mount itself would pin it.
 */
export async function remountReadOnly(run: Runner, mountpoint: string): Promise<void> {
  await run('mount', ['--no-canonicalize', '-o', 'remount,bind,ro', mountpoint], { timeoutMs: 60_000 });
}

/** Unmount one mount at target (reached as remountReadOnly's); nothing mounted there is success. */
export async function unmount(run: Runner, target: string, signal?: AbortSignal): Promise<void> {
  try {
    await run('umount', ['--no-canonicalize', target], { timeoutMs: 120_000, signal });
  } catch (e) {
    if (e instanceof CommandError && /not mounted|no mount point specified|No such file or directory/.test(e.stderr))
      return;
    if (e instanceof CommandError && /target is busy/.test(e.stderr))
      throw new NodeError(
        'failed-precondition',
        `${target} is busy: a process still uses it (find it with fuser -vm ${target})`,
      );
    throw e;
  }
}

/** Grow a mounted filesystem to fill its device. */
export async function growFilesystem(
  run: Runner,
  fsType: string,
  device: string,
  mountpoint: string,
  signal?: AbortSignal,
): Promise<void> {
  if (fsType === 'xfs') await run('xfs_growfs', [mountpoint], { signal, timeoutMs: 300_000 });
  else await run('resize2fs', [device], { signal, timeoutMs: 300_000 });
}

/** Offline ext4 grow: the check resize2fs insists on, then the resize. */
export async function growUnmountedExt(run: Runner, device: string, signal?: AbortSignal): Promise<void> {
  await run('e2fsck', ['-f', '-p', device], { signal, timeoutMs: 600_000, okExitCodes: [1] });
  await run('resize2fs', [device], { signal, timeoutMs: 600_000 });
}

export interface FilesystemUsage {
  bytes: { total: number; available: number; used: number };
  inodes: { total: number; available: number; used: number };
}

/**
 * statfs of a mounted volume, by `stat -f` in a child process with a time limit: a hung mapping under
 * it costs a timeout, never one of the plugin's few I/O threads (which every other call needs too).
 */
export async function filesystemUsage(run: Runner, path: string, signal?: AbortSignal): Promise<FilesystemUsage> {
  // blocks, free blocks, blocks available to users, fundamental block size, inodes, free inodes
  const r = await run('stat', ['--file-system', '--format', '%b %f %a %S %c %d', path], { timeoutMs: 5000, signal });
  const [blocks, bfree, bavail, bsize, files, ffree] = r.stdout.trim().split(/\s+/).map(Number);
  if ([blocks, bfree, bavail, bsize, files, ffree].some((n) => !Number.isFinite(n)))
    throw new Error(`stat -f ${path} answered "${r.stdout.trim().slice(0, 80)}"`);
  return {
    bytes: { total: blocks! * bsize!, available: bavail! * bsize!, used: (blocks! - bfree!) * bsize! },
    inodes: { total: files!, available: ffree!, used: files! - ffree! },
  };
}

/** The walk below, run by this program in a child process (`internal-mount-group`), cancellable and timed. */
export async function applyMountGroupInChild(
  run: Runner,
  root: string,
  gid: number,
  signal?: AbortSignal,
): Promise<'applied' | 'unchanged'> {
  const bundle = join(PACKAGE_ROOT, 'dist/bundle/main.js');
  const main = existsSync(bundle) ? bundle : join(PACKAGE_ROOT, 'dist/src/main.js');
  const r = await run(process.execPath, [main, 'internal-mount-group', root, String(gid)], {
    timeoutMs: 600_000,
    signal,
  });
  return r.stdout.trim() === 'unchanged' ? 'unchanged' : 'applied';
}

/** Linux's O_PATH (see kubelet-paths.ts): names an entry without opening it, so no device or FIFO is opened. */
const O_PATH = 0o10000000;

/**
 * Give a volume to a group the way kubelet's fsGroup does: every entry gets the group and g+rw,
 * directories also g+x and setgid so new files inherit the group. The tree is the tenant's, so it is
 * walked by held handles, never by path: each entry is opened without following symlinks and changed
 * through its handle; symlinks are left as they are and nothing on another filesystem is entered.
 * Skipped when the root already has the group and setgid (kubelet's OnRootMismatch). `root` is the
 * volume's mount, checked or held by the caller.
 */
export async function applyMountGroup(root: string, gid: number): Promise<'applied' | 'unchanged'> {
  let dev: number | undefined;
  let unchanged = false;
  const visit = async (path: string, top: boolean): Promise<void> => {
    // the root may be a held handle (/proc/<pid>/fd/<n>: a link to follow); nothing below it is followed
    const fh = await open(path, top ? O_PATH : O_PATH | constants.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
      if (!top && (e.code === 'ENOENT' || e.code === 'ELOOP')) return undefined; // gone, or a link: not ours to follow
      throw e;
    });
    if (!fh) return;
    try {
      const st = await fh.stat();
      if (top) {
        dev = st.dev;
        if (st.gid === gid && (st.mode & 0o2000) !== 0) return void (unchanged = true);
      }
      if (st.isSymbolicLink() || st.dev !== dev) return;
      const held = `/proc/self/fd/${fh.fd}`; // the held entry itself (checked: no symlink)
      const dir = st.isDirectory();
      await chown(held, st.uid, gid);
      await chmod(held, (st.mode & 0o7777) | 0o660 | (dir ? 0o2110 : 0));
      if (dir) for await (const entry of await opendir(held)) await visit(join(held, entry.name), false);
    } finally {
      await fh.close();
    }
  };
  await visit(root, true);
  return unchanged ? 'unchanged' : 'applied';
}
