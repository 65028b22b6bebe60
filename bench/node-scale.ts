/**
 * One node plugin holding many volumes (BENCH_SCALE_VOLUMES, 300 by default; deploy/local holds that many thin ones):
 * the plugin runs as the image runs it (the bundle, its own process, the fuse mapper), and every figure is taken
 * with a few volumes staged (BENCH_SCALE_BASE, 10) and again with all of them, so growth shows:
 *   - NodeGetInfo, NodeGetVolumeStats and NodePublishVolume p50/p99;
 *   - the plugin's own RSS (not its rbd-fuse daemons');
 *   - NodeStageVolume (block) of the first volumes and of the last ones;
 *   - a restart (kill -9) with every stage record on disk: time to the first ready Probe, and NodeGetInfo answered
 *     meanwhile (a start-up sweep must not stall RPCs).
 * Block volumes (no filesystem): what grows with the volume count is the plugin's bookkeeping, not mkfs, and the
 * memstore OSD keeps no filesystems. Prints one JSON line on stdout and a table on stderr.
 */
import { join } from 'node:path';
import { type BundleDriver, probed, rssOf, startBundle } from '../harness/bundle-driver.js';
import { type AttachedVolume, TestVolumes } from '../harness/cinder-volumes.js';
import { nodeDirs, nodeOps } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../harness/node-leaks.js';
import type { CsiClient } from '../src/client/csi-client.js';
import { percentile, report, round } from './report.js';

const VOLUMES = Number(process.env.BENCH_SCALE_VOLUMES ?? 300);
const BASE = Number(process.env.BENCH_SCALE_BASE ?? 10);
const AT_ONCE = 8;
const CALLS = 300;
const NODE = 'bench-scale';
const BLOCK = cap.block();

const ms = (n: number) => round(n, 2);
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

function spread(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: ms(percentile(s, 50)), p99: ms(percentile(s, 99)), n: s.length };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** Run `fn` over `items`, `AT_ONCE` at a time. */
async function inBatches<T>(items: T[], fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: AT_ONCE }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

interface Placed {
  v: AttachedVolume;
  staging: string;
  target: string;
}

