import { OperationLocks } from '../../../src/server/locks.js';

test('keys are released after success and after failure', async () => {
  const locks = new OperationLocks();
  await locks.with(['a', 'b'], 'Op', async () => expect(locks.size).toBe(2));
  expect(locks.size).toBe(0);
  await expect(locks.with(['a'], 'Op', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  expect(locks.size).toBe(0);
});

test('any held key aborts the whole operation without taking the others', async () => {
  const locks = new OperationLocks();
  let release!: () => void;
  const held = locks.with(['vol:1'], 'NodeStageVolume', () => new Promise<void>((r) => (release = r)));
  await expect(locks.with(['vol:2', 'vol:1'], 'NodePublishVolume', async () => 'ran')).rejects.toMatchObject({
    code: 10,
    message: expect.stringContaining('NodeStageVolume on vol:1'),
  });
  expect(locks.size).toBe(1);
  release();
  await held;
  await expect(locks.with(['vol:2', 'vol:1'], 'NodePublishVolume', async () => 'ran')).resolves.toBe('ran');
});
