import type { RawOptions } from '../../../src/config.js';
import { memoryReading } from '../../../src/node/host/volume-limit.js';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

/**
 * NodeGetInfo's max_volumes_per_node is measured at every call (kubelet asks every
 * nodeAllocatableUpdatePeriodSeconds): the mappings held plus what the memory still free in the
 * mappers' cgroup fits. Here the mappers' cgroup is this test process's (in-process plugin, local
 * rbd-fuse daemons), its limit set with --mapper-memory-limit to ~2 GiB above what it uses now.
 */
const options: RawOptions = {};
const suite = nodeSuite('node-limit', options);
const info = async () => Number((await suite.node.csi.Node.NodeGetInfo({})).max_volumes_per_node);

beforeAll(async () => {
  options.mapperMemoryLimit = String((await memoryReading()).usedMiB + 2000);
  await suite.restart();
});

test('mapping volumes keeps the sum (held + room) about the same; memory taken by something else lowers it', async () => {
  const before = await info();
  expect(before).toBeGreaterThan(30);
  expect(before).toBeLessThan(128);
  const { co } = suite;
  const volumes = await Promise.all([0, 1].map(() => suite.volumes.createAttached('node-test')));
  const staged = volumes.map((v, i) => ({ v, staging: co.staging(`pv-limit-${i}`) }));
  for (const s of staged) await suite.ops.stage(s.v, s.staging, cap.block());
  const mapped = await info();
  // two rbd-fuse daemons (~38 MiB each) took about the room of two: the node holds about as many as before
  expect(Math.abs(mapped - before)).toBeLessThanOrEqual(2);

  // 600 MiB touched by this process (the mappers' cgroup here): room for ~15 fewer
  const ballast = Buffer.alloc(600 * 1024 * 1024, 1);
  const squeezed = await info();
  expect({ squeezed: squeezed <= mapped - 10, ballast: ballast.length }).toEqual({
    squeezed: true,
    ballast: ballast.length,
  });
  for (const s of staged) await suite.ops.unstage(s.v, s.staging);
}, 120_000);
