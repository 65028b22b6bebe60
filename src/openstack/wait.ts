import { setTimeout as sleep } from 'node:timers/promises';
import { OpenStackError } from './errors.js';

/**
 * How long one kind of operation usually takes (an exponentially weighted mean of the last ones),
 * so a wait can sleep through most of it instead of polling through it.
 */
export class DurationEstimate {
  private mean?: number;

  constructor(private readonly weight = 0.3) {}

  get ms(): number | undefined {
    return this.mean;
  }

  record(ms: number): void {
    this.mean = this.mean === undefined ? ms : this.mean + this.weight * (ms - this.mean);
  }
}

export interface PollOptions {
  /** What is awaited, for messages: "volume 1234 to become available". */
  what: string;
  /** Stops the wait: the RPC's deadline or cancellation. */
  signal?: AbortSignal;
  /** Learned duration of this kind of operation; the wait records into it when it ends. */
  estimate?: DurationEstimate;
  /** First poll interval; intervals grow by `growth` up to `maxIntervalMs`. */
  firstIntervalMs?: number;
  growth?: number;
  maxIntervalMs?: number;
  /** Told of each transient failure ridden out (the caller may want to know Cinder was away). */
  onTransient?: (e: unknown) => void;
}

/** The service was briefly unreachable: polling goes on until the deadline. */
const transient = (e: unknown) => e instanceof OpenStackError && (e.kind === 'unavailable' || e.kind === 'timeout');

/**
 * Poll `probe` until `settled` says so, bounded only by the signal. Adaptive: with an estimate
 * the first look comes at ~85 % of the usual duration, then looks start at 20 ms apart and grow
 * ×1.25 (capped at 2 s), so a quick operation is seen within a few ms of finishing and a slow
 * one costs few calls. Transient failures of a probe (Cinder restarting) are ridden out.
 */
export async function pollUntil<T>(probe: () => Promise<T>, settled: (value: T) => boolean, o: PollOptions): Promise<T> {
  const started = Date.now();
  const first = o.firstIntervalMs ?? 20;
  const growth = o.growth ?? 1.25;
  const max = o.maxIntervalMs ?? 2000;
  let interval = first;
  let delay = Math.max(first, Math.round((o.estimate?.ms ?? 0) * 0.85));
  let lastFailure: unknown;
  for (;;) {
    try {
      await sleep(delay, undefined, { signal: o.signal });
    } catch {
      if (lastFailure) throw lastFailure;
      throw new OpenStackError('timeout', `gave up waiting for ${o.what} after ${((Date.now() - started) / 1000).toFixed(1)} s (the call's deadline passed); it is still in progress`);
    }
    try {
      const value = await probe();
      lastFailure = undefined;
      if (settled(value)) {
        o.estimate?.record(Date.now() - started);
        return value;
      }
    } catch (e) {
      if (!transient(e) || o.signal?.aborted) throw e;
      lastFailure = e;
      o.onTransient?.(e);
    }
    delay = interval;
    interval = Math.min(max, interval * growth);
  }
}
