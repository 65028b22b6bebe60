import { aborted } from './errors.js';

/**
 * Per-volume operation locks. The CSI spec lets a plugin answer ABORTED to a second operation on a
 * volume that already has one in flight (the CO lost track after a restart and re-sent it); doing so
 * keeps two RPCs from racing on one Cinder volume or one device.
 */
/** The lock key of one volume (or name) in one CSI service: what RPCs of that service on it hold. */
export const operationKey = (service: string, key: string) => `${service}/${key}`;

export class OperationLocks {
  private readonly held = new Map<string, string>();

  /** Run `fn` holding every key; a key already held → ABORTED naming the operation in the way. */
  async with<T>(keys: string[], operation: string, fn: () => Promise<T>): Promise<T> {
    const unique = [...new Set(keys.filter(Boolean))];
    for (const k of unique) {
      const holder = this.held.get(k);
      if (holder !== undefined)
        throw aborted(`an operation for this volume is in progress (${holder} on ${k}); retry when it finishes`);
    }
    for (const k of unique) this.held.set(k, operation);
    try {
      return await fn();
    } finally {
      for (const k of unique) this.held.delete(k);
    }
  }

  get size(): number {
    return this.held.size;
  }
}
