import { KeyedQueue } from '../../src/keyed-queue.js';

const later = () => {
  let resolve!: () => void;
  const p = new Promise<void>((r) => (resolve = r));
  return { p, resolve };
};

test('work of one key runs one at a time, in order; other keys do not wait', async () => {
  const q = new KeyedQueue();
  const log: string[] = [];
  const first = later();
  const a = q.run('k', async () => {
    log.push('a start');
    await first.p;
    log.push('a end');
  });
  const b = q.run('k', async () => void log.push('b'));
  await q.run('other', async () => void log.push('other'));
  expect(log).toEqual(['a start', 'other']);
  first.resolve();
  await Promise.all([a, b]);
  expect(log).toEqual(['a start', 'other', 'a end', 'b']);
  await new Promise((r) => setImmediate(r));
  expect(q.size).toBe(0);
});

test('a caller that gives up waiting never runs, and those behind it still wait for the one running', async () => {
  const q = new KeyedQueue();
  const log: string[] = [];
  const first = later();
  const a = q.run('k', async () => {
    await first.p;
    log.push('a');
  });
  const quit = new AbortController();
  const b = q.run('k', async () => void log.push('b'), quit.signal);
  quit.abort(new Error('deadline'));
  await expect(b).rejects.toThrow('deadline');
  const c = q.run('k', async () => void log.push('c'));
  await new Promise((r) => setImmediate(r));
  expect(log).toEqual([]); // c waits for a, not only for b which left
  first.resolve();
  await Promise.all([a, c]);
  expect(log).toEqual(['a', 'c']);
});

test('a failure releases the key', async () => {
  const q = new KeyedQueue();
  await expect(q.run('k', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  await expect(q.run('k', async () => 'next')).resolves.toBe('next');
});
