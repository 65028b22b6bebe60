import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CommandError, type Runner } from './command.js';

/**
 * Attach a file as a loop device. Direct I/O skips a second page cache over the file (rbd-fuse
 * below has none worth keeping); when the backing filesystem refuses it, plain buffered I/O.
 * Concurrent attaches can race for the same free device, so EBUSY is retried.
 */
export async function attachLoop(run: Runner, file: string, readonly: boolean, signal?: AbortSignal): Promise<string> {
  const base = ['--find', '--show', ...(readonly ? ['--read-only'] : [])];
  let directIo = true;
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await run('losetup', [...base, ...(directIo ? ['--direct-io=on'] : []), file], { signal, timeoutMs: 30_000 });
      return r.stdout.trim();
    } catch (e) {
      if (!(e instanceof CommandError) || attempt >= 8) throw e;
      if (directIo && /direct|Invalid argument/i.test(e.stderr)) directIo = false;
      else if (!/busy|EBUSY|resource temporarily/i.test(e.stderr)) throw e;
      await sleep(10 * attempt, undefined, { signal });
    }
  }
}

/** The file behind a loop device, from sysfs; undefined when it has none. */
export async function loopBackingFile(device: string): Promise<string | undefined> {
  const name = device.replace(/^\/dev\//, '');
  const f = await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => undefined);
  return f?.trim().replace(/ \(deleted\)$/, '') || undefined;
}

/** Every loop device backed by `file` (a scan of sysfs; never touches the file, which may sit on a dead FUSE mount). */
export async function loopsBackedBy(file: string): Promise<string[]> {
  return loopsWhere((backing) => backing === file);
}

/** Every loop device backed by a file under `dir`. */
export async function loopsUnder(dir: string): Promise<string[]> {
  return loopsWhere((backing) => backing.startsWith(`${dir}/`));
}

async function loopsWhere(match: (backing: string) => boolean): Promise<string[]> {
  const names = (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => /^loop\d+$/.test(n));
  const backing = await Promise.all(names.map((n) => loopBackingFile(`/dev/${n}`)));
  return names.filter((_, i) => backing[i] !== undefined && match(backing[i]!)).map((n) => `/dev/${n}`);
}

/** Detach a loop device; one already detached is success. */
export async function detachLoop(run: Runner, device: string): Promise<void> {
  try {
    await run('losetup', ['--detach', device], { timeoutMs: 30_000 });
  } catch (e) {
    if (e instanceof CommandError && /No such device or address|No such file|not a loop/i.test(e.stderr)) return;
    throw e;
  }
}
