import { memoryReading, NodeCapacity, volumeLimit, withLimit } from '../../../src/node/host/volume-limit.js';

const files = (m: Record<string, string>) => async (p: string) => {
  if (m[p] === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
  return m[p];
};
const MiB = 1024 ** 2;
const MEMINFO = 'MemTotal:       24576000 kB\nMemFree: 1 kB\nMemAvailable:   20480000 kB\n';

describe('the memory of the mappers’ cgroup', () => {
  test('cgroup v2 in a container (its own cgroup at the mount): limit, working set (inactive files not counted), free', async () => {
    const r = await memoryReading(
      files({
        '/proc/self/cgroup': '0::/\n',
        '/sys/fs/cgroup/memory.max': `${2048 * MiB}\n`,
        '/sys/fs/cgroup/memory.current': `${600 * MiB}\n`,
        '/sys/fs/cgroup/memory.stat': `anon ${400 * MiB}\ninactive_file ${100 * MiB}\n`,
        '/proc/meminfo': MEMINFO,
      }),
    );
    expect(r).toEqual({ limitMiB: 2048, usedMiB: 500, availableMiB: 1548 });
  });

  test('cgroup v1 on a host: this process’s cgroup under the hierarchy, no limit → the host’s memory, free bounded by MemAvailable', async () => {
    const r = await memoryReading(
      files({
        '/proc/self/cgroup': '9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n',
        '/sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes': `${300 * MiB}`,
        '/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes': '9223372036854771712',
        '/sys/fs/cgroup/memory/process_api/abc/memory.stat': `total_inactive_file ${100 * MiB}\n`,
        '/proc/meminfo': MEMINFO,
      }),
    );
    expect(r).toEqual({ limitMiB: 24000, usedMiB: 200, availableMiB: 20000 });
  });

  test('no memory cgroup at all: the host', async () => {
    expect(await memoryReading(files({ '/proc/meminfo': MEMINFO }))).toEqual({
      limitMiB: 24000,
      usedMiB: 4000,
      availableMiB: 20000,
    });
  });

  test('--mapper-memory-limit replaces the limit; what is free follows', () => {
    expect(withLimit({ limitMiB: 24000, usedMiB: 200, availableMiB: 20000 }, 1024)).toEqual({
      limitMiB: 1024,
      usedMiB: 200,
      availableMiB: 824,
    });
    expect(withLimit({ limitMiB: 2048, usedMiB: 200, availableMiB: 1848 }, undefined)).toEqual({
      limitMiB: 2048,
      usedMiB: 200,
      availableMiB: 1848,
    });
  });
});

describe('max_volumes_per_node: what the node holds plus what the free memory fits', () => {
  const mem = (availableMiB: number) => ({ limitMiB: 2048, usedMiB: 2048 - availableMiB, availableMiB });

  test('follows the mapper and the memory, capped by the flag, never below 1', () => {
    expect(volumeLimit('fuse', mem(1988), 0, 128)).toMatchObject({ limit: 50 }); // (1988 - 64) / 38
    expect(volumeLimit('fuse', mem(1988 - 10 * 38), 10, 128)).toMatchObject({ limit: 50 }); // ten mapped: the same node
    expect(volumeLimit('fuse', mem(20000), 0, 128)).toMatchObject({ limit: 128 });
    expect(volumeLimit('nbd', mem(512), 0, 128)).toMatchObject({ limit: 11 });
    expect(volumeLimit('krbd', mem(10), 0, 128)).toMatchObject({ limit: 128 });
    expect(volumeLimit('fuse', mem(30), 0, 128)).toMatchObject({ limit: 1 });
    expect(volumeLimit('fuse', mem(30), 7, 128)).toMatchObject({ limit: 7 }); // full: what it holds
    expect(volumeLimit('fuse', mem(1988), 0, 128).why).toMatch(
      /0 mapped, room for 50 more fuse mappings of ~38 MiB in 1988 MiB free of the 2048 MiB memory limit/,
    );
  });

  test('memory taken by something else lowers it; freed memory raises it again', () => {
    expect(volumeLimit('fuse', mem(1988 - 400), 0, 128).limit).toBe(40); // (1588 - 64) / 38
    expect(volumeLimit('fuse', mem(1988), 0, 128).limit).toBe(50);
  });

  test('measured at each call; a failed reading keeps the last answer, and fails only with none', async () => {
    let available = 1988;
    let broken = false;
    const capacity = new NodeCapacity({
      mapper: 'fuse',
      memory: async () => {
        if (broken) throw new Error('mapper host away');
        return mem(available);
      },
      mapped: async () => 0,
      cap: 128,
    });
    expect((await capacity.current()).limit).toBe(50);
    available = 1000;
    expect((await capacity.current()).limit).toBe(24);
    broken = true;
    expect((await capacity.current()).limit).toBe(24);
    await expect(
      new NodeCapacity({
        mapper: 'fuse',
        memory: async () => Promise.reject(new Error('away')),
        mapped: async () => 0,
        cap: 8,
      }).current(),
    ).rejects.toThrow('away');
  });
});
