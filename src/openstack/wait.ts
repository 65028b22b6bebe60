import { setTimeout as sleep } from 'node:timers/promises';
import { OpenStackError } from './errors.js';

/**
 * How long one kind of operation usually takes, so a wait can sleep through most of it instead of
 * polling through it: the 25th percentile of the last 20 durations — most operations take at least
 * that long, and one slow outlier (a busy Cinder) does not delay the next quick one.
 */
export class DurationEstimate {
  private readonly samples: number[] = [];

  constructor(private readonly keep = 20) {}

  get ms(): number | undefined {
    if (!this.samples.length) return undefined;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 4)];
  }

  record(ms: number): void {
    this.samples.push(ms);
    if (this.samples.length > this.keep) this.samples.shift();
  }
}

export interface PollOptions {
  /** What is awaited, for messages: "volume 1234 to become available". */
  what: string;
  /** Stops the wait: the RPC's deadline or cancellation. */
  signal?: AbortSignal;
  /** Learned duration of this kind of operation; the wait records into it when it ends. */
  estimate?: DurationEstimate;
  /** Poll interval for the first `fastPolls` looks; then it grows by `growth` up to `maxIntervalMs`. */
  firstIntervalMs?: number;
  fastPolls?: number;
  growth?: number;
  maxIntervalMs?: number;
  /** Told of each transient failure ridden out (the caller may want to know Cinder was away). */
  onTransient?: (e: unknown) => void;
}

/** The service was briefly unreachable: polling goes on until the deadline. */
const transient = (e: unknown) => e instanceof OpenStackError && (e.kind === 'unavailable' || e.kind === 'timeout');

/**
 * Poll `probe` until `settled` says so, bounded only by the signal. Adaptive: with an estimate the
 * first look comes at 80 % of the usual duration; then ten looks 20 ms apart (a quick operation is
 * seen within a few ms of finishing, like a client polling every 20 ms), then intervals grow ×1.5 up
 * to 2 s (a slow one costs few calls). Transient failures of a probe (Cinder restarting) are ridden out.
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  settled: (value: T) => boolean,
  o: PollOptions,
): Promise<T> {
  const started = Date.now();
  const first = o.firstIntervalMs ?? 20;
  const fastPolls = o.fastPolls ?? 10;
  const growth = o.growth ?? 1.5;
  const max = o.maxIntervalMs ?? 2000;
  let interval = first;
  let looks = 0;
  let delay = Math.max(first, Math.round((o.estimate?.ms ?? 0) * 0.8));
  let lastFailure: unknown;
  for (;;) {
    try {
      await sleep(delay, undefined, { signal: o.signal });
    } catch {
      if (lastFailure instanceof Error) throw lastFailure;
      throw new OpenStackError(
        'timeout',
        `gave up waiting for ${o.what} after ${((Date.now() - started) / 1000).toFixed(1)} s (the call's deadline passed); it is still in progress`,
      );
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
    if (++looks >= fastPolls) interval = Math.min(max, interval * growth);
    delay = interval;
  }
}

/**
 * `current` once it leaves the `busy` statuses (polled through `find`), or undefined when it is gone:
 * the wait every Cinder object's transition needs (a snapshot being cut, a group being updated, …).
 */
export async function untilSettled<T extends { status: string }>(
  current: T,
  find: () => Promise<T | undefined>,
  busy: readonly string[],
  o: PollOptions,
): Promise<T | undefined> {
  if (!busy.includes(current.status)) return current;
  return pollUntil(find, (x) => !x || !busy.includes(x.status), o);
}
