import { execa } from 'execa';
import { CephError, type CephIdentity, cephToolEnv, checkName, failureOf, identityArgs, runCephTool } from './cli.js';
import { CINDER_RBD_NAME as CINDER_NAME, CLIENT_ID, POOL_NAME } from './names.js';

/**
 * The controller's one way into Ceph: the rbd CLI run as the operator's own, narrowly-scoped Ceph
 * identity (read-only on the volume pools), with deadlines and bounded output. Every name that reaches an
 * argument is checked here (images and snapshots by Cinder's naming, pools from the operator's config),
 * whatever the caller did before; nothing of the identity but its id and file paths is ever logged.
 */
/** One RBD snapshot of an image, as `rbd snap ls` lists it: its id grows with every snapshot cut. */
export interface RbdSnapshot {
  id: number;
  name: string;
  size: number;
}

/** A byte range: from `offset`, `length` bytes. */
export interface Extent {
  offset: number;
  length: number;
}

export interface ImageRef {
  pool: string;
  image: string;
}

/** A line of `rbd diff` is three short fields; a longer one is not rbd's. */
const MAX_LINE = 256;

export class RbdReader {
  private readonly base: string[];

  constructor(
    readonly identity: CephIdentity,
    /** Observes every rbd command line (benchmarks and tests: what reached Ceph). */
    private readonly onCommand: (args: string[]) => void = () => {},
    private readonly timeoutMs = 60_000,
  ) {
    checkName('ceph client id', identity.id, CLIENT_ID);
    for (const p of identity.pools) checkName('pool', p, POOL_NAME);
    this.base = identityArgs(identity);
  }

  private spec(ref: ImageRef, snap?: string): string {
    const image = `${checkName('pool', ref.pool, POOL_NAME)}/${checkName('image', ref.image, CINDER_NAME)}`;
    return snap ? `${image}@${checkName('snapshot', snap, CINDER_NAME)}` : image;
  }

  /** Run rbd to completion and return its (bounded) output. */
  private answer(args: string[], signal?: AbortSignal): Promise<string> {
    this.onCommand(args);
    return runCephTool('rbd', this.base, args, { timeoutMs: this.timeoutMs, signal });
  }

  /** Each configured pool as this identity reads it (doctor): how many images it holds, or why it cannot. */
  async pools(signal?: AbortSignal): Promise<{ pool: string; images?: number; problem?: string }[]> {
    return Promise.all(
      this.identity.pools.map(async (pool) => {
        try {
          const out = JSON.parse(await this.answer(['pool', 'stats', '--format', 'json', pool], signal)) as {
            images?: { count?: number };
          };
          return { pool, images: out.images?.count ?? 0 };
        } catch (e) {
          return { pool, problem: e instanceof SyntaxError ? 'rbd pool stats printed no JSON' : (e as Error).message };
        }
      }),
    );
  }

  /**
   * Where one Cinder volume's image is: with one configured pool, there (no need to ask: a missing image
   * fails the command that reads it); with several, the first that holds it.
   */
  async locate(image: string, signal?: AbortSignal): Promise<ImageRef | undefined> {
    const [only, ...more] = this.identity.pools;
    if (only && !more.length) return { pool: only, image: checkName('image', image, CINDER_NAME) };
    return (await this.findImage(image, signal))?.ref;
  }

  /**
   * The RBD snapshots of one Cinder volume's image, and the pool it is in; undefined when no configured
   * pool holds it (another backend, or an image Cinder renamed in a migration).
   */
  async findImage(
    image: string,
    signal?: AbortSignal,
  ): Promise<{ ref: ImageRef; snapshots: RbdSnapshot[] } | undefined> {
    for (const pool of this.identity.pools) {
      const ref = { pool, image };
      let out: string;
      try {
        out = await this.answer(['snap', 'ls', '--format', 'json', this.spec(ref)], signal);
      } catch (e) {
        if (e instanceof CephError && e.kind === 'not-found') continue;
        throw e;
      }
      return { ref, snapshots: parseSnapshots(out) };
    }
    return undefined;
  }

