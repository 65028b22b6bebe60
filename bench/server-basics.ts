// The driver's footprint and its RPC overhead, as the image runs it (the bundle, package.json's V8
// flags, metrics and healthz on, as deploy/kubernetes sets them), in one run:
//   1. start-up to the first ready Probe;
//   2. idle RSS and V8 heap by mode (node, controller, all);
//   3. where a node plugin's memory goes: Node alone, then one library after the other, each layer
//      bundled like the driver and measured idle in a fresh process;
//   4. node mode: RSS after 10,000 NodeGetCapabilities and after 100 stage/unstage cycles of a real
//      volume (no growth = no leak), and NodeGetCapabilities p50/p99 against a bare grpc-js server
//      answering the same RPC in the same run (whose own RSS is the floor of any grpc-js driver);
//   5. the same idle and loaded RSS and latency with Node's default flags, so what the flags buy is seen.
// Prints one JSON document on stdout and a table on stderr.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { NODE_FLAGS, PACKAGE_ROOT } from '../src/package-info.js';
import { csiClient } from '../src/client/csi-client.js';
import {
  type BundleDriver as Driver,
  FAST_RECONNECT,
  probed,
  rssOf,
  startBundle,
  until,
} from '../harness/bundle-driver.js';
import { TestVolumes } from '../harness/cinder-volumes.js';
import { scratchDir } from '../harness/local-stack.js';
import { nodeOps } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../harness/node-leaks.js';
import { percentile, report, round } from './report.js';

const STARTS = Number(process.env.BENCH_STARTS ?? 10);
const CALLS = Number(process.env.BENCH_CALLS ?? 10_000);
const CYCLES = Number(process.env.BENCH_CYCLES ?? 100);
const IDLE_MS = 2000;

const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** RSS from /proc, the V8 heap from the driver's own /metrics (prom-client's nodejs_heap_size_*). */
async function footprint(d: Driver): Promise<{ rssMiB: number; heapUsedMiB: number; heapTotalMiB: number }> {
  const text = await (await fetch(`http://${d.metrics}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^stackube_csi_${name} (\\S+)`, 'm').exec(text)?.[1]);
  return {
    rssMiB: mib(rssOf(d.child.pid!)),
    heapUsedMiB: mib(value('nodejs_heap_size_used_bytes')),
    heapTotalMiB: mib(value('nodejs_heap_size_total_bytes')),
  };
}

async function startupToProbe(dir: string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const t0 = performance.now();
    const d = await startBundle('node', join(dir, `start-${i}`));
    times.push(performance.now() - t0);
    await d.stop();
  }
  return times.sort((a, b) => a - b);
}

async function latencies(call: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 500; i++) await call(); // warm up
  const out: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t = performance.now();
    await call();
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b);
}

/**
 * Layers of a node plugin, each a bundle of the ones before plus one more library, started in a
 * fresh process and measured idle: what each library costs as the bundle loads it.
 */
const LAYERS: [name: string, code: string][] = [
  ['Node 24 alone', ''],
  // also the bare server the driver's latency is compared with: the same two RPCs answered, nothing else
  [
    '+ grpc-js server, CSI proto (Identity, Node)',
    `const { Server, ServerCredentials } = await import('@grpc/grpc-js'); const { csiPackage } = await import(${JSON.stringify(join(PACKAGE_ROOT, 'src/server/proto.ts'))});
     const s = new Server(); const p = csiPackage(['Identity', 'Node']);
     s.addService(p.Identity.service, { Probe: (_c, cb) => cb(null, { ready: { value: true } }) });
     s.addService(p.Node.service, { NodeGetCapabilities: (_c, cb) => cb(null, { capabilities: [] }) });
     await new Promise((r) => s.bindAsync('unix://' + process.argv[2], ServerCredentials.createInsecure(), r));`,
  ],
  ['+ pino', `const { pino } = await import('pino'); pino({}, pino.destination({ dest: 2, sync: false })).info('x');`],
  ['+ zod', `const { z } = await import('zod'); z.object({ a: z.string().regex(/^a/) }).parse({ a: 'a' });`],
  ['+ execa', `await import('execa');`],
  [
    '+ prom-client, metrics over http',
    `const { Registry, collectDefaultMetrics } = await import('prom-client'); collectDefaultMetrics({ register: new Registry() }); const { createRequire } = await import('node:module'); createRequire(import.meta.url)('node:http').createServer().listen(0, '127.0.0.1');`,
  ],
];

