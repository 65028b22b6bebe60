import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** Whether a process exists (and is not a zombie waiting to be reaped). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  return true;
}

/** A process's argument vector, or undefined when it is gone. */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
  if (!raw) return undefined;
  return raw.replace(/\0$/, '').split('\0');
}

/** A process's state letter (R, S, D, Z, …) from /proc, or undefined when it is gone. */
async function processState(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat?.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

/** Pids whose argument vector satisfies `match` (a scan of /proc; a few ms on a node). */
export async function findProcesses(match: (argv: string[]) => boolean): Promise<number[]> {
  const entries = await readdir('/proc');
  const pids = entries.filter((e) => /^\d+$/.test(e)).map(Number);
  const argvs = await Promise.all(pids.map((p) => processArgv(p)));
  return pids.filter((_, i) => argvs[i] && match(argvs[i]));
}

/**
 * SIGTERM, then SIGKILL after `graceMs` (`first: 'SIGKILL'`: at once, no chance to flush anything);
 * resolves once the process is gone (or a zombie).
 */
export async function stopProcess(
  pid: number,
  graceMs = 3000,
  first: 'SIGTERM' | 'SIGKILL' = 'SIGTERM',
): Promise<void> {
  const gone = async () => !processAlive(pid) || (await processState(pid)) === 'Z';
  if (await gone()) return;
  try {
    process.kill(pid, first);
  } catch {
    return;
  }
  const until = Date.now() + graceMs;
  while (Date.now() < until) {
    if (await gone()) return;
    await sleep(20);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 100 && !(await gone()); i++) await sleep(20);
}