  /**
   * The extents of `snap` that hold data, whole RADOS objects at a time: read from the object map
   * (fast-diff), so a thin terabyte costs a fraction of a second; an object's extent covers every byte
   * written in it.
   */
  allocated(ref: ImageRef, snap: string, signal?: AbortSignal): AsyncGenerator<Extent> {
    return this.diff(['--whole-object', this.spec(ref, snap)], signal);
  }

  /**
   * The extents of `snap` that differ from the older `fromSnap` (written or discarded since), to the
   * byte: what an incremental backup copies. rbd asks each object of the image, so it costs time in
   * proportion to the image's size, not to what changed.
   */
  changed(ref: ImageRef, fromSnap: string, snap: string, signal?: AbortSignal): AsyncGenerator<Extent> {
    return this.diff(['--from-snap', checkName('snapshot', fromSnap, CINDER_NAME), this.spec(ref, snap)], signal);
  }

  /**
   * `rbd diff` as it prints, in ascending order: memory stays the same for any number of extents, and rbd
   * waits while the caller does. Stopping the iteration, or `signal`, kills rbd and waits for it to be gone.
   */
  private async *diff(diffArgs: string[], signal?: AbortSignal): AsyncGenerator<Extent> {
    const args = ['diff', ...diffArgs];
    const shown = `rbd ${args.join(' ')}`;
    this.onCommand(args);
    const child = execa('rbd', [...this.base, ...args], {
      env: cephToolEnv(),
      extendEnv: false,
      stdin: 'ignore',
      buffer: { stdout: false, stderr: true },
      maxBuffer: { stderr: 64 * 1024 },
      // no overall timeout: a stream lasts as long as its reader reads (the RPC's deadline and cancel end it),
      // and a Ceph that stops answering costs the op timeouts above
      cancelSignal: signal,
      forceKillAfterDelay: 2000,
      reject: false,
    });
    let ended = false;
    try {
      let rest = '';
      let header = true;
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        const lines = (rest + chunk.toString('latin1')).split('\n');
        rest = lines.pop()!;
        if (rest.length > MAX_LINE) throw new CephError('unexpected', `${shown} printed a line rbd does not print`);
        for (const line of lines) {
          if (header) {
            header = false;
            if (line.startsWith('Offset')) continue;
          }
          yield parseDiffLine(line, shown);
        }
      }
      if (rest) yield parseDiffLine(rest, shown);
      const r = await child;
      ended = true;
      if (r.isCanceled) throw new CephError('timeout', `${shown} was cancelled`);
      if (r.failed) throw failureOf(shown, String(r.stderr ?? r.message), r);
    } finally {
      if (!ended) {
        // the caller stopped reading (a cancelled stream) or something failed: rbd goes now, and is reaped
        child.kill('SIGKILL');
        await child.catch(() => undefined);
      }
    }
  }
}

function parseSnapshots(out: string): RbdSnapshot[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(out);
  } catch {
    throw new CephError('unexpected', 'rbd snap ls printed no JSON');
  }
  if (!Array.isArray(parsed)) throw new CephError('unexpected', 'rbd snap ls printed no list');
  return parsed.flatMap((s: { id?: unknown; name?: unknown; size?: unknown }) =>
    typeof s?.id === 'number' && typeof s.name === 'string' && typeof s.size === 'number'
      ? [{ id: s.id, name: s.name, size: s.size }]
      : [],
  );
}

/** `<offset> <length> data|zero`, as rbd prints one extent. */
export function parseDiffLine(line: string, shown: string): Extent {
  const [o, l, type, extra] = line.trim().split(/\s+/, 4);
  const offset = Number(o);
  const length = Number(l);
  if (
    extra !== undefined ||
    (type !== 'data' && type !== 'zero') ||
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length <= 0
  )
    throw new CephError('unexpected', `${shown} printed ${JSON.stringify(line.slice(0, 80))}, not an extent`);
  return { offset, length };
}
