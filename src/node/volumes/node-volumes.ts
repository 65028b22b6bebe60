import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FencedStages, type VolumeExclusive } from './fenced-stages.js';
import { Inspection } from './inspection.js';
import { NodeContext } from './context.js';
import { Publishing } from './publishing.js';
import { isInterruptedWrite, type StageRecords, volumeKey } from './stage-records.js';
import { Staging } from './staging.js';
import type { AccessType, NodeVolumesOptions, PublishRequest, StageRequest, VolumeStats } from './types.js';

/**
 * The node's volumes: map an RBD image and mount it at the staging path, bind it to pods' target
 * paths, and undo it all — the stage transaction (staging.ts), the publish policy (publishing.ts) and
 * inspection (inspection.ts) over shared state (node-state.ts). Callers hold the volume's lock (one
 * operation per volume at a time).
 */
export class NodeVolumes {
  private readonly ctx: NodeContext;
  private readonly staging: Staging;
  private readonly publishing: Publishing;
  private readonly inspection: Inspection;
  private readonly fenced: FencedStages;
  constructor(o: NodeVolumesOptions) {
    this.ctx = new NodeContext(o);
    this.staging = new Staging(this.ctx);
    this.publishing = new Publishing(this.ctx, this.staging);
    this.inspection = new Inspection(this.ctx);
    this.fenced = new FencedStages(this.ctx, this.staging, this.publishing);
  }

  /**
   * After start: stages the controller fenced (this node was taken for lost) are torn down, each as the one operation
   * on its volume (`exclusive`: against the RPCs served meanwhile); returns their volumes.
   */
  dropFenced(exclusive?: VolumeExclusive): Promise<string[]> {
    return this.fenced.dropAll(exclusive);
  }

  get records(): StageRecords {
    return this.ctx.records;
  }

  /**
   * At start: remove what a crash can leave that no stage record knows — transient keyrings (a kill
   * while a map held one), interrupted atomic writes (a kill before the rename: records, Kata
   * direct-volume files) and mappings made before their record was written. Returns what
   * it removed.
   */
  async sweep(): Promise<string[]> {
    const removed: string[] = [];
    const tmp = join(this.ctx.stateDir, 'tmp');
    for (const f of await readdir(tmp).catch(() => [] as string[])) {
      await rm(join(tmp, f), { force: true });
      removed.push(`transient keyring ${join(tmp, f)}`);
    }
    const dir = this.ctx.records.dir;
    for (const f of (await readdir(dir).catch(() => [] as string[])).filter(isInterruptedWrite)) {
      await rm(join(dir, f), { force: true });
      removed.push(`interrupted write ${join(dir, f)}`);
    }
    removed.push(...(await this.ctx.passthrough.sweep()));
    const { records } = await this.ctx.records.list();
    const known = new Set(records.map((r) => volumeKey(r.volumeId)));
    for (const mapper of Object.values(this.ctx.mappers.byKind))
      if (mapper.sweep) removed.push(...(await mapper.sweep(known)));
    return removed;
  }

  /** The kubelet root as configured and resolved (the same when it is no symlink). */
  get kubeletRoots(): readonly string[] {
    return [...new Set([this.ctx.paths.root, this.ctx.paths.real])];
  }

  async stage(req: StageRequest): Promise<void> {
    await this.fenced.dropIfFenced(req.volumeId, req.signal); // a fenced stage is no stage: a new one is made
    return this.staging.stage(req);
  }

  async unstage(volumeId: string, stagingPath: string, signal?: AbortSignal): Promise<void> {
    if (await this.fenced.dropIfFenced(volumeId, signal)) return;
    return this.staging.unstage(volumeId, stagingPath, signal);
  }

  publish(req: PublishRequest): Promise<void> {
    return this.publishing.publish(req);
  }

  async unpublish(volumeId: string, targetPath: string, signal?: AbortSignal): Promise<void> {
    if (await this.fenced.dropIfFenced(volumeId, signal)) return;
    return this.publishing.unpublish(volumeId, targetPath, signal);
  }

  async stats(volumeId: string, volumePath: string, signal?: AbortSignal): Promise<VolumeStats> {
    // then the path is the volume's no more: NOT_FOUND
    await this.fenced.dropIfFenced(volumeId, signal, FencedStages.PERIODIC_LISTING_MS);
    return this.inspection.stats(volumeId, volumePath, signal);
  }

  expand(
    volumeId: string,
    volumePath: string,
    requiredBytes: number,
    accessType?: AccessType,
    signal?: AbortSignal,
  ): Promise<number> {
    return this.inspection.expand(volumeId, volumePath, requiredBytes, accessType, signal);
  }
}
