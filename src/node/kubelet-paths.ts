import { constants } from 'node:fs';
import { lstat, mkdir, open, readlink, realpath, rmdir, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { NodeError } from './errors.js';

/**
 * Paths under the kubelet root, handled as a root process must handle a tree that pods can write
 * into (their volumes, subPaths): every path is checked on its resolved form, what the plugin creates
 * there is created one component at a time and verified, and a mount or bind lands on a directory or
 * file held open without following symlinks (`/proc/<pid>/fd/<n>`, with mount's --no-canonicalize),
 * so a symlink swapped in at the last moment cannot redirect it. The root itself may be a symlink
 * (/var/lib/kubelet → another disk): comparisons use its resolved form.
 */

/** Linux's O_PATH: an fd that names a file without opening it (no device is opened, no FIFO blocks); libuv adds O_CLOEXEC. */
const O_PATH = 0o10000000;
const PIN_FLAGS = O_PATH | constants.O_NOFOLLOW;

export type PathKind = 'dir' | 'file';

const inside = (path: string, root: string) => path === root || path.startsWith(root.endsWith(sep) ? root : `${root}${sep}`);

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
        if (i === parts.length - 1) throw this.refuse(field, path, 'is a symlink; the plugin never mounts onto or creates through one');
        const target = await realpath(next).catch(() => undefined);
        if (!target || !inside(target, this.real)) throw this.refuse(field, path, `has a component (${parts.slice(0, i + 1).join('/')}) that leads outside the kubelet root`);
        cur = target;
      } else cur = next;
    }
    if (!inside(cur, this.real) || cur === this.real) throw this.refuse(field, path, 'resolves to the kubelet root itself or outside it');
    return cur;
  }

  private refuse(field: string, path: string, why: string): NodeError {
    return new NodeError('invalid-argument', `${field} ${path} ${why}`);
  }

  /**
   * Make the directory at a resolved path: each missing component made alone and checked right after
   * (a directory, not a symlink, and where it should be); one that is not is removed again and refused.
   */
  async ensureDir(real: string, field: string, mode = 0o750): Promise<void> {
    const missing: string[] = [];
    let at = real;
    while (inside(at, this.real) && at !== this.real) {
      const st = await lstat(at).catch(() => undefined);
      if (st) {
        if (st.isSymbolicLink()) throw this.refuse(field, at, 'is a symlink; the plugin never mounts onto or creates through one');
        if (!st.isDirectory()) throw this.refuse(field, at, at === real ? 'exists and is not a directory' : 'has a component that is not a directory');
        break;
      }
      missing.unshift(at);
      at = dirname(at);
    }
    for (const dir of missing) {
      await mkdir(dir, { mode }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      const where = await realpath(dir).catch(() => undefined);
      const st = await lstat(dir).catch(() => undefined);
      if (where !== dir || !st?.isDirectory()) {
        if (where && where !== dir && st?.isDirectory()) await rmdir(where).catch(() => undefined);
        throw this.refuse(field, dir, 'changed while it was being made (a symlink in its path?); nothing was created outside the kubelet root');
      }
    }
  }

  /** Make an empty file at a resolved path (a block volume's target), never through a symlink. */
  async ensureFile(real: string, field: string, mode = 0o640): Promise<void> {
    await this.ensureDir(dirname(real), field);
    let fh: FileHandle;
    try {
      fh = await open(real, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') throw this.refuse(field, real, 'is a symlink; the plugin never mounts onto or creates through one');
      if (code === 'EISDIR') throw this.refuse(field, real, 'is a directory; a block volume is published as a device file');
      throw e;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) throw this.refuse(field, real, 'is neither a regular file nor a device file');
      if ((await readlink(`/proc/self/fd/${fh.fd}`)) !== real) throw this.refuse(field, real, 'moved while it was being made');
    } finally {
      await fh.close();
    }
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
      if (st.isSymbolicLink()) throw this.refuse(field, real, 'is a symlink; the plugin never mounts onto or creates through one');
      if (kind === 'dir' ? !st.isDirectory() : st.isDirectory()) throw this.refuse(field, real, kind === 'dir' ? 'is not a directory' : 'is a directory');
      const where = await readlink(`/proc/self/fd/${fh.fd}`);
      if (where !== real) throw this.refuse(field, real, 'is not where it was checked (a symlink in its path?)');
      return await fn(`/proc/${process.pid}/fd/${fh.fd}`);
    } finally {
      await fh.close();
    }
  }

  /** The resolved path again, to be sure nothing in it changed since it was recorded (before an unmount). */
  async unchanged(real: string): Promise<boolean> {
    return (await realpath(real).catch(() => undefined)) === real;
  }
}
