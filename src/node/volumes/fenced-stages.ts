import { type FenceRecord, fenceKey } from '../../fencing-records.js';
import type { NodeContext } from './context.js';
import type { Publishing } from './publishing.js';
import type { StageRecord } from './stage-records.js';
import type { Staging } from './staging.js';

/**
 * Stages whose Ceph client the controller has fenced (the node was taken for lost and the volume went
 * to another): torn down without a write — the mapper's daemon is killed first, so nothing it or the
 * page cache holds reaches anything, and every later step meets I/O errors instead of a hang — and then
 * released, so the controller may lift the fence. Checked at start and by the RPCs that touch a stage
 * (kubelet's periodic NodeGetVolumeStats among them). Needs --ceph-keyring: without a key outside
 * NodeStage the node cannot ask.
 */
/** Runs `fn` as the one operation on the volume (what its RPCs hold while the plugin serves). */
export type VolumeExclusive = <T>(volumeId: string, fn: () => Promise<T>) => Promise<T>;

export class FencedStages {
  /** The fencing object's keys per pool, as last listed: checks that may be a little late share one read. */
  private readonly listings = new Map<string, { at: number; keys: Promise<Set<string>> }>();

  constructor(
    private readonly ctx: NodeContext,
    private readonly staging: Staging,
    private readonly publishing: Publishing,
  ) {}

  /** Whether the pool's fencing object has a fence key for the image, from a listing at most `maxAgeMs` old. */
  private async mayBeFenced(record: StageRecord, maxAgeMs: number): Promise<boolean> {
    const pool = `${record.image.pool} ${record.image.monitors.join(',')}`;
    let listing = this.listings.get(pool);
    if (!listing || Date.now() - listing.at > maxAgeMs) {
      listing = { at: Date.now(), keys: this.ctx.clients.keys(record.image, this.ctx.cephKeyring!) };
      this.listings.set(pool, listing);
      listing.keys.catch(() => this.listings.delete(pool)); // a failed read is not kept
    }
    return (await listing.keys).has(fenceKey(record.image.image));
  }

  /**
   * The fence covering the record's client, if the controller has one and the node has not released it. With
   * `listedWithinMs`, a stage whose pool listing (that old at most) has no fence key for it is taken as not fenced
   * without reading more: kubelet's periodic stats of hundreds of volumes cost one read per pool, not one per volume.
   */
  private async fenceOf(
    record: StageRecord,
    signal?: AbortSignal,
    listedWithinMs?: number,
  ): Promise<FenceRecord | undefined> {
    if (!record.clients.length || !this.ctx.cephKeyring) return undefined;
    if (listedWithinMs !== undefined && !(await this.mayBeFenced(record, listedWithinMs))) return undefined;
    const fence = await this.ctx.clients.fence(record.image, this.ctx.cephKeyring, signal);
    return fence && fence.state !== 'released' && fence.clients.some((c) => record.clients.includes(c))
      ? fence
      : undefined;
  }

  /** When the volume's stage here is fenced: take it down (see above) and return true. */
  async dropIfFenced(volumeId: string, signal?: AbortSignal, listedWithinMs?: number): Promise<boolean> {
    const record = await this.ctx.records.read(volumeId);
    const fence = record && (await this.fenceOf(record, signal, listedWithinMs));
    if (!record || !fence) return false;
    const { log } = this.ctx;
    log.warn(
      { volumeId, image: `${record.image.pool}/${record.image.image}`, clients: record.clients, reason: fence.reason },
      'this node was fenced for the volume (it went to another node): tearing the stage down without writing',
    );
    if (record.mapping) await this.ctx.mapperFor(record).kill(record.mapping);
    for (const target of Object.keys(record.targets)) await this.publishing.unpublish(volumeId, target, signal);
    await this.staging.unstage(volumeId, record.stagingPath, signal);
    await this.ctx.clients.release(record.image, this.ctx.cephKeyring!, fence, signal);
    return true;
  }

  /** kubelet's periodic check (NodeGetVolumeStats): a fence may be seen up to this late. */
  static readonly PERIODIC_LISTING_MS = 20_000;

  /**
   * After start: every fenced stage goes, found with one listing per pool; a stage that cannot be checked now is left
   * for its next RPC.
   */
  async dropAll(exclusive: VolumeExclusive = (_id, fn) => fn()): Promise<string[]> {
    const dropped: string[] = [];
    const started = Date.now();
    for (const r of (await this.ctx.records.list()).records) {
      try {
        // the look needs no lock, so kubelet's calls after a restart never meet one; a stage found fenced is torn
        // down as the one operation on its volume (a call meanwhile is ABORTED and retried)
        if (!(await this.fenceOf(r, undefined, Date.now() - started))) continue;
        if (await exclusive(r.volumeId, () => this.dropIfFenced(r.volumeId))) dropped.push(r.volumeId);
      } catch (e) {
        this.ctx.log.warn(
          { volumeId: r.volumeId, error: (e as Error).message },
          'could not check the stage for a fence',
        );
      }
    }
    return dropped;
  }
}
