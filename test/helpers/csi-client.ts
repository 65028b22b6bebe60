import type { ServiceError } from '@grpc/grpc-js';

export { csiClient, type CsiClient, type CsiService } from '../../src/client/csi-client.js';

/** Expect a gRPC failure with this status code; returns the error for further checks. */
export async function expectCode(p: Promise<unknown>, code: number): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as ServiceError;
    if (err.code !== code)
      throw new Error(`expected gRPC code ${code}, got ${err.code}: ${err.details ?? err.message}`);
    return err;
  }
  throw new Error(`expected gRPC code ${code}, but the call succeeded`);
}

/**
 * Call as a CO does: ABORTED (another operation on the volume is in flight) and UNAVAILABLE are retried
 * with exponential backoff (100 ms doubling, at most 5 s apart) until `withinMs` has passed; anything
 * else is the answer. Tests wait for the state they assert this way, never for a fixed time.
 */
export async function asCo<T>(call: () => Promise<T>, withinMs = 120_000): Promise<T> {
  const until = Date.now() + withinMs;
  for (let wait = 100; ; wait = Math.min(5000, wait * 2)) {
    try {
      return await call();
    } catch (e) {
      const code = (e as ServiceError).code;
      if ((code !== 10 && code !== 14) || Date.now() + wait > until) throw e;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** `probe()` once `done` holds for what it answers, polled 50 ms apart for at most `withinMs`; else the last answer. */
export async function until<T>(probe: () => Promise<T>, done: (value: T) => boolean, withinMs = 30_000): Promise<T> {
  const end = Date.now() + withinMs;
  for (;;) {
    const v = await probe();
    if (done(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}
