import {
  CLIENT_ADDRESS,
  type FenceRecord,
  fenceKey,
  fenceRecordSchema,
  fencingObject,
  mapperKey,
  mapperRecordSchema,
  NODE_MARK_KEY,
  type NodeMark,
  nodeMarkSchema,
  parseRecord,
} from '../fencing-records.js';
import { CephError, type CephIdentity, checkName, identityArgs, runCephTool } from './cli.js';
import { CINDER_RBD_NAME, NODE_NAME, POOL_NAME } from './names.js';

export interface FencedImage {
  pool: string;
  image: string;
}

/**
 * Fencing as the operator's fencing identity (deploy/local's client.stackube-fencing): `ceph osd
 * blocklist` on the monitors, lock breaking on image headers, and the fencing records (src/fencing-records.ts)
 * — nothing else. Every name and address that reaches an argument is checked here.
 */
export class CephFencer {
  private readonly base: string[];

  constructor(
    readonly identity: CephIdentity,
    /** How long a blocklist entry lasts unless unfenced first. */
    private readonly expirySeconds: number,
    private readonly onCommand: (tool: string, args: string[]) => void = () => {},
    private readonly timeoutMs = 60_000,
  ) {
    for (const p of identity.pools) checkName('pool', p, POOL_NAME);
    this.base = identityArgs(identity);
  }

  /** The pool the operator's node marks live in: the first configured. */
  get homePool(): string {
    return this.identity.pools[0]!;
  }

  private run(tool: 'rbd' | 'rados' | 'ceph', args: string[], signal?: AbortSignal): Promise<string> {
    this.onCommand(tool, args);
    return runCephTool(tool, this.base, args, { timeoutMs: this.timeoutMs, signal });
  }

  /** `rados -p POOL VERB OBJECT …` on the node's fencing object. */
  private omap(pool: string, node: string, verb: string, ...rest: string[]): string[] {
    return ['-p', checkName('pool', pool, POOL_NAME), verb, fencingObject(checkName('node', node, NODE_NAME)), ...rest];
  }

  /** One omap value, or undefined when the key (or the whole object) is not there. */
  private async get(pool: string, node: string, key: string, signal?: AbortSignal): Promise<string | undefined> {
    try {
      return await this.run('rados', this.omap(pool, node, 'getomapval', key, '-'), signal);
    } catch (e) {
      // rados says "No such key" (exit 1) for a missing key and ENOENT for a missing object
      if (e instanceof CephError && (e.kind === 'not-found' || /No such key/.test(e.message))) return undefined;
      throw e;
    }
  }

  private async set(pool: string, node: string, key: string, value: object, signal?: AbortSignal): Promise<void> {
    await this.run('rados', this.omap(pool, node, 'setomapval', key, JSON.stringify(value)), signal);
  }

  private async remove(pool: string, node: string, key: string, signal?: AbortSignal): Promise<void> {
    await this.run('rados', this.omap(pool, node, 'rmomapkey', key), signal).catch((e: unknown) => {
      if (!(e instanceof CephError && e.kind === 'not-found')) throw e;
    });
  }

  /** The images a node has records of (with `prefix`: mapper/ or fence/) in one pool. */
  private async keys(pool: string, node: string, prefix: string, signal?: AbortSignal): Promise<string[]> {
    let out: string;
    try {
      out = await this.run('rados', this.omap(pool, node, 'listomapkeys'), signal);
    } catch (e) {
      if (e instanceof CephError && e.kind === 'not-found') return [];
      throw e;
    }
    return out
      .split('\n')
      .filter((k) => k.startsWith(prefix))
      .map((k) => k.slice(prefix.length))
      .filter((image) => CINDER_RBD_NAME.test(image));
  }

  async nodeMark(node: string, signal?: AbortSignal): Promise<NodeMark | undefined> {
    return parseRecord(nodeMarkSchema, await this.get(this.homePool, node, NODE_MARK_KEY, signal));
  }

  async markNode(node: string, reason: string, signal?: AbortSignal): Promise<void> {
    await this.set(this.homePool, node, NODE_MARK_KEY, { reason, at: new Date().toISOString() }, signal);
  }

