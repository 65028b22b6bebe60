// Start-up to first successful Probe, idle RSS in node mode, and NodeGetCapabilities latency over the
// unix socket against a bare grpc-js server answering the same RPC in the same run.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../src/package-info.js';
import { csiClient, type CsiClient } from '../test/helpers/csi-client.js';
import { percentile, report, round } from './report.js';

// what the image ships: the esbuild bundle (npm run bundle)
const MAIN = join(PACKAGE_ROOT, 'dist', 'bundle', 'main.js');
const STARTS = Number(process.env.BENCH_STARTS ?? 10);
const CALLS = Number(process.env.BENCH_CALLS ?? 10_000);

/** Poll until `ready` answers true; fails when the server process dies or 20 s pass. */
async function until(child: ChildProcess, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode} before it was ready`);
    if (Date.now() > deadline) throw new Error('the server was not ready within 20 s');
    if (await ready().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 2));
  }
}
const probed = (client: CsiClient) => async () => (await client.Identity.Probe({}, { deadlineMs: 1000 })).ready?.value === true;

function startNode(dir: string) {
  const sock = join(dir, 'csi.sock');
  const t0 = performance.now();
  const child = spawn(process.execPath, [MAIN, 'serve', '--mode', 'node', '--node-id', 'bench', '--endpoint', `unix://${sock}`, '--kubelet-root', dir, '--rbd-mapper', 'fuse', '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { child, sock, t0 };
}

async function startupToProbe(): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-start-'));
    const { child, sock, t0 } = startNode(dir);
    // retry the connection every few ms, as a sidecar polling a fresh socket would; grpc-js's default
    // reconnect backoff (1 s) would otherwise dominate what is measured
    const client = csiClient(`unix://${sock}`, { 'grpc.initial_reconnect_backoff_ms': 5, 'grpc.max_reconnect_backoff_ms': 5 });
    await until(child, probed(client));
    times.push(performance.now() - t0);
    client.close();
    child.kill('SIGTERM');
    await new Promise((r) => child.on('exit', r));
    rmSync(dir, { recursive: true, force: true });
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

/** The raw operation: a bare grpc-js server in its own process answering the same RPC, nothing else. */
function bareServer(sock: string): ChildProcess {
  const code = `
    const { Server, ServerCredentials } = await import('@grpc/grpc-js');
    const { csiPackage } = await import(${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'src', 'server', 'proto.js'))});
    const server = new Server();
    server.addService(csiPackage().Node.service, { NodeGetCapabilities: (_c, cb) => cb(null, { capabilities: [] }) });
    server.bindAsync(${JSON.stringify(`unix://${sock}`)}, ServerCredentials.createInsecure(), () => {});`;
  return spawn(process.execPath, ['--input-type=module', '-e', code], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}

async function main() {
  const startup = await startupToProbe();

  const dir = mkdtempSync(join(tmpdir(), 'bench-node-'));
  const { child, sock } = startNode(dir);
  const client = csiClient(`unix://${sock}`);
  await until(child, probed(client));
  const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]) / 1024;
  await new Promise((r) => setTimeout(r, 2000)); // idle
  const idleRss = rssMiB();
  const driverLat = await latencies(() => client.Node.NodeGetCapabilities({}));
  const loadedRss = rssMiB();
  client.close();
  child.kill('SIGTERM');

  const rawSock = join(dir, 'raw.sock');
  const raw = bareServer(rawSock);
  const rawClient = csiClient(`unix://${rawSock}`, { 'grpc.initial_reconnect_backoff_ms': 5, 'grpc.max_reconnect_backoff_ms': 5 });
  let rawLat: number[];
  try {
    await until(raw, async () => !!(await rawClient.Node.NodeGetCapabilities({}, { deadlineMs: 1000 })));
    rawLat = await latencies(() => rawClient.Node.NodeGetCapabilities({}));
  } finally {
    rawClient.close();
    raw.kill();
  }
  rmSync(dir, { recursive: true, force: true });

  const p = (xs: number[], q: number) => round(percentile(xs, q));
  const results = {
    node: process.version,
    startup_to_probe_ms: { p50: p(startup, 50), max: p(startup, 100), runs: STARTS, goal_ms: 300 },
    idle_rss_mib: { node_mode: round(idleRss, 1), after_calls: round(loadedRss, 1), goal_mib: 60 },
    node_get_capabilities_ms: { calls: CALLS, driver_p50: p(driverLat, 50), driver_p99: p(driverLat, 99), bare_grpc_p50: p(rawLat, 50), bare_grpc_p99: p(rawLat, 99), p50_ratio: round(percentile(driverLat, 50) / percentile(rawLat, 50), 2) },
  };
  report('server-basics', results, [
    ['startup → ready Probe p50 (ms)', results.startup_to_probe_ms.p50, 'goal < 300'],
    ['idle RSS, node mode (MiB)', results.idle_rss_mib.node_mode, 'goal < 60'],
    ['NodeGetCapabilities p50 (ms)', results.node_get_capabilities_ms.driver_p50, `bare grpc-js ${results.node_get_capabilities_ms.bare_grpc_p50}`],
    ['NodeGetCapabilities p99 (ms)', results.node_get_capabilities_ms.driver_p99, `bare grpc-js ${results.node_get_capabilities_ms.bare_grpc_p99}`],
  ]);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