async function main(): Promise<void> {
  const dirs = nodeDirs('bench-scale');
  const co = new CoPaths(join(dirs.base, 'kubelet'));
  const volumes = TestVolumes.open('bench-scale');
  let plugin: BundleDriver | undefined;
  const placed: Placed[] = [];
  try {
    const made: AttachedVolume[] = [];
    await inBatches(
      Array.from({ length: VOLUMES }, (_, i) => i),
      async () => void made.push(await volumes.createAttached(NODE)),
    );
    plugin = await startBundle('node', dirs.base, { nodeId: NODE });
    const client = (): CsiClient => plugin!.client;
    const ops = () => nodeOps(client());
    const idleRss = mib(rssOf(plugin.child.pid!));

    const stageTimes: number[] = [];
    const stage = async (v: AttachedVolume, i: number) => {
      const p = { v, staging: co.staging(`pv-${i}`), target: co.blockTarget(`pod-${i}`, `pv-${i}`) };
      stageTimes[i] = await timed(() => ops().stage(v, p.staging, BLOCK));
      placed[i] = p;
    };
    /** NodeGetInfo, NodeGetVolumeStats and NodePublish with the volumes staged so far. */
    const measure = async (publishOf: Placed[]) => {
      const info: number[] = [];
      for (let i = 0; i < CALLS; i++) info.push(await timed(() => client().Node.NodeGetInfo({})));
      const publish: number[] = [];
      for (const p of publishOf) publish.push(await timed(() => ops().publish(p.v, p.staging, p.target, BLOCK)));
      const stats: number[] = [];
      for (let i = 0; i < CALLS; i++) {
        const p = publishOf[i % publishOf.length]!;
        stats.push(await timed(() => ops().stats(p.v, p.target, p.staging)));
      }
      return { nodeGetInfo: spread(info), nodePublish: spread(publish), nodeGetVolumeStats: spread(stats) };
    };

    // a few volumes staged; half of them published and measured
    await inBatches(made.slice(0, BASE), stage);
    const few = await measure(placed.slice(0, BASE / 2));
    const fewRss = mib(rssOf(plugin.child.pid!));
    // then all of them; the other half of the first few published and measured, so both sets are alike
    await inBatches(made.slice(BASE), (v, i) => stage(v, BASE + i));
    const all = await measure(placed.slice(BASE / 2, BASE));
    const allRss = mib(rssOf(plugin.child.pid!));
    const firstStages = spread(stageTimes.slice(0, BASE));
    const lastStages = spread(stageTimes.slice(-BASE));

    // kill -9 and start again over every record: how long to ready, and NodeGetInfo answered meanwhile
    plugin.child.kill('SIGKILL');
    await new Promise((r) => plugin!.child.once('exit', r));
    plugin.client.close();
    const t0 = performance.now();
    plugin = await startBundle('node', dirs.base, { nodeId: NODE, waitReady: false });
    const duringStart: number[] = [];
    let readyMs = NaN;
    for (;;) {
      if (plugin.child.exitCode !== null) throw new Error(`the restarted plugin exited with ${plugin.child.exitCode}`);
      if (performance.now() - t0 > 120_000) throw new Error('the restarted plugin was not ready within 120 s');
      const t = performance.now();
      const answered = await client()
        .Node.NodeGetInfo({}, { deadlineMs: 10_000 })
        .then(
          () => true,
          () => false,
        );
      if (answered) duringStart.push(performance.now() - t);
      if (await probed(client())().catch(() => false)) {
        readyMs = performance.now() - t0;
        break;
      }
      await sleep(5);
    }
    const afterRestart = await measure(placed.slice(0, 5));
    const restartRss = mib(rssOf(plugin.child.pid!));

    const growth = (a: { p50: number }, b: { p50: number }) => round(b.p50 / a.p50, 2);
    const result = {
      volumes: VOLUMES,
      base: BASE,
      withFew: few,
      withAll: all,
      afterRestart,
      growthP50: {
        nodeGetInfo: growth(few.nodeGetInfo, all.nodeGetInfo),
        nodePublish: growth(few.nodePublish, all.nodePublish),
        nodeGetVolumeStats: growth(few.nodeGetVolumeStats, all.nodeGetVolumeStats),
        nodeStage: growth(firstStages, lastStages),
        linearWouldBe: round(VOLUMES / BASE, 1),
      },
      pluginRssMiB: { idle: idleRss, withFew: fewRss, withAll: allRss, afterRestart: restartRss },
      stageMs: { first: firstStages, last: lastStages },
      restart: {
        readyMs: round(readyMs, 0),
        nodeGetInfoAnsweredMeanwhile: duringStart.length,
        nodeGetInfoMaxMsMeanwhile: ms(Math.max(0, ...duringStart)),
      },
    };
    const row = (name: string, key: 'nodeGetInfo' | 'nodePublish' | 'nodeGetVolumeStats') =>
      [
        `${name} p50 / p99, ${BASE} → ${VOLUMES} staged (ms)`,
        `${few[key].p50} / ${few[key].p99} → ${all[key].p50} / ${all[key].p99}`,
      ] as [string, string];
    report('node-scale', result, [
      row('NodeGetInfo', 'nodeGetInfo'),
      row('NodeGetVolumeStats', 'nodeGetVolumeStats'),
      row('NodePublishVolume (block)', 'nodePublish'),
      [`NodeStageVolume (block) p50, first ${BASE} → last ${BASE} (ms)`, `${firstStages.p50} → ${lastStages.p50}`],
      [
        'p50 growth, info / stats / publish / stage',
        `${result.growthP50.nodeGetInfo} / ${result.growthP50.nodeGetVolumeStats} / ${result.growthP50.nodePublish} / ${result.growthP50.nodeStage}`,
        `linear would be ${result.growthP50.linearWouldBe}`,
      ],
      [
        `plugin RSS idle / ${BASE} / ${VOLUMES} / restarted (MiB)`,
        `${idleRss} / ${fewRss} / ${allRss} / ${restartRss}`,
      ],
      [`restart with ${VOLUMES} records: to ready (ms)`, result.restart.readyMs],
      [
        '  NodeGetInfo meanwhile: answered, slowest (ms)',
        `${duringStart.length}, ${result.restart.nodeGetInfoMaxMsMeanwhile}`,
      ],
    ]);

    // everything down again: unpublish, unstage, then nothing may be left
    await inBatches(placed, async (p) => {
      await ops().unpublish(p.v, p.target);
      await ops().unstage(p.v, p.staging);
    });
    const leftovers = [...co.release(), ...nodeLeaks(dirs)];
    if (leftovers.length) process.stderr.write(`left behind: ${leftovers.join('; ')}\n`);
  } finally {
    await plugin?.stop();
    forceCleanup(dirs.base);
    await volumes.cleanup();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`node-scale benchmark failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
