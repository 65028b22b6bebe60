import { setTimeout as sleep } from 'node:timers/promises';
import { SharedFlights, waitFor } from '../../src/shared-flight.js';

test("one run for concurrent callers; the first caller's deadline fails only that caller", async () => {
  let runs = 0;
  const flights = new SharedFlights<string, number>({ timeoutMs: 5000 });
  const work = async (signal: AbortSignal) => {
    runs++;
    await sleep(100, undefined, { signal });
    return 42;
  };
  const impatient = new AbortController();
  const first = flights.get('k', work, impatient.signal);
  const second = flights.get('k', work);
  const third = flights.get('k', work, AbortSignal.timeout(5000));
  impatient.abort(new Error('deadline exceeded'));
  await expect(first).rejects.toThrow('deadline exceeded');
  await expect(second).resolves.toBe(42);
  await expect(third).resolves.toBe(42);
  expect(runs).toBe(1);
  await flights.get('k', work); // keepMs 0: a new run once the last one is done
  expect(runs).toBe(2);
});

test('a result is kept for keepMs; a failure never is', async () => {
  let runs = 0;
  const flights = new SharedFlights<string, number>({ timeoutMs: 5000, keepMs: 60_000 });
  await flights.get('k', async () => ++runs);
  await flights.get('k', async () => ++runs);
  expect(runs).toBe(1);
  const failing = new SharedFlights<string, number>({ timeoutMs: 5000, keepMs: 60_000 });
  await expect(failing.get('k', async () => Promise.reject(new Error('no')))).rejects.toThrow('no');
  await expect(failing.get('k', async () => 7)).resolves.toBe(7);
});

test('the work runs under its own limit, not forever', async () => {
  const flights = new SharedFlights<string, number>({ timeoutMs: 50 });
  await expect(flights.get('k', (signal) => sleep(10_000, 1, { signal }))).rejects.toThrow();
});

test('waitFor: an already aborted signal rejects at once', async () => {
  const c = new AbortController();
  c.abort(new Error('gone'));
  await expect(waitFor(sleep(10, 1), c.signal)).rejects.toThrow('gone');
});
