import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { NODE_FLAGS, PACKAGE_ROOT } from '../src/package-info.js';
import { csiClient, type CsiClient } from '../src/client/csi-client.js';
import { CEPH_CONF, CEPH_KEYRING, CLOUD_CONF } from './local-stack.js';

// The driver as the image runs it, in its own process: the benchmarks that measure a process (its RSS, its
// start-up, its restart) start it from here.

/** What the image ships: the esbuild bundle (npm run bundle). */
export const MAIN = join(PACKAGE_ROOT, 'dist', 'bundle', 'main.js');
/** A client that reconnects at once to a server that is starting. */
export const FAST_RECONNECT = { 'grpc.initial_reconnect_backoff_ms': 5, 'grpc.max_reconnect_backoff_ms': 5 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const rssOf = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) * 1024;

/** Poll until `ready` answers true; fails when the process dies or `withinMs` pass. */
export async function until(child: ChildProcess, ready: () => Promise<boolean>, withinMs = 20_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode} before it was ready`);
    if (Date.now() > deadline) throw new Error(`the server was not ready within ${withinMs / 1000} s`);
    if (await ready().catch(() => false)) return;
    await sleep(2);
  }
}

export const probed = (client: CsiClient) => async () =>
  (await client.Identity.Probe({}, { deadlineMs: 1000 })).ready?.value === true;

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

export interface BundleDriver {
  child: ChildProcess;
  client: CsiClient;
  metrics: string;
  stop(): Promise<void>;
}

export interface BundleOptions {
  flags?: readonly string[];
  nodeId?: string;
  /** Wait for the first ready Probe (default); false returns as soon as the process runs. */
  waitReady?: boolean;
  readyWithinMs?: number;
  /** More environment for the process (a malloc or libuv knob under test). */
  env?: Record<string, string>;
}

/** The bundle serving `mode` as the image runs it, with its dirs under `dir` (kept across restarts). */
export async function startBundle(mode: string, dir: string, o: BundleOptions = {}): Promise<BundleDriver> {
  const sock = join(dir, `${mode}.sock`);
  const metrics = `127.0.0.1:${await freePort()}`;
  mkdirSync(join(dir, 'kubelet'), { recursive: true });
  const child = spawn(process.execPath, [...(o.flags ?? NODE_FLAGS), MAIN, 'serve'], {
    env: {
      PATH: process.env.PATH,
      CSI_MODE: mode,
      CSI_ENDPOINT: `unix://${sock}`,
      NODE_ID: o.nodeId ?? 'bench-node',
      KUBELET_ROOT: join(dir, 'kubelet'),
      CSI_STATE_DIR: join(dir, 'state'),
      RBD_MAPPER: 'fuse',
      CEPH_CONF,
      CEPH_KEYRING,
      METRICS_ADDRESS: metrics,
      LOG_LEVEL: 'warn',
      ...(mode === 'node' ? {} : { CSI_CONFIG: CLOUD_CONF }),
      ...o.env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const client = csiClient(`unix://${sock}`, FAST_RECONNECT);
  if (o.waitReady ?? true) await until(child, probed(client), o.readyWithinMs);
  return {
    child,
    client,
    metrics,
    stop: async () => {
      client.close();
      child.kill('SIGTERM');
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}
