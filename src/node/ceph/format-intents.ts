import { z } from 'zod';
import { parseRecord } from '../../fencing-records.js';
import type { ImageSpec } from '../mappers/mapper.js';
import type { CephSession } from './session.js';

/** The object in each pool that holds the format intents of its images (omap key: the image's name). */
export const FORMAT_INTENTS_OBJECT = 'stackube-csi.format-intents';

const intentSchema = z.object({ fsType: z.string().max(20), node: z.string().max(253), at: z.string().max(64) });
export type FormatIntent = z.infer<typeof intentSchema>;

/**
 * The write-ahead intent of a format, kept in the cluster where every node that maps the image reads it:
 * written before mkfs touches a blank device and removed once mkfs has finished. While it stands, what the
 * device holds (nothing, some blocks, even a superblock) is that unfinished mkfs, never a tenant's data: the
 * next stage, on this node or another, finishes the format instead of refusing the volume for ever as "holds
 * data" or mounting half a filesystem. One omap object per pool rather than the image's own metadata: an omap
 * write costs ~3 ms on the Ceph session, where `rbd image-meta` opens the image (~11 ms) and hands the write
 * to the exclusive-lock owner.
 */
export class FormatIntents {
  constructor(private readonly o: { session: CephSession; nodeId: string }) {}

  private async call(
    op: 'omap-get' | 'omap-set' | 'omap-remove',
    spec: ImageSpec,
    keyringFile: string,
    fields: Record<string, string>,
    signal?: AbortSignal,
  ) {
    const all = { object: FORMAT_INTENTS_OBJECT, key: spec.image, ...fields };
    return this.o.session.ask(op, { spec, keyringFile }, all, `the format intent (${op})`, signal);
  }

  /**
   * The unfinished format of the image, if one was begun (on any node). A value that is no intent of ours reads as
   * none: the device is then judged by what it holds, and bytes without a filesystem are refused, never formatted.
   */
  async get(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<FormatIntent | undefined> {
    const { value } = await this.call('omap-get', spec, keyringFile, {}, signal);
    return typeof value === 'string' ? parseRecord(intentSchema, value) : undefined;
  }

  async begin(spec: ImageSpec, keyringFile: string, fsType: string, signal?: AbortSignal): Promise<void> {
    const intent: FormatIntent = { fsType, node: this.o.nodeId, at: new Date().toISOString() };
    await this.call('omap-set', spec, keyringFile, { value: JSON.stringify(intent) }, signal);
  }

  /** The format is done (a missing intent is fine). */
  async end(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<void> {
    await this.call('omap-remove', spec, keyringFile, {}, signal);
  }
}
