import { execa, type ExecaError } from 'execa';

export interface RunOptions {
  /** Aborts the command (SIGTERM, then SIGKILL) when the CO gives up. */
  signal?: AbortSignal;
  /** Per-command limit; a wedged tool must not hold a volume lock forever. */
  timeoutMs?: number;
  /** Added to the plugin's environment (CEPH_ARGS: paths and names, never a key). */
  env?: Record<string, string>;
  /** Exit codes that are answers, not failures (blkid exits 2 for "nothing found"). */
  okExitCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** A host command that failed: which one, how, and the end of what it said. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly reason: 'exit' | 'timeout' | 'cancelled' | 'spawn',
  ) {
    const said = lastLines(stderr, 3);
    const how =
      reason === 'exit'
        ? `exit ${exitCode}`
        : reason === 'timeout'
          ? 'timed out'
          : reason === 'cancelled'
            ? 'cancelled'
            : 'could not start';
    super(`${command} failed (${how})${said ? `: ${said}` : ''}`);
    this.name = 'CommandError';
  }
}

export function lastLines(text: string, n: number): string {
  return text
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-n)
    .join(' | ');
}

/** How the node runs a host tool; injected so unit tests can check command lines without a host. */
export type Runner = (cmd: string, args: string[], o?: RunOptions) => Promise<RunResult>;

/** Run a host tool (argument vector, no shell) and return its output, or throw a CommandError. */
/**
 * How long past its timeout (or cancel) a command is waited for after it was killed. A process stuck in
 * uninterruptible I/O on a hung device cannot die until the device answers: the caller is answered
 * anyway, and the process exits (and is reaped) whenever the device lets it go.
 */
const KILLED_GRACE_MS = 5000; // SIGTERM, SIGKILL 2 s later (forceKillAfterDelay), then 3 s more

export const run: Runner = async (cmd, args, o = {}) => {
  const shown = [cmd, ...args].join(' ');
  const timeoutMs = o.timeoutMs ?? 60_000;
  try {
    const child = execa(cmd, args, {
      env: o.env,
      stdin: 'ignore',
      timeout: timeoutMs,
      cancelSignal: o.signal,
      forceKillAfterDelay: 2000,
      reject: false,
    });
    // killed by the timeout or the cancel, and still not gone a grace later: answer without it
    let grace: NodeJS.Timeout | undefined;
    let onAbort = () => {};
    const stuck = new Promise<never>((_, reject) => {
      const giveUp = () => {
        grace ??= setTimeout(
          () =>
            reject(
              new CommandError(
                shown,
                undefined,
                'killed, but stuck in uninterruptible I/O (a hung device?)',
                o.signal?.aborted ? 'cancelled' : 'timeout',
              ),
            ),
          KILLED_GRACE_MS,
        );
      };
      const due = setTimeout(giveUp, timeoutMs);
      onAbort = () => {
        clearTimeout(due);
        giveUp();
      };
      o.signal?.addEventListener('abort', onAbort, { once: true });
      void child.finally(() => clearTimeout(due));
    });
    const r = await Promise.race([child, stuck]).finally(() => {
      clearTimeout(grace);
      o.signal?.removeEventListener('abort', onAbort);
    });
    const exitCode = r.exitCode ?? -1;
    const stdout = String(r.stdout ?? '');
    const stderr = String(r.stderr ?? '');
    if (r.timedOut) throw new CommandError(shown, undefined, stderr, 'timeout');
    if (r.isCanceled) throw new CommandError(shown, undefined, stderr, 'cancelled');
    if (r.failed && r.exitCode === undefined)
      throw new CommandError(shown, undefined, (r as ExecaError).shortMessage ?? stderr, 'spawn');
    if (exitCode !== 0 && !(o.okExitCodes ?? []).includes(exitCode))
      throw new CommandError(shown, exitCode, stderr || stdout, 'exit');
    return { stdout, stderr, exitCode };
  } catch (e) {
    if (e instanceof CommandError) throw e;
    throw new CommandError(shown, undefined, (e as Error).message, 'spawn');
  }
};
