import { spawn } from 'node:child_process';
import { TestVolumes } from '../../../harness/cinder-volumes.js';
import { nodeDirs, nodeOps } from '../../../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../../harness/node-leaks.js';
import { memoryCgroup, type MemoryCgroup } from '../../helpers/cgroup.js';
import { startPluginProcess, type PluginProcess } from '../../helpers/plugin-process.js';

/**
 * NodeGetInfo's max_volumes_per_node is measured at every call (kubelet asks every
 * nodeAllocatableUpdatePeriodSeconds): the mappings held plus what the memory still free in the
 * mappers' cgroup fits. The plugin runs in a memory cgroup of its own (as the node pod's mapper
 * container is one), limited to 2 GiB, so its rbd-fuse daemons and the ballast are all that is counted,
 * whatever else this machine runs meanwhile.
 */
const dirs = nodeDirs('node-limit');
const co = new CoPaths(dirs.kubeletRoot);
let volumes: TestVolumes;
let cgroup: MemoryCgroup;
let plugin: PluginProcess;

beforeAll(async () => {
  volumes = TestVolumes.open('node-limit');
  cgroup = memoryCgroup(`stackube-limit-${process.pid}`, 2048);
  plugin = await startPluginProcess(dirs, '', { cgroupProcs: cgroup.procs });
});
afterAll(async () => {
  await plugin?.stop();
  forceCleanup(dirs.base);
  cgroup?.remove();
  await volumes?.cleanup();
});

const info = async () => Number((await plugin.csi.Node.NodeGetInfo({})).max_volumes_per_node);

test('mapping volumes keeps the sum (held + room) about the same; memory taken by something else lowers it', async () => {
  const ops = nodeOps(plugin.csi);
  const before = await info();
  expect(before).toBeGreaterThan(30);
  expect(before).toBeLessThan(128);
  const vs = await Promise.all([0, 1].map(() => volumes.createAttached('node-test')));
  const staged = vs.map((v, i) => ({ v, staging: co.staging(`pv-limit-${i}`) }));
  for (const s of staged) await ops.stage(s.v, s.staging, cap.block());
  const mapped = await info();
  // two rbd-fuse daemons (~38 MiB each) took about the room of two: the node holds about as many as before
  expect(Math.abs(mapped - before)).toBeLessThanOrEqual(2);

  // 600 MiB touched by another process in the cgroup: room for ~15 fewer
  const ballast = spawn(
    '/bin/sh',
    ['-c', 'echo $$ > "$0" && exec "$@"', cgroup.procs, process.execPath, '-e', BALLAST],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  await new Promise((resolve) => ballast.stdout.once('data', resolve)); // it says so once it holds the memory
  try {
    expect(await info()).toBeLessThanOrEqual(mapped - 10);
  } finally {
    ballast.kill('SIGKILL');
  }
  for (const s of staged) await ops.unstage(s.v, s.staging);
  expect([...co.release(), ...nodeLeaks(dirs)]).toEqual([]);
}, 120_000);

const BALLAST = `const b = Buffer.alloc(600 * 1024 * 1024, 1); process.stdout.write('held ' + b.length + '\\n'); setInterval(() => b[0]++, 60000);`;
