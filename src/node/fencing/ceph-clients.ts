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
import { type CephOp, type CephSession } from '../ceph/session.js';
import { NodeError } from '../errors.js';
import { imageSpecString, type ImageSpec } from '../mappers/mapper.js';

export interface CephClientsOptions {
  session: CephSession;
  /** This node's name: whose fencing object it writes. */
  nodeId: string;
}

/**
 * The node's side of fencing (src/fencing-records.ts): which Ceph client instance its mapper is for an
 * image — learnt by comparing the image's watchers before the map opens the image and after, since its
 * instance's nonce is random — recorded where the controller reads it before the stage reports done; and
 * whether the controller has since fenced it.
 */
export class CephClients {
  constructor(private readonly o: CephClientsOptions) {}

  /** A call on this node's fencing object in the image's pool. */
  private omap(op: CephOp, spec: ImageSpec, keyringFile: string, fields: Record<string, string>, signal?: AbortSignal) {
    const what = `${op} on ${fencingObject(this.o.nodeId)}`;
    return this.o.session.ask(
      op,
      { spec, keyringFile },
      { object: fencingObject(this.o.nodeId), ...fields },
      what,
      signal,
    );
  }

  /** One record of this node's, stamped with the time. */
  private async set(spec: ImageSpec, keyringFile: string, key: string, value: object, signal?: AbortSignal) {
    const text = JSON.stringify({ ...value, at: new Date().toISOString() });
    await this.omap('omap-set', spec, keyringFile, { key, value: text }, signal);
  }

  /**
   * The client instances watching the image now. The first Ceph call of a stage: a missing image or a refused key is
   * the CO's to hear as such.
   */
  async watchers(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<string[]> {
    const { watchers } = await this.o.session.ask(
      'watchers',
      { spec, keyringFile },
      { image: spec.image },
      'rbd status',
      signal,
    );
    if (!Array.isArray(watchers))
      throw new NodeError('internal', `the Ceph session listed no watchers of ${imageSpecString(spec)}`);
    return watchers.flatMap((w) => (typeof w === 'string' && CLIENT_ADDRESS.test(w) ? [w] : []));
  }

  /**
   * The client instances a map added (watchers now, not in `before`), once the map has returned (every mapper has
   * opened the image by then: rbd-fuse at the image file's first stat); recorded for the controller. Several new
   * ones (a multi-node volume mapped elsewhere at the same instant) cannot be told apart: none is recorded, so
   * fencing never stops another node's client.
   */
  async learn(spec: ImageSpec, keyringFile: string, before: string[], signal?: AbortSignal): Promise<string[]> {
    let added: string[] = [];
    // the mapper's client registers its watch as it opens the image: seen at once, or within 2 s
    for (let i = 0; i < 80 && !added.length; i++) {
      if (i) await sleep(25, undefined, { signal });
      added = (await this.watchers(spec, keyringFile, signal)).filter((w) => !before.includes(w));
    }
    if (added.length !== 1) return [];
    await this.set(spec, keyringFile, mapperKey(spec.image), { clients: added }, signal);
    return added;
  }

  /** The image is no longer mapped here: its record goes (a missing one is fine). */
  async forget(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<void> {
    await this.omap('omap-remove', spec, keyringFile, { key: mapperKey(spec.image) }, signal);
  }

  /** The controller's fence of this node for the image, if there is one (a failure to read it is no answer). */
  async fence(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<FenceRecord | undefined> {
    const { value } = await this.omap('omap-get', spec, keyringFile, { key: fenceKey(spec.image) }, signal).catch(
      (e: Error) => {
        throw unknowable(e, `cannot read the fencing record of ${imageSpecString(spec)}`);
      },
    );
    return typeof value === 'string' ? parseRecord(fenceRecordSchema, value) : undefined;
  }

  /**
   * The keys of this node's fencing object in the image's pool (none when it has no object): one read that tells, for
   * every stage in the pool, whether a fence record exists to be read at all.
   */
  async keys(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<Set<string>> {
    const { keys } = await this.omap('omap-keys', spec, keyringFile, {}, signal).catch((e: Error) => {
      throw unknowable(e, `cannot list the fencing records of pool ${spec.pool}`);
    });
    return new Set(Array.isArray(keys) ? keys.filter((k): k is string => typeof k === 'string') : []);
  }

  /** Say the fenced stage is gone without a write: the controller may lift the fence. */
  async release(spec: ImageSpec, keyringFile: string, fence: FenceRecord, signal?: AbortSignal): Promise<void> {
    await this.set(spec, keyringFile, fenceKey(spec.image), { ...fence, state: 'released' }, signal);
  }
}

/** A fencing record that cannot be read is not known to be absent: the caller retries (a refused key stays so). */
function unknowable(e: Error, what: string): Error {
  if (e instanceof NodeError && (e.kind === 'permission-denied' || e.kind === 'aborted')) return e;
  return new NodeError('unavailable', `${what}: ${e.message}`);
}
