import { readFile, readlink, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Runner } from './command.js';
import { NodeError } from '../errors.js';

/** The kernel's name for a device node: /dev/loop3 → loop3 (following /dev symlinks). */
export async function kernelName(device: string): Promise<string> {
  const target = await readlink(device).catch(() => undefined);
  return basename(target ?? device);
}

/** Size in bytes from sysfs (512-byte sectors), without opening the device. */
export async function deviceSize(device: string): Promise<number> {
  const name = await kernelName(device);
  const sectors = Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim());
  if (!Number.isFinite(sectors)) throw new Error(`cannot read the size of ${device} from sysfs`);
  return sectors * 512;
}

/** "major:minor" of a block device, as /proc/self/mountinfo shows it. */
export async function deviceNumber(device: string): Promise<string> {
  const name = await kernelName(device);
  return (await readFile(`/sys/class/block/${name}/dev`, 'utf8')).trim();
}

export async function isBlockDevice(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isBlockDevice(),
    () => false,
  );
}

/** Wait until a device node exists (udev may lag behind the map command), bounded and cancellable. */
export async function waitForDevice(device: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    if (await isBlockDevice(device)) return;
    if (Date.now() > until)
      throw new NodeError(
        'unavailable',
        `${device} did not appear within ${timeoutMs / 1000} s after mapping; is udev running?`,
      );
    await sleep(delay, undefined, { signal });
  }
}

/**
 * Whether the device serves a read: one direct 4 KiB read in a child process with a timeout, so a
 * hung mapping can never block the plugin.
 */
export async function readProblem(run: Runner, device: string): Promise<string | undefined> {
  try {
    await run('dd', [`if=${device}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], {
      timeoutMs: 5000,
    });
    return undefined;
  } catch (e) {
    return `${device} cannot be read: ${(e as Error).message}`;
  }
}

/**
 * Wait until the device shows at least `minBytes` (krbd and rbd-nbd pick up an image resize by
 * themselves, a moment later). Returns the size seen last.
 */
export async function waitForSize(
  device: string,
  minBytes: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const size = await deviceSize(device);
    if (size >= minBytes || Date.now() > until) return size;
    await sleep(100, undefined, { signal });
  }
}
