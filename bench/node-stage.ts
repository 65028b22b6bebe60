// NodeStageVolume + NodePublishVolume latency against the same raw commands (rbd-fuse, losetup, mkfs,
// mount, bind) run from this process in the same run, on fresh 1 GiB Cinder volumes each time; then
// 20 volumes staged and unstaged at once. Prints one JSON line on stdout and a table on stderr.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestVolumes } from '../harness/cinder-volumes.js';
import { nodeDirs, nodeOps, startNodeDriver } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../harness/node-leaks.js';
import { rawStagePublish } from '../harness/raw-node.js';
import { percentile, report, round } from './report.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 11);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 20);
const NODE = 'bench-node';

const pct = (xs: number[], p: number) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    p,
  );
const median = (xs: number[]) => pct(xs, 50);
const ms = (n: number) => round(n, 1);

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** What a host command is for, as the breakdown names it. */
function stepOf(cmd: string, args: string[]): string {
  const verb = (names: string[]) => args.find((a) => names.includes(a));
  if (cmd === 'rbd') return `rbd ${verb(['status', 'get', 'set', 'remove']) ?? args[0]}`;
  if (cmd === 'ceph-session') return `ceph ${args[0]}`;
  return cmd;
}

/** Milliseconds per step of one stage+publish; "other" is what no host command took (rbd-fuse's start, records). */
function breakdown(steps: { step: string; ms: number }[], total: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of steps) out[s.step] = (out[s.step] ?? 0) + s.ms;
  out.other = total - steps.reduce((sum, s) => sum + s.ms, 0);
  return out;
}

