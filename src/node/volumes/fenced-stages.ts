import type { FenceRecord } from '../../fencing-records.js';
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
export class FencedStages {
  constructor(
    private readonly ctx: NodeContext,
    private readonly staging: Staging,
    private readonly publishing: Publishing,
  ) {}

  /** The fence covering the record's client, if the controller has one and the node has not released it. */
  private async fenceOf(record: StageRecord, signal?: AbortSignal): Promise<FenceRecord | undefined> {
    if (!record.clients.length || !this.ctx.cephKeyring) return undefined;
    const fence = await this.ctx.clients.fence(record.image, this.ctx.cephKeyring, signal);
    return fence && fence.state !== 'released' && fence.clients.some((c) => record.clients.includes(c))
      ? fence
      : undefined;
  }

  /** When the volume's stage here is fenced: take it down (see above) and return true. */
  async dropIfFenced(volumeId: string, signal?: AbortSignal): Promise<boolean> {
    const record = await this.ctx.records.read(volumeId);
    const fence = record && (await this.fenceOf(record, signal));
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

  /** At start: every fenced stage goes; a stage that cannot be checked now is left for its next RPC. */
  async dropAll(): Promise<string[]> {
    const dropped: string[] = [];
    for (const r of (await this.ctx.records.list()).records) {
      try {
        if (await this.dropIfFenced(r.volumeId)) dropped.push(r.volumeId);
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
