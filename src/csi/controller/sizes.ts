import { invalidArgument, outOfRange } from '../../server/errors.js';
import type { CapacityRange__Output } from '../generated/csi/v1/CapacityRange.js';

/** Cinder sizes volumes in whole GiB. */
export const GiB = 1024 ** 3;

const gib = (bytes: number) => `${bytes} bytes (${(bytes / GiB).toFixed(2)} GiB)`;

function checkRange(range: CapacityRange__Output | null | undefined): { required: number; limit: number } {
  const required = range?.required_bytes ?? 0;
  const limit = range?.limit_bytes ?? 0;
  if (required < 0 || limit < 0)
    throw invalidArgument('capacity_range: required_bytes and limit_bytes must not be negative');
  if (limit && required > limit)
    throw outOfRange(`capacity_range: required_bytes ${gib(required)} exceeds limit_bytes ${gib(limit)}`);
  return { required, limit };
}

/**
 * The size in GiB to ask Cinder for: required_bytes rounded up, at least `minGiB` (1, or the source's
 * size), and never above limit_bytes — a range that holds no whole GiB ≥ the minimum is OUT_OF_RANGE.
 */
export function sizeInGiB(
  range: CapacityRange__Output | null | undefined,
  minGiB: number,
  what = 'the volume',
): number {
  const { required, limit } = checkRange(range);
  const size = Math.max(minGiB, Math.ceil(required / GiB));
  if (limit && size * GiB > limit)
    throw outOfRange(
      `capacity_range: limit_bytes ${gib(limit)} is below ${size} GiB, the smallest size Cinder can make for ${what} (whole GiB${minGiB > 1 ? `, at least the source's ${minGiB} GiB` : ''})`,
    );
  return size;
}

/** Does an existing volume of `sizeGiB` satisfy the range (CreateVolume idempotency)? */
export function rangeHolds(range: CapacityRange__Output | null | undefined, sizeGiB: number): boolean {
  const { required, limit } = checkRange(range);
  const bytes = sizeGiB * GiB;
  return bytes >= required && (!limit || bytes <= limit);
}