async function main(): Promise<void> {
  const dirs = nodeDirs('bench-node');
  const co = new CoPaths(dirs.kubeletRoot);
  const volumes = TestVolumes.open('bench-node');
  // the host commands of the driver's stage+publish being timed, for the breakdown
  let steps: { step: string; ms: number }[] | undefined;
  const node = await startNodeDriver(
    dirs,
    { logLevel: 'info', nodeId: NODE },
    { onNodeCommand: (cmd, args, took) => steps?.push({ step: stepOf(cmd, args), ms: took }) },
  );
  const ops = nodeOps(node.csi);
  const c = cap.mount('ext4');
  try {
    // warm both paths once (page cache for the binaries, gRPC connection)
    const warm = await volumes.createAttached(NODE);
    await (await rawStagePublish(warm, dirs.base)).undo();

    const raw: number[] = [];
    const driver: number[] = [];
    const undoDriver: number[] = [];
    const breakdowns: Record<string, number>[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const [a, b] = await Promise.all([volumes.createAttached(NODE), volumes.createAttached(NODE)]);
      // alternate which goes first, so neither always meets a warmer cache
      const runRaw = async () => {
        const r = await rawStagePublish(a, dirs.base);
        raw.push(r.ms);
        await r.undo();
      };
      const runDriver = async () => {
        const staging = co.staging(`pv-${i}`);
        const target = co.target(`pod-${i}`, `pv-${i}`);
        steps = [];
        const t0 = performance.now();
        await ops.stage(b, staging, c);
        await ops.publish(b, staging, target, c);
        const took = performance.now() - t0;
        driver.push(took);
        breakdowns.push(breakdown(steps, took));
        steps = undefined;
        const t1 = performance.now();
        await ops.unpublish(b, target);
        await ops.unstage(b, staging);
        undoDriver.push(performance.now() - t1);
      };
      if (i % 2) await runRaw().then(runDriver);
      else await runDriver().then(runRaw);
      await Promise.all([volumes.remove(a.volumeId), volumes.remove(b.volumeId)]);
    }

    // CONCURRENT volumes staged (and published) at once, then unpublished and unstaged at once
    const many = await Promise.all(Array.from({ length: CONCURRENT }, () => volumes.createAttached(NODE)));
    const paths = many.map((_, i) => ({ staging: co.staging(`pv-c${i}`), target: co.target(`pod-c${i}`, `pv-c${i}`) }));
    const perStage: number[] = [];
    const t0 = performance.now();
    await Promise.all(
      many.map(async (v, i) => {
        const s = performance.now();
        await ops.stage(v, paths[i]!.staging, c);
        await ops.publish(v, paths[i]!.staging, paths[i]!.target, c);
        perStage.push(performance.now() - s);
      }),
    );
    const stageAll = performance.now() - t0;
    const records = many.map(
      (v) =>
        JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${v.volumeId}.json`), 'utf8')) as {
          mapping: { pid: number };
        },
    );
    const fuseRss = records.reduce((sum, r) => sum + rssOf(r.mapping.pid), 0);
    const pluginRss = process.memoryUsage().rss;
    const perUnstage: number[] = [];
    const t1 = performance.now();
    await Promise.all(
      many.map(async (v, i) => {
        const s = performance.now();
        await ops.unpublish(v, paths[i]!.target);
        await ops.unstage(v, paths[i]!.staging);
        perUnstage.push(performance.now() - s);
      }),
    );
    const unstageAll = performance.now() - t1;
    const leftovers = [...co.release(), ...nodeLeaks(dirs)];

    const ratio = median(driver) / median(raw);
    const stepNames = [...new Set(breakdowns.flatMap((b) => Object.keys(b)))];
    const stepMedians = Object.fromEntries(stepNames.map((k) => [k, ms(median(breakdowns.map((b) => b[k] ?? 0)))]));
    const stagePublishMs = {
      driverMedian: ms(median(driver)),
      rawMedian: ms(median(raw)),
      driver: driver.map(ms),
      raw: raw.map(ms),
      ratio: round(ratio, 2),
      overheadMs: ms(median(driver) - median(raw)),
    };
    const concurrent = {
      volumes: CONCURRENT,
      stageAndPublishAllMs: ms(stageAll),
      perVolumeMs: { p50: ms(pct(perStage, 50)), p95: ms(pct(perStage, 95)), max: ms(Math.max(...perStage)) },
      unpublishAndUnstageAllMs: ms(unstageAll),
      perVolumeUndoMs: { p50: ms(pct(perUnstage, 50)), p95: ms(pct(perUnstage, 95)), max: ms(Math.max(...perUnstage)) },
      rbdFuseRssMiB: Math.round(fuseRss / 2 ** 20),
      benchProcessRssMiB: Math.round(pluginRss / 2 ** 20),
    };
    report(
      'node-stage',
      {
        rounds: ROUNDS,
        stagePublishMs,
        stagePublishBreakdownMs: stepMedians,
        unpublishUnstageMs: { median: ms(median(undoDriver)), all: undoDriver.map(ms) },
        concurrent,
        leftovers,
      },
      [
        ['NodeStage+NodePublish, median (ms)', stagePublishMs.driverMedian],
        ['raw rbd-fuse+losetup+mkfs+mount+bind, median (ms)', stagePublishMs.rawMedian],
        ['ratio', stagePublishMs.ratio, 'goal < 1.3'],
        ['driver overhead, median difference (ms)', stagePublishMs.overheadMs],
        ...stepNames.map((k): [string, number] => [`  step: ${k}, median (ms)`, stepMedians[k]!]),
        ['NodeUnpublish+NodeUnstage, median (ms)', ms(median(undoDriver))],
        [`${CONCURRENT} volumes staged+published at once (ms)`, concurrent.stageAndPublishAllMs],
        ['  per volume p50 / p95 (ms)', `${concurrent.perVolumeMs.p50} / ${concurrent.perVolumeMs.p95}`],
        [`${CONCURRENT} volumes unpublished+unstaged at once (ms)`, concurrent.unpublishAndUnstageAllMs],
        ['  per volume p50 / p95 (ms)', `${concurrent.perVolumeUndoMs.p50} / ${concurrent.perVolumeUndoMs.p95}`],
        [`rbd-fuse RSS, ${CONCURRENT} volumes (MiB)`, concurrent.rbdFuseRssMiB],
        ['leftovers after the run', leftovers.length, 'goal 0'],
      ],
    );
  } finally {
    await node.stop();
    forceCleanup(dirs.base);
    await volumes.cleanup();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`node-stage benchmark failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
