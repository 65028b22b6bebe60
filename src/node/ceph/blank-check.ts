import type { ImageSpec } from '../mappers/mapper.js';
import type { CephSession } from './session.js';

/**
 * How much of each end of an image is read to call it blank: MBR, GPT (and its backup at the end), ext*, xfs,
 * btrfs (64 KiB), LVM, LUKS, swap, ISO 9660 (32 KiB), ZFS labels' headers, md RAID 0.90 and 1.x superblocks
 * (start or last 64 KiB) all lie within it.
 */
export const BLANK_CHECK_BYTES = 128 * 1024;

/**
 * Whether an RBD image is blank: its first and last 128 KiB read as zeros, where partition tables, filesystem,
 * LVM, LUKS and RAID superblocks live. Stricter than a probe (bytes no tool recognises count as data). Read from
 * the cluster on the Ceph session, so the stage starts it while the mapper starts (the bytes are the image's,
 * whichever client reads them) instead of after, through the device: ~15 ms off every first stage. A failure to
 * read is no answer: the stage fails with it, and never formats.
 */
export class BlankCheck {
  constructor(private readonly session: CephSession) {}

  async blank(spec: ImageSpec, keyringFile: string, signal?: AbortSignal): Promise<boolean> {
    const fields = { image: spec.image, bytes: String(BLANK_CHECK_BYTES) };
    const { blank } = await this.session.ask('ends-zero', { spec, keyringFile }, fields, 'the blank check', signal);
    return blank === true;
  }
}
