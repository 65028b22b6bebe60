import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../../package-info.js';
import { NodeError } from '../errors.js';
import { lastLines } from '../host/command.js';
import { cephFailure } from '../mappers/map-output.js';
import { confFile, imageSpecString, type ImageSpec } from '../mappers/mapper.js';

/** What the helper (helpers/ceph-session.py) does; each names its own fields. */
export type CephOp = 'watchers' | 'ends-zero' | 'omap-set' | 'omap-get' | 'omap-remove' | 'omap-keys';

/** A Ceph call that failed: Ceph's answer (with its errno), a timeout, the caller's cancel, or the helper itself. */
export class CephCallError extends Error {
  constructor(
    readonly op: CephOp,
    readonly errno: number | undefined,
    readonly said: string,
    readonly reason: 'ceph' | 'timeout' | 'cancelled' | 'helper',
  ) {
    super(`ceph ${op} failed: ${said}`);
    this.name = 'CephCallError';
  }
}

export interface CephSessionOptions {
  /** The conf file the calls read (monitors and user come with each call). */
  cephConf?: string;
  /** Debian's python, which has ceph-common's rados and rbd modules (another python may come first on PATH). */
  python?: string;
  /** How long the helper stays without a call before it is ended (it starts again on the next). */
  idleMs?: number;
  /** Each call's time, for the benchmarks' breakdown. */
  onCall?: (op: CephOp, ms: number) => void;
}

/** The Ceph identity a call acts as: the image's user and monitors, and the keyring file holding its key. */
export interface CephIdentity {
  spec: Pick<ImageSpec, 'pool' | 'user' | 'monitors'>;
  keyringFile: string;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

const replySchema = z.object({
  id: z.number(),
  result: z.record(z.string(), z.unknown()).optional(),
  error: z.object({ errno: z.number().nullable(), message: z.string() }).optional(),
});

interface Pending {
  op: CephOp;
  /** The helper the call went to: only its exit fails the call. */
  child: ChildProcessWithoutNullStreams;
  resolve: (result: Record<string, unknown>) => void;
  reject: (e: CephCallError) => void;
}

const SCRIPT = join(PACKAGE_ROOT, 'helpers', 'ceph-session.py');
const PYTHON = '/usr/bin/python3';

/**
 * A failed call as the node answers the CO: Ceph's own answer read as a Ceph tool's (a missing image, a refused key,
 * unreachable monitors), a cancel ABORTED, a dead helper UNAVAILABLE. `what` names the call in the message.
 */
export function callFailure(e: CephCallError, what: string, spec: ImageSpec): NodeError {
  if (e.reason === 'cancelled')
    return new NodeError('aborted', `${what} on ${imageSpecString(spec)} was cancelled by the caller`);
  if (e.reason === 'helper') return new NodeError('unavailable', `${what} on ${imageSpecString(spec)}: ${e.said}`);
  return cephFailure(e.said, what, spec, e.reason === 'timeout');
}

/** Why the helper cannot run here (for doctor), or undefined when its python has the modules it needs. */
export async function cephSessionProblem(python = PYTHON): Promise<string | undefined> {
  const r = await execa(python, ['-c', 'import rados, rbd'], { reject: false, timeout: 10_000 });
  if (r.exitCode === 0) return undefined;
  return `${python} cannot import rados and rbd (${lastLines(r.stderr || (r.message ?? ''), 1).slice(0, 160)}): install ceph-common's python3-rados and python3-rbd`;
}

/**
 * The node's small Ceph calls (an image's watchers and ends, the omap of the fencing and format-intent objects) on
 * connections a helper process keeps open: ~1-5 ms a call instead of the ~50 ms an `rbd` or `rados` command
 * costs to start and authenticate, which a stage paid five times on its critical path. The helper starts on
 * the first call, ends after idleMs without one, and dies with the plugin (its stdin closes).
 */
export class CephSession {
  private child?: ChildProcessWithoutNullStreams;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private idle?: NodeJS.Timeout;
  private stderrTail = '';

  constructor(private readonly o: CephSessionOptions = {}) {}

