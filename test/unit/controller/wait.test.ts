import { OpenStackError } from '../../../src/openstack/errors.js';
import { DurationEstimate, pollUntil } from '../../../src/openstack/wait.js';

test('the estimate is a low quantile of recent durations: one slow outlier does not move it', () => {
  const e = new DurationEstimate();
  for (const ms of [300, 320, 310, 5000, 305, 315, 330, 298]) e.record(ms);
  expect(e.ms).toBeGreaterThanOrEqual(298);
  expect(e.ms).toBeLessThanOrEqual(310);
});

test('polls until settled and learns how long it took', async () => {
  const estimate = new DurationEstimate();
  let n = 0;
  const started = Date.now();
  const v = await pollUntil(
    async () => ++n,
    (x) => x >= 4,
    { what: 'x', estimate },
  );
  expect(v).toBe(4);
  const elapsed = Date.now() - started;
  expect(estimate.ms).toBeGreaterThan(0);
  expect(estimate.ms).toBeLessThanOrEqual(elapsed);
});

test('with an estimate, the first look waits most of it (few probes for a slow operation)', async () => {
  const estimate = new DurationEstimate();
  estimate.record(300);
  const started = Date.now();
  let probes = 0;
  await pollUntil(
    async () => (probes++, Date.now() - started),
    (t) => t >= 300,
    { what: 'x', estimate },
  );
  expect(probes).toBeLessThanOrEqual(6);
});

test('rides out transient failures, but not others', async () => {
  let n = 0;
  const v = await pollUntil(
    async () => {
      if (++n < 3) throw new OpenStackError('unavailable', 'Cinder is unreachable');
      return n;
    },
    () => true,
    { what: 'x' },
  );
  expect(v).toBe(3);
  await expect(
    pollUntil(
      async () => {
        throw new OpenStackError('not-found', 'gone');
      },
      () => true,
      { what: 'x' },
    ),
  ).rejects.toThrow('gone');
});

test('the signal ends the wait with a timeout, or with the last transient failure', async () => {
  await expect(
    pollUntil(
      async () => 1,
      () => false,
      { what: 'volume v', signal: AbortSignal.timeout(100) },
    ),
  ).rejects.toMatchObject({ kind: 'timeout', message: expect.stringMatching(/volume v/) });
  await expect(
    pollUntil(
      async () => {
        throw new OpenStackError('unavailable', 'Cinder down');
      },
      () => true,
      { what: 'x', signal: AbortSignal.timeout(100) },
    ),
  ).rejects.toMatchObject({ kind: 'unavailable' });
});
