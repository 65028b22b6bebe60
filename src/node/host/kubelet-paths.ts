import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink, realpath, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { failpoint } from '../../failpoints.js';
import { NodeError } from '../errors.js';

/**
 * Paths under the kubelet root, handled as a root process must handle a tree that pods can write
 * into (their volumes, subPaths): every path is checked on its resolved form, what the plugin creates
 * there is created one component at a time, and everything the plugin does to a path — a mount or
 * bind onto it, an unmount or read-only remount of it, making or removing it — goes through a handle
 * held open and checked to be where it should be (`/proc/<pid>/fd/<n>`, with mount's and umount's
 * --no-canonicalize): the entry itself for a mount, its parent directory for the rest. So a component
 * swapped for a symlink between the check and the use cannot redirect it outside the root. The root
 * itself may be a symlink (/var/lib/kubelet → another disk): comparisons use its resolved form.
 */

/**
 * Linux's O_PATH: an fd that names a file without opening it (no device is opened, no FIFO blocks); libuv adds
 * O_CLOEXEC.
 */
const O_PATH = 0o10000000;
const PIN_FLAGS = O_PATH | constants.O_NOFOLLOW;

export type PathKind = 'dir' | 'file';

const inside = (path: string, root: string) =>
  path === root || path.startsWith(root.endsWith(sep) ? root : `${root}${sep}`);

export class KubeletRoot {
  private constructor(
    /** As configured (--kubelet-root), normalised: the form kubelet's paths are given in. */
    readonly root: string,
    /** The configured root with its symlinks resolved: the form the mount table shows. */
    readonly real: string,
  ) {}

  static async open(configured: string): Promise<KubeletRoot> {
    const root = resolve(configured);
    return new KubeletRoot(root, await realpath(root).catch(() => root));
  }

  /** Whether a path (as kubelet gives it, or resolved) lies strictly inside the root. */
  contains(path: string): boolean {
    return (inside(path, this.root) && path !== this.root) || (inside(path, this.real) && path !== this.real);
  }