/** Under the package root: the proto module finds csi.json from where its bundle is. */
const LAYERS_DIR = join(PACKAGE_ROOT, 'dist', 'bench-layers');

async function layerCosts(dir: string): Promise<{ layer: string; rssMiB: number }[]> {
  const out: { layer: string; rssMiB: number }[] = [];
  mkdirSync(LAYERS_DIR, { recursive: true });
  for (let i = 0; i < LAYERS.length; i++) {
    const entry = join(LAYERS_DIR, `layer-${i}.src.mjs`);
    writeFileSync(
      entry,
      `${LAYERS.slice(0, i + 1)
        .map(([, code]) => code)
        .join('\n')}\nsetInterval(() => {}, 1 << 30);\n`,
    );
    const bundle = join(LAYERS_DIR, `layer-${i}.mjs`);
    await build({
      entryPoints: [entry],
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node24',
      outfile: bundle,
      minifySyntax: true,
      minifyWhitespace: true,
      logLevel: 'error',
      banner: {
        js: "import{createRequire as __createRequire}from'node:module';const require=__createRequire(import.meta.url);",
      },
    });
    const child = spawn(process.execPath, [...NODE_FLAGS, bundle, join(dir, `layer-${i}.sock`)], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await sleep(1500 + IDLE_MS);
    out.push({ layer: LAYERS[i]![0], rssMiB: mib(rssOf(child.pid!)) });
    child.kill('SIGKILL');
  }
  return out;
}

/** The raw operation: the layer with grpc-js and the CSI proto alone, bundled like the driver. */
function bareServer(sock: string, flags: readonly string[]): ChildProcess {
  return spawn(process.execPath, [...flags, join(LAYERS_DIR, 'layer-1.mjs'), sock], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/**
 * Idle RSS, RSS after CALLS NodeGetCapabilities and their latency, for the driver and the bare server with these
 * flags.
 */
async function underLoad(dir: string, flags: readonly string[]) {
  const d = await startBundle('node', join(dir, `load-${flags.length}`), { flags });
  await sleep(IDLE_MS);
  const idle = await footprint(d);
  const driverLat = await latencies(() => d.client.Node.NodeGetCapabilities({}));
  const afterCalls = await footprint(d);
  const rawSock = join(dir, `raw-${flags.length}.sock`);
  const raw = bareServer(rawSock, flags);
  const rawClient = csiClient(`unix://${rawSock}`, FAST_RECONNECT);
  try {
    await until(raw, probed(rawClient));
    await sleep(IDLE_MS);
    const rawIdle = mib(rssOf(raw.pid!));
    const rawLat = await latencies(() => rawClient.Node.NodeGetCapabilities({}));
    const p = (xs: number[], q: number) => round(percentile(xs, q));
    return {
      driver: d,
      idle,
      afterCalls,
      bareServer: { idleRssMiB: rawIdle, afterCallsRssMiB: mib(rssOf(raw.pid!)) },
      nodeGetCapabilitiesMs: {
        calls: CALLS,
        driverP50: p(driverLat, 50),
        driverP99: p(driverLat, 99),
        bareP50: p(rawLat, 50),
        bareP99: p(rawLat, 99),
        p50Ratio: round(percentile(driverLat, 50) / percentile(rawLat, 50), 2),
      },
    };
  } finally {
    rawClient.close();
    raw.kill();
  }
}

/**
 * CYCLES stage + publish + unpublish + unstage of one real volume (rbd-fuse, loop, ext4) through the running plugin.
 */
async function stageCycles(d: Driver, dir: string): Promise<{ leftovers: string[]; ms: number }> {
  const volumes = TestVolumes.open('bench-cycles');
  const co = new CoPaths(join(dir, 'kubelet'));
  const ops = nodeOps(d.client);
  const c = cap.mount('ext4');
  try {
    const v = await volumes.createAttached('bench-node');
    const staging = co.staging('pv-cycles');
    const target = co.target('pod-cycles', 'pv-cycles');
    const t0 = performance.now();
    for (let i = 0; i < CYCLES; i++) {
      await ops.stage(v, staging, c);
      await ops.publish(v, staging, target, c);
      await ops.unpublish(v, target);
      await ops.unstage(v, staging);
    }
    const ms = performance.now() - t0;
    return {
      leftovers: [...co.release(), ...nodeLeaks({ stateDir: join(dir, 'state'), kubeletRoot: join(dir, 'kubelet') })],
      ms,
    };
  } finally {
    await volumes.cleanup();
  }
}

async function main() {
  const dir = scratchDir('bench-basics');
  try {
    const startup = await startupToProbe(dir);

    const byMode: Record<string, { rssMiB: number; heapUsedMiB: number; heapTotalMiB: number }> = {};
    for (const mode of ['node', 'controller', 'all']) {
      const d = await startBundle(mode, join(dir, `mode-${mode}`));
      await sleep(IDLE_MS);
      byMode[mode] = await footprint(d);
      await d.stop();
    }

    const layers = await layerCosts(dir);

    const shipped = await underLoad(dir, NODE_FLAGS);
    const cycles = await stageCycles(shipped.driver, join(dir, `load-${NODE_FLAGS.length}`));
    await sleep(IDLE_MS);
    const afterCycles = await footprint(shipped.driver);
    await shipped.driver.stop();

    const defaults = await underLoad(dir, []);
    await defaults.driver.stop();

    const growth = round(afterCycles.rssMiB / shipped.idle.rssMiB - 1, 3);
    const p = (xs: number[], q: number) => round(percentile(xs, q));
    const results = {
      node: process.version,
      nodeFlags: NODE_FLAGS,
      startupToProbeMs: { p50: p(startup, 50), max: p(startup, 100), runs: STARTS },
      idleByMode: byMode,
      nodeModeLayers: layers,
      nodeMode: {
        idle: shipped.idle,
        afterCalls: shipped.afterCalls,
        afterCycles: {
          ...afterCycles,
          cycles: CYCLES,
          cycleMs: round(cycles.ms / CYCLES, 1),
          growthOverIdle: growth,
          leftovers: cycles.leftovers,
        },
        bareGrpcServer: shipped.bareServer,
        nodeGetCapabilitiesMs: shipped.nodeGetCapabilitiesMs,
      },
      withNodeDefaults: {
        idle: defaults.idle,
        afterCalls: defaults.afterCalls,
        bareGrpcServer: defaults.bareServer,
        nodeGetCapabilitiesMs: defaults.nodeGetCapabilitiesMs,
      },
      // issue 26's: idle ≤ 70, ≤ 80 after the calls and the cycles, p50 within 1.25× of a bare grpc-js server
      goals: { nodeIdleRssMiB: 70, nodeLoadedRssMiB: 80, p50Ratio: 1.25 },
    };
    const n = results.nodeMode;
    report('server-basics', results, [
      ['startup → ready Probe p50 (ms)', results.startupToProbeMs.p50],
      ...Object.entries(byMode).map(
        ([mode, f]) =>
          [
            `idle RSS / heap used, ${mode} mode (MiB)`,
            `${f.rssMiB} / ${f.heapUsedMiB}`,
            mode === 'node' ? 'goal RSS ≤ 70' : undefined,
          ] as [string, string, string?],
      ),
      ...layers.map((l) => [`  layer: ${l.layer} (MiB)`, l.rssMiB] as [string, number]),
      [`node: RSS after ${CALLS} NodeGetCapabilities (MiB)`, n.afterCalls.rssMiB, 'goal ≤ 80'],
      [
        `node: RSS after ${CYCLES} stage/unstage cycles (MiB)`,
        n.afterCycles.rssMiB,
        `${round(growth * 100, 1)} % over idle; goal ≤ 80`,
      ],
      [
        'bare grpc-js server idle / after calls RSS (MiB)',
        `${n.bareGrpcServer.idleRssMiB} / ${n.bareGrpcServer.afterCallsRssMiB}`,
        'the floor of a grpc-js driver',
      ],
      [
        'NodeGetCapabilities p50 / p99 (ms)',
        `${n.nodeGetCapabilitiesMs.driverP50} / ${n.nodeGetCapabilitiesMs.driverP99}`,
        `bare grpc-js ${n.nodeGetCapabilitiesMs.bareP50} / ${n.nodeGetCapabilitiesMs.bareP99}`,
      ],
      ['  p50 ratio', n.nodeGetCapabilitiesMs.p50Ratio, 'goal ≤ 1.25'],
      ['Node defaults: idle / after calls RSS (MiB)', `${defaults.idle.rssMiB} / ${defaults.afterCalls.rssMiB}`],
      [
        'Node defaults: p50 / ratio',
        `${defaults.nodeGetCapabilitiesMs.driverP50} / ${defaults.nodeGetCapabilitiesMs.p50Ratio}`,
      ],
      ['leftovers after the cycles', cycles.leftovers.length, 'goal 0'],
    ]);
  } finally {
    forceCleanup(dir);
    rmSync(LAYERS_DIR, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
