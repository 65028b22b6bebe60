import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLIENT_ADDRESS,
  type FenceRecord,
  fenceKey,
  fenceRecordSchema,
  fencingObject,
  mapperKey,
  parseRecord,
} from '../../fencing-records.js';
import { lastLines, type Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import { mapFailure } from '../mappers/map-output.js';
import { cephClientArgs, confFile, imageSpecString, type ImageSpec } from '../mappers/mapper.js';

export interface CephClientsOptions {
  run: Runner;
  cephConf?: string;
  /** This node's name: whose fencing object it writes. */
  nodeId: string;
}

/**
 * The node's side of fencing (src/fencing-records.ts): which Ceph client instance its mapper is for an
 * image — learnt by comparing the image's watchers before the map and after its first read, since
 * rbd-fuse opens the image lazily and its instance's nonce is random — recorded where the controller
 * reads it before the stage reports done; and whether the controller has since fenced it.
 */
export class CephClients {
  constructor(private readonly o: CephClientsOptions) {}

  private base(spec: ImageSpec, keyringFile: string): string[] {
    return ['-c', confFile(this.o.cephConf), ...cephClientArgs(spec, keyringFile)];
  }

  /** `rados … -p POOL VERB OBJECT …` on this node's fencing object in the image's pool. */
  private omap(spec: ImageSpec, keyringFile: string, verb: string, ...rest: string[]): string[] {
    return [...this.base(spec, keyringFile), '-p', spec.pool, verb, fencingObject(this.o.nodeId), ...rest];
  }

  /** One record of this node's, stamped with the time. */
  private async set(spec: ImageSpec, keyringFile: string, key: string, value: object, signal?: AbortSignal) {
    const text = JSON.stringify({ ...value, at: new Date().toISOString() });
    await this.o.run('rados', this.omap(spec, keyringFile, 'setomapval', key, text), { timeoutMs: 60_000, signal });
  }

  /** The client instances watching the image now. */
  async watchers(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<string[]> {
    // the first Ceph command of a stage: a missing image or a refused key is the CO's to hear as such
    const r = await this.o
      .run('rbd', [...this.base(spec, keyringFile), 'status', '--format', 'json', imageSpecString(spec)], {
        timeoutMs: 60_000,
        signal,
      })
      .catch((e: unknown) => {
        throw mapFailure(e, 'rbd status', spec);
      });
    let parsed: { watchers?: { address?: unknown }[] };
    try {
      parsed = JSON.parse(r.stdout) as typeof parsed;
    } catch {
      throw new NodeError('internal', `rbd status ${imageSpecString(spec)} printed no JSON`);
    }
    return (parsed.watchers ?? []).flatMap((w) =>
      typeof w.address === 'string' && CLIENT_ADDRESS.test(w.address) ? [w.address] : [],
    );
  }

  /**
   * The client instances the mapping of `device` added (watchers now, not in `before`), after one
   * direct read has made the mapper open the image; recorded for the controller. Several new ones (a
   * multi-node volume mapped elsewhere at the same instant) cannot be told apart: none is recorded, so
   * fencing never stops another node's client.
   */
  async learn(
    spec: ImageSpec,
    keyringFile: string,
    device: string,
    before: string[],
    signal?: AbortSignal,
  ): Promise<string[]> {
    await this.o.run('dd', [`if=${device}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct'], {
      timeoutMs: 30_000,
      signal,
    });
    let added: string[] = [];
    for (let i = 0; i < 20 && !added.length; i++) {
      if (i) await sleep(100, undefined, { signal });
      added = (await this.watchers(spec, keyringFile, signal)).filter((w) => !before.includes(w));
    }
    if (added.length !== 1) return [];
    await this.set(spec, keyringFile, mapperKey(spec.image), { clients: added }, signal);
    return added;
  }

  /** The image is no longer mapped here: its record goes (a missing one is fine). */
  async forget(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<void> {
    await this.o.run('rados', this.omap(spec, keyringFile, 'rmomapkey', mapperKey(spec.image)), {
      timeoutMs: 60_000,
      okExitCodes: [1, 2],
      signal,
    });
  }

  /** The controller's fence of this node for the image, if there is one. */
  async fence(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<FenceRecord | undefined> {
    const r = await this.o.run('rados', this.omap(spec, keyringFile, 'getomapval', fenceKey(spec.image), '-'), {
      timeoutMs: 60_000,
      okExitCodes: [1],
      signal,
    });
    if (r.exitCode === 0) return parseRecord(fenceRecordSchema, r.stdout.trim());
    // no such key, or no such object (ENOENT): no fence; anything else is a failure to know
    if (/No such key|\(2\)/.test(`${r.stdout}${r.stderr}`)) return undefined;
    throw new NodeError(
      'unavailable',
      `cannot read the fencing record of ${imageSpecString(spec)}: ${lastLines(r.stderr || r.stdout, 1)}`,
    );
  }

  /**
   * The keys of this node's fencing object in the image's pool (none when it has no object): one read that tells, for
   * every stage in the pool, whether a fence record exists to be read at all.
   */
  async keys(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<Set<string>> {
    const r = await this.o.run('rados', this.omap(spec, keyringFile, 'listomapkeys'), {
      timeoutMs: 60_000,
      okExitCodes: [1],
      signal,
    });
    if (r.exitCode === 0) return new Set(r.stdout.split('\n').filter(Boolean));
    if (/\(2\)/.test(`${r.stdout}${r.stderr}`)) return new Set();
    throw new NodeError(
      'unavailable',
      `cannot list the fencing records of pool ${spec.pool}: ${lastLines(r.stderr || r.stdout, 1)}`,
    );
  }

  /** Say the fenced stage is gone without a write: the controller may lift the fence. */
  async release(spec: ImageSpec, keyringFile: string, fence: FenceRecord, signal?: AbortSignal): Promise<void> {
    await this.set(spec, keyringFile, fenceKey(spec.image), { ...fence, state: 'released' }, signal);
  }
}
