/**
 * A map that keeps at most `max` entries, dropping the least recently used: every cache keyed by
 * something a request can vary (a tenant's credential, its TLS trust) is one, so no stream of distinct
 * requests can grow the process.
 */
export class Lru<K, V> {
  private readonly items = new Map<K, V>();

  constructor(readonly max: number) {}

  get(key: K): V | undefined {
    const v = this.items.get(key);
    if (v !== undefined) {
      this.items.delete(key); // most recently used last
      this.items.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): V | undefined {
    this.items.delete(key);
    let dropped: V | undefined;
    if (this.items.size >= this.max) {
      const oldest = this.items.keys().next().value as K;
      dropped = this.items.get(oldest);
      this.items.delete(oldest);
    }
    this.items.set(key, value);
    return dropped;
  }

  delete(key: K): void {
    this.items.delete(key);
  }

  values(): IterableIterator<V> {
    return this.items.values();
  }

  clear(): void {
    this.items.clear();
  }

  get size(): number {
    return this.items.size;
  }
}