  async unmarkNode(node: string, signal?: AbortSignal): Promise<void> {
    await this.remove(this.homePool, node, NODE_MARK_KEY, signal);
  }

  /** The clients the node's mapper registered for the image (none recorded: an empty list). */
  async mapperClients(ref: FencedImage, node: string, signal?: AbortSignal): Promise<string[]> {
    const text = await this.get(ref.pool, node, mapperKey(checkName('image', ref.image, CINDER_RBD_NAME)), signal);
    return parseRecord(mapperRecordSchema, text)?.clients ?? [];
  }

  /** Images the node's mappers hold (by their records) in every configured pool. */
  async mappedImages(node: string, signal?: AbortSignal): Promise<FencedImage[]> {
    const out: FencedImage[] = [];
    for (const pool of this.identity.pools)
      for (const image of await this.keys(pool, node, 'mapper/', signal)) out.push({ pool, image });
    return out;
  }

  /** Images with a fence record of the node, in every configured pool. */
  async fencedImages(node: string, signal?: AbortSignal): Promise<FencedImage[]> {
    const out: FencedImage[] = [];
    for (const pool of this.identity.pools)
      for (const image of await this.keys(pool, node, 'fence/', signal)) out.push({ pool, image });
    return out;
  }

  async fence(ref: FencedImage, node: string, signal?: AbortSignal): Promise<FenceRecord | undefined> {
    const text = await this.get(ref.pool, node, fenceKey(checkName('image', ref.image, CINDER_RBD_NAME)), signal);
    return parseRecord(fenceRecordSchema, text);
  }

  async writeFence(ref: FencedImage, node: string, record: FenceRecord, signal?: AbortSignal): Promise<void> {
    await this.set(ref.pool, node, fenceKey(checkName('image', ref.image, CINDER_RBD_NAME)), record, signal);
  }

  async removeFence(ref: FencedImage, node: string, signal?: AbortSignal): Promise<void> {
    await this.remove(ref.pool, node, fenceKey(checkName('image', ref.image, CINDER_RBD_NAME)), signal);
  }

  /** Blocklist one client instance (again: the expiry starts anew). */
  async blocklist(client: string, signal?: AbortSignal): Promise<void> {
    await this.run(
      'ceph',
      ['osd', 'blocklist', 'add', checkName('client', client, CLIENT_ADDRESS), String(this.expirySeconds)],
      signal,
    );
  }

  /** Take one client off the blocklist; one that is not on it is fine. */
  async unblocklist(client: string, signal?: AbortSignal): Promise<void> {
    await this.run('ceph', ['osd', 'blocklist', 'rm', checkName('client', client, CLIENT_ADDRESS)], signal);
  }

  /** Break the image's locks held by any of `clients`; returns how many it broke. */
  async breakLocks(ref: FencedImage, clients: string[], signal?: AbortSignal): Promise<number> {
    const spec = `${checkName('pool', ref.pool, POOL_NAME)}/${checkName('image', ref.image, CINDER_RBD_NAME)}`;
    let lockers: { id?: unknown; locker?: unknown; address?: unknown }[];
    try {
      lockers = JSON.parse(await this.run('rbd', ['lock', 'ls', '--format', 'json', spec], signal)) as typeof lockers;
    } catch (e) {
      if (e instanceof SyntaxError) throw new CephError('unexpected', `rbd lock ls ${spec} printed no JSON`);
      if (e instanceof CephError && e.kind === 'not-found') return 0; // the image is gone: nothing to hold
      throw e;
    }
    let broken = 0;
    for (const l of Array.isArray(lockers) ? lockers : []) {
      if (typeof l.address !== 'string' || !clients.includes(l.address)) continue;
      if (typeof l.id !== 'string' || typeof l.locker !== 'string' || !/^client\.\d{1,20}$/.test(l.locker)) continue;
      if (!/^[\w .:-]{1,128}$/.test(l.id)) continue;
      await this.run('rbd', ['lock', 'rm', spec, l.id, l.locker], signal).catch((e: unknown) => {
        if (!(e instanceof CephError && e.kind === 'not-found')) throw e; // broken meanwhile
      });
      broken++;
    }
    return broken;
  }
}
