import { waitFor } from './shared-flight.js';

/**
 * Work that must not overlap for one key runs one piece after another, in the order it came (a
 * project's shared volume group; one RBD image's stage). A caller whose signal fires while it waits
 * gives up without running; those behind it still wait for those before it.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    this.tails.set(key, tail);
    try {
      await waitFor(before, signal);
      return await fn();
    } finally {
      release();
      void tail.then(() => {
        if (this.tails.get(key) === tail) this.tails.delete(key);
      });
    }
  }

  /** Keys with work running or waiting. */
  get size(): number {
    return this.tails.size;
  }
}
