import type { Runner } from '../host/command.js';
import { cephClientArgs, confFile, imageSpecString, type ImageSpec } from './mapper.js';

/**
 * Key/value metadata on the RBD image itself (`rbd image-meta`), seen by every node that maps it. The
 * format intent lives here as well as on the node: an mkfs cut short on one node and a stage of the same
 * volume on another must agree on whether the half-written bytes are data (never formatted) or that
 * unfinished mkfs (finished).
 */
export const FORMAT_INTENT_KEY = 'stackube.csi/format-intent';

/** `rbd image-meta` exits 2 (ENOENT) for a key that is not there. */
const ABSENT = 2;

export class ImageMeta {
  constructor(private readonly o: { run: Runner; cephConf?: string }) {}

  private args(verb: string, spec: ImageSpec, keyringFile: string, ...rest: string[]): string[] {
    return [
      '-c',
      confFile(this.o.cephConf),
      ...cephClientArgs(spec, keyringFile),
      'image-meta',
      verb,
      imageSpecString(spec),
      ...rest,
    ];
  }

  async get(spec: ImageSpec, keyringFile: string, key: string, signal?: AbortSignal): Promise<string | undefined> {
    const r = await this.o.run('rbd', this.args('get', spec, keyringFile, key), {
      okExitCodes: [ABSENT],
      timeoutMs: 60_000,
      signal,
    });
    return r.exitCode === ABSENT ? undefined : r.stdout.trim();
  }

  async set(spec: ImageSpec, keyringFile: string, key: string, value: string, signal?: AbortSignal): Promise<void> {
    await this.o.run('rbd', this.args('set', spec, keyringFile, key, value), { timeoutMs: 60_000, signal });
  }

  async remove(spec: ImageSpec, keyringFile: string, key: string, signal?: AbortSignal): Promise<void> {
    await this.o.run('rbd', this.args('remove', spec, keyringFile, key), {
      okExitCodes: [ABSENT],
      timeoutMs: 60_000,
      signal,
    });
  }
}
