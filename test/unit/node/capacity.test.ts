import { memoryLimitMiB, volumeLimit } from '../../../src/node/capacity.js';

const files = (m: Record<string, string>) => async (p: string) => {
  if (m[p] === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
  return m[p];
};
const MEMINFO = 'MemTotal:       24576000 kB\nMemFree: 1 kB\n';

test('the memory limit: cgroup v2, then v1, else the host', async () => {
  expect(await memoryLimitMiB(files({ '/sys/fs/cgroup/memory.max': `${2 * 1024 ** 3}\n`, '/proc/meminfo': MEMINFO }))).toBe(2048);
  expect(await memoryLimitMiB(files({ '/sys/fs/cgroup/memory.max': 'max\n', '/proc/meminfo': MEMINFO }))).toBe(24000);
  expect(await memoryLimitMiB(files({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712', '/proc/meminfo': MEMINFO }))).toBe(24000);
  expect(await memoryLimitMiB(files({ '/sys/fs/cgroup/memory/memory.limit_in_bytes': `${512 * 1024 ** 2}`, '/proc/meminfo': MEMINFO }))).toBe(512);
});

test('the limit follows the mapper and the memory, capped by the flag', () => {
  expect(volumeLimit('fuse', 2048, 128)).toMatchObject({ limit: 49 }); // (2048 - 160) / 38
  expect(volumeLimit('fuse', 24000, 128)).toMatchObject({ limit: 128 });
  expect(volumeLimit('nbd', 512, 128)).toMatchObject({ limit: 9 });
  expect(volumeLimit('krbd', 256, 128)).toMatchObject({ limit: 128 });
  expect(volumeLimit('fuse', 100, 128)).toMatchObject({ limit: 1 });
  expect(volumeLimit('fuse', 2048, 128).why).toMatch(/49 fuse mappings of ~38 MiB fit in the 2048 MiB memory limit/);
});
