/**
 * One piece of work shared by the callers that want it at the same time (a token, a microversion, a
 * RuntimeClass, a readiness check), each waiting under its own cancellation: the work runs under its own
 * time limit, never under the first caller's signal, so one caller's deadline does not fail the others.
 * A result is kept for `keepMs` (0: only while in flight); a failure is never kept.
 */
export class SharedFlights<K, V> {
  private readonly flights = new Map<K, { done?: number; value: Promise<V> }>();

  constructor(private readonly o: { timeoutMs: number; keepMs?: number }) {}

  get(key: K, work: (signal: AbortSignal) => Promise<V>, signal?: AbortSignal): Promise<V> {
    const keepMs = this.o.keepMs ?? 0;
    let f = this.flights.get(key);
    if (f && f.done !== undefined && Date.now() - f.done > keepMs) f = undefined;
    if (!f) {
      const flight: { done?: number; value: Promise<V> } = { value: work(AbortSignal.timeout(this.o.timeoutMs)) };
      flight.value.then(
        () => {
          flight.done = Date.now();
          if (!keepMs && this.flights.get(key) === flight) this.flights.delete(key);
        },
        () => {
          if (this.flights.get(key) === flight) this.flights.delete(key);
        },
      );
      this.flights.set(key, (f = flight));
    }
    return waitFor(f.value, signal);
  }

  /** Forget a kept result (it turned out stale). */
  delete(key: K): void {
    this.flights.delete(key);
  }
}

/** `p`, or the signal's reason once the caller stops waiting; `p` itself runs on either way. */
export function waitFor<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(reasonOf(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(reasonOf(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

const reasonOf = (s: AbortSignal) => (s.reason instanceof Error ? s.reason : new Error('cancelled'));
