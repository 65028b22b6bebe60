import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { CommandError, type Runner } from './command.js';

/** Every attached loop device and its backing file, as sysfs shows them to this process. */
export async function readLoopTable(): Promise<Record<string, string>> {
  const names = (await readdir('/sys/block').catch(() => [] as string[])).filter((n) => /^loop\d+$/.test(n));
  const table: Record<string, string> = {};
  await Promise.all(
    names.map(async (n) => {
      const f = await readFile(`/sys/block/${n}/loop/backing_file`, 'utf8').catch(() => undefined);
      const file = f?.trim().replace(/ \(deleted\)$/, '');
      if (file) table[`/dev/${n}`] = file;
    }),
  );
  return table;
}

export interface LoopDevicesOptions {
  /** Where losetup runs: in the process whose mount namespace holds the backing files' mounts. */
  run: Runner;
  /**
   * The loop table as that same process sees it. The kernel names a backing file by its path from
   * the reader's root, and a mount the reader cannot reach (another container's, or a mount namespace
   * that is gone) comes out as some other path, so lookups by path are only right where the files
   * were opened.
   */
  table: () => Promise<Record<string, string>>;
}

/**
 * Loop devices: attached, found and detached on one side — this plugin's, or the node pod's mapper
 * host, whose container outlives the plugin's and so keeps the mounts the loops' files are on.
 */
export class LoopDevices {
  constructor(private readonly o: LoopDevicesOptions) {}

  /**
   * Attach a file as a loop device. Direct I/O skips a second page cache over the file (rbd-fuse
   * below has none worth keeping); when the backing filesystem refuses it, plain buffered I/O.
   * Concurrent attaches can race for the same free device, so EBUSY is retried.
   */
  async attach(file: string, readonly: boolean, signal?: AbortSignal): Promise<string> {
    const base = ['--find', '--show', ...(readonly ? ['--read-only'] : [])];
    let directIo = true;
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await this.o.run('losetup', [...base, ...(directIo ? ['--direct-io=on'] : []), file], {
          signal,
          timeoutMs: 30_000,
        });
        return r.stdout.trim();
      } catch (e) {
        if (!(e instanceof CommandError) || attempt >= 8) throw e;
        if (directIo && /direct|Invalid argument/i.test(e.stderr)) directIo = false;
        else if (!/busy|EBUSY|resource temporarily/i.test(e.stderr)) throw e;
        await sleep(10 * attempt, undefined, { signal });
      }
    }
  }

  /** The file behind a loop device; undefined when it has none. */
  async backingFile(device: string): Promise<string | undefined> {
    return (await this.o.table())[device];
  }

  /**
   * Every loop device backed by `file` (from the table: never touches the file, which may sit on a dead FUSE mount).
   */
  async backedBy(file: string): Promise<string[]> {
    return this.where((backing) => backing === file);
  }

  /** Every loop device backed by a file under `dir`. */
  async under(dir: string): Promise<string[]> {
    return this.where((backing) => backing.startsWith(`${dir}/`));
  }

  private async where(match: (backing: string) => boolean): Promise<string[]> {
    return Object.entries(await this.o.table())
      .filter(([, backing]) => match(backing))
      .map(([device]) => device);
  }

  /** Detach a loop device; one already detached is success. */
  async detach(device: string): Promise<void> {
    try {
      await this.o.run('losetup', ['--detach', device], { timeoutMs: 30_000 });
    } catch (e) {
      if (e instanceof CommandError && /No such device or address|No such file|not a loop/i.test(e.stderr)) return;
      throw e;
    }
  }
}