  async call(
    op: CephOp,
    who: CephIdentity,
    fields: Record<string, string>,
    o: CallOptions = {},
  ): Promise<Record<string, unknown>> {
    const started = performance.now();
    const id = this.nextId++;
    if (o.signal?.aborted) throw new CephCallError(op, undefined, 'cancelled by the caller', 'cancelled');
    const child = this.helper();
    clearTimeout(this.idle);
    try {
      return await new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(
          () => finish(new CephCallError(op, undefined, `no answer in ${o.timeoutMs ?? 60_000} ms`, 'timeout')),
          o.timeoutMs ?? 60_000,
        );
        const onAbort = () => finish(new CephCallError(op, undefined, 'cancelled by the caller', 'cancelled'));
        const finish = (outcome: Record<string, unknown> | CephCallError) => {
          clearTimeout(timer);
          o.signal?.removeEventListener('abort', onAbort);
          this.pending.delete(id);
          if (outcome instanceof CephCallError) reject(outcome);
          else resolve(outcome);
        };
        o.signal?.addEventListener('abort', onAbort, { once: true });
        this.pending.set(id, { op, child, resolve: finish, reject: finish });
        child.stdin.write(
          `${JSON.stringify({
            id,
            op,
            conf: confFile(this.o.cephConf),
            user: who.spec.user,
            monitors: who.spec.monitors,
            keyring: who.keyringFile,
            pool: who.spec.pool,
            ...fields,
          })}\n`,
        );
      });
    } finally {
      this.o.onCall?.(op, performance.now() - started);
      if (!this.pending.size) this.idle = setTimeout(() => this.end(), this.o.idleMs ?? 60_000).unref();
    }
  }

  /** call() on an image's cluster, a failure answered as callFailure says: what the node's parts use. */
  async ask(
    op: CephOp,
    who: { spec: ImageSpec; keyringFile: string },
    fields: Record<string, string>,
    what: string,
    signal?: AbortSignal,
  ): Promise<Record<string, unknown>> {
    return this.call(op, who, fields, { signal }).catch((e: unknown) => {
      throw e instanceof CephCallError ? callFailure(e, what, who.spec) : e;
    });
  }

  /**
   * End the helper (calls under way fail as the helper's). It is let go at once: a call that comes before its exit is
   * seen goes to a new helper, not to this one's closed stdin.
   */
  end(): void {
    clearTimeout(this.idle);
    const child = this.child;
    this.child = undefined;
    child?.stdin.end();
  }

  private helper(): ChildProcessWithoutNullStreams {
    if (this.child) return this.child;
    const python = this.o.python ?? PYTHON;
    const child = spawn(python, [SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.stderrTail = '';
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr])
      (stream as unknown as { unref?: () => void }).unref?.();
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (this.stderrTail = (this.stderrTail + chunk).slice(-2000)));
    child.stdin.on('error', () => undefined); // a helper that died: its exit says so
    createInterface({ input: child.stdout }).on('line', (line) => this.reply(line));
    const gone = (why: string) => {
      if (this.child === child) this.child = undefined;
      for (const p of [...this.pending.values()].filter((q) => q.child === child))
        p.reject(
          new CephCallError(
            p.op,
            undefined,
            `the Ceph session helper (${python} ${SCRIPT}) ${why}${this.stderrTail ? `: ${lastLines(this.stderrTail, 2)}` : ''}`,
            'helper',
          ),
        );
    };
    child.on('error', (e) =>
      gone(`could not start (${e.message}; it needs ceph-common's python3-rados and python3-rbd)`),
    );
    child.on('exit', (code, signal) => gone(`exited (${signal ?? `code ${code}`})`));
    return child;
  }

  private reply(line: string): void {
    let parsed: z.infer<typeof replySchema>;
    try {
      parsed = replySchema.parse(JSON.parse(line));
    } catch {
      return; // not an answer (the helper writes only answers; a stray line is no call's)
    }
    const p = this.pending.get(parsed.id);
    if (!p) return; // a call that timed out or was cancelled meanwhile
    if (parsed.error) p.reject(new CephCallError(p.op, parsed.error.errno ?? undefined, parsed.error.message, 'ceph'));
    else p.resolve(parsed.result ?? {});
  }
}