  /**
   * The resolved form of a path under the root. Existing components are followed only while they stay
   * inside the root; a symlink as the last component is refused (the plugin never mounts onto or
   * creates through one). Components that do not exist yet are appended as they are.
   */
  async resolve(path: string, field: string): Promise<string> {
    if (path.includes('\0')) throw this.refuse(field, path.replaceAll('\0', '\\0'), 'holds a NUL byte');
    const rel = inside(path, this.real) ? relative(this.real, path) : relative(this.root, path);
    const parts = rel.split(sep).filter(Boolean);
    let cur = this.real;
    for (let i = 0; i < parts.length; i++) {
      const next = join(cur, parts[i]!);
      const st = await lstat(next).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
        throw e;
      });
      if (!st) return join(next, ...parts.slice(i + 1));
      if (st.isSymbolicLink()) {
        if (i === parts.length - 1)
          throw this.refuse(field, path, 'is a symlink; the plugin never mounts onto or creates through one');
        const target = await realpath(next).catch(() => undefined);
        if (!target || !inside(target, this.real))
          throw this.refuse(
            field,
            path,
            `has a component (${parts.slice(0, i + 1).join('/')}) that leads outside the kubelet root`,
          );
        cur = target;
      } else cur = next;
    }
    if (!inside(cur, this.real) || cur === this.real)
      throw this.refuse(field, path, 'resolves to the kubelet root itself or outside it');
    return cur;
  }

  private refuse(field: string, path: string, why: string): NodeError {
    return new NodeError('invalid-argument', `${field} ${path} ${why}`);
  }

  /**
   * Make the directory at a resolved path: each missing component made inside its parent held open
   * (inParent), so it is made where it should be or not at all; one that is not a directory is refused.
   */
  async ensureDir(real: string, field: string, mode = 0o750): Promise<void> {
    const missing: string[] = [];
    let at = real;
    while (inside(at, this.real) && at !== this.real) {
      const st = await lstat(at).catch(() => undefined);
      if (st) {
        if (st.isSymbolicLink())
          throw this.refuse(field, at, 'is a symlink; the plugin never mounts onto or creates through one');
        if (!st.isDirectory())
          throw this.refuse(
            field,
            at,
            at === real ? 'exists and is not a directory' : 'has a component that is not a directory',
          );
        break;
      }
      missing.unshift(at);
      at = dirname(at);
    }
    for (const dir of missing)
      await this.inParent(dir, field, async (entry) => {
        await mkdir(entry, { mode }).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e;
        });
        const st = await lstat(entry);
        if (!st.isDirectory()) throw this.refuse(field, dir, 'is not a directory (a symlink was put in its place?)');
      });
  }

  /**
   * Make an empty file at a resolved path (a block volume's target), in its parent held open, never through a symlink.
   */
  async ensureFile(real: string, field: string, mode = 0o640): Promise<void> {
    await this.ensureDir(dirname(real), field);
    await this.inParent(real, field, async (entry) => {
      let fh: FileHandle;
      try {
        fh = await open(
          entry,
          constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK,
          mode,
        );
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ELOOP')
          throw this.refuse(field, real, 'is a symlink; the plugin never mounts onto or creates through one');
        if (code === 'EISDIR')
          throw this.refuse(field, real, 'is a directory; a block volume is published as a device file');
        throw e;
      }
      try {
        const st = await fh.stat();
        if (!st.isFile() && !st.isBlockDevice())
          throw this.refuse(field, real, 'is neither a regular file nor a device file');
      } finally {
        await fh.close();
      }
    });
  }

  /**
   * Run `fn` with a path that reaches the entry at `real` through its parent directory held open and
   * checked to be where `real` says (`/proc/<pid>/fd/<n>/<name>`): whatever is renamed or swapped above
   * it meanwhile, `fn` creates, removes, unmounts or remounts that entry and nothing else. The kernel
   * resolves the last component inside the held directory (a mountpoint there cannot be renamed).
   */
  async inParent<T>(real: string, field: string, fn: (entry: string) => Promise<T>): Promise<T> {
    const parent = dirname(real);
    if (!inside(parent, this.real) || real === this.real)
      throw this.refuse(field, real, 'is not inside the kubelet root');
    return this.pinned(parent, 'dir', field, async (held) => {
      await failpoint(`paths:${field}`);
      return fn(join(held, basename(real)));
    });
  }

  /**
   * Remove what the plugin made at a resolved path (an empty directory or a file), in its parent held
   * open; absent is fine. `notEmpty` says why a directory that is not empty should have been.
   */
  async removeEntry(real: string, field: string, notEmpty?: string): Promise<void> {
    if (!(await lstat(dirname(real)).catch(() => undefined))) return; // its parent is gone: so is it
    await this.inParent(real, field, async (entry) => {
      const st = await lstat(entry).catch(() => undefined);
      if (st?.isDirectory()) await rmdir(entry);
      else if (st?.isFile()) await unlink(entry);
      // a symlink or anything else found there now is not what the plugin made: left alone
    }).catch((e: NodeJS.ErrnoException) => {
      if (e instanceof NodeError) throw e;
      if (e.code === 'ENOENT') return; // removed meanwhile: absent is what was wanted
      if (e.code === 'ENOTEMPTY' && notEmpty) throw new NodeError('internal', notEmpty);
      throw new NodeError('internal', `cannot remove ${real}: ${e.code ?? e.message}`);
    });
  }

  /**
   * Run `fn` with a path that names exactly the directory or file at `real` as it is now, held open
   * without following symlinks: `/proc/<pid>/fd/<n>`, for `mount --no-canonicalize` (a child process
   * resolves it to the held inode, whatever is renamed or swapped meanwhile).
   */
  async pinned<T>(real: string, kind: PathKind, field: string, fn: (path: string) => Promise<T>): Promise<T> {
    let fh: FileHandle;
    try {
      fh = await open(real, PIN_FLAGS);
    } catch (e) {
      throw this.refuse(field, real, `cannot be opened: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const st = await fh.stat(); // fstat of the O_PATH handle: the file itself, not what a link names
      if (st.isSymbolicLink())
        throw this.refuse(field, real, 'is a symlink; the plugin never mounts onto or creates through one');
      if (kind === 'dir' ? !st.isDirectory() : st.isDirectory())
        throw this.refuse(field, real, kind === 'dir' ? 'is not a directory' : 'is a directory');
      const where = await readlink(`/proc/self/fd/${fh.fd}`);
      if (where !== real) throw this.refuse(field, real, 'is not where it was checked (a symlink in its path?)');
      return await fn(`/proc/${process.pid}/fd/${fh.fd}`);
    } finally {
      await fh.close();
    }
  }
}
